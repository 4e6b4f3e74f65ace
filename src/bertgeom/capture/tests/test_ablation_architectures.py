"""Head ablation on every architecture that runs it, proved against weight surgery.

Zeroing head h (``Z_h = 0``) or replacing it by its mean over the valid tokens (``Z_h = m_h``)
is the same as a copy of the model whose value projection gives every token of head h the
constant ``v_h = 0`` or ``m_h`` (its weight rows zero, its bias rows ``v_h``): each attention
row sums to one, so ``Z_h = A 1 v_h^T = v_h`` with no hook at all. ``run_ablation`` (replayed
layers, the last layer on the first token alone) must give that copy's true-class
log-probability for every head and every layer's whole block.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification

from bertgeom.capture.ablation import run_ablation
from bertgeom.capture.input_batch import InputBatch
from bertgeom.capture.loading import LoadedModel, load_model
from bertgeom.capture.tests.surgery import head_output_means, surgery
from bertgeom.capture.tests.tiny_models import texts_for, tiny_model, tiny_tokenizer

ABLATED = ("roberta", "distilbert", "electra", "esm", "esm-absolute", "mpnet", "deberta-v2")
"""The architectures whose ablation is proved here (BERT's own test is ``test_ablation.py``);
ALBERT and ModernBERT refuse ``--ablation``."""
CLASSES = ("x", "y", "z")
INPUTS = 12


def _classifier(architecture: str, directory: Path) -> LoadedModel:
    """A random three-class classifier of ``architecture``, weights drawn wide (std 0.3) so
    that heads matter to the call."""
    config = tiny_model(architecture).config
    config.num_labels = len(CLASSES)
    config.id2label = dict(enumerate(CLASSES))
    config.label2id = {label: index for index, label in enumerate(CLASSES)}
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config, attn_implementation="eager")
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.3)
    model.save_pretrained(directory)
    tiny_tokenizer(architecture, directory).save_pretrained(directory)
    return load_model(directory)


def _batches(loaded: LoadedModel, texts: list[str], size: int) -> Iterator[InputBatch]:
    assert loaded.tokenizer is not None
    labels = [CLASSES[index % len(CLASSES)] for index in range(len(texts))]
    for start in range(0, len(texts), size):
        chunk = texts[start : start + size]
        encoding = loaded.tokenizer(
            chunk, padding=True, return_tensors="pt", return_token_type_ids=False
        )
        yield InputBatch(
            np.arange(start, start + len(chunk)),
            tuple(f"input-{i}" for i in range(start, start + len(chunk))),
            tuple(labels[start : start + size]),
            {"input_ids": encoding["input_ids"], "attention_mask": encoding["attention_mask"]},
        )


@pytest.mark.parametrize("architecture", ABLATED)
def test_every_ablation_equals_weight_surgery(architecture: str, tmp_path: Path) -> None:
    loaded = _classifier(architecture, tmp_path / "model")
    texts = texts_for(architecture, INPUTS, seed=4)
    batch = next(_batches(loaded, texts, INPUTS))
    table = run_ablation(loaded, lambda: _batches(loaded, texts, 5), ("zero", "mean"))
    result = table.accumulator.result()
    means = head_output_means(loaded, batch)
    true = torch.tensor([index % len(CLASSES) for index in range(INPUTS)])
    width = loaded.n_heads * loaded.head_size
    effects = []
    for layer in range(loaded.n_layers):
        for head in (*range(loaded.n_heads), -1):
            heads = list(range(loaded.n_heads)) if head == -1 else [head]
            for mode, bias in (("zero", torch.zeros(width)), ("mean", means[layer])):
                with torch.inference_mode():
                    logits = surgery(loaded, layer, heads, bias)(**batch.encoding).logits
                log_p = torch.log_softmax(logits.double(), -1)[torch.arange(INPUTS), true]
                rows = result.query(
                    "layer == @layer and head == @head and mode == @mode and `class` == 'all' "
                    "and metric == 'true_log_probability'"
                )
                got = float(rows["value"].item())
                assert got == pytest.approx(float(log_p.mean()), abs=1e-4), (layer, head, mode)
                effects.append(got)
    assert np.ptp(effects) > 1e-3  # the ablations change the calls: the test can fail
