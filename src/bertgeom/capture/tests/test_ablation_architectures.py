"""Head ablation on every architecture that runs it, proved against weight surgery.

Zeroing head h (``Z_h = 0``) or replacing it by its mean over the valid tokens (``Z_h = m_h``)
is the same as a copy of the model whose value projection gives every token of head h the
constant ``v_h = 0`` or ``m_h`` (its weight rows zero, its bias rows ``v_h``): each attention
row sums to one, so ``Z_h = A 1 v_h^T = v_h`` with no hook at all. ``run_ablation`` (replayed
layers, the last layer on the first token alone unless the classifier pools every position)
must give that copy's true-class log-probability for every head and every layer's whole block.

ALBERT runs one layer's weights at every depth, where surgery on the shared weights would
ablate every application. Its layer groups give the independent computation: with as many
groups as depths each depth has its own weights (ALBERT's code path, surgery per depth), and
such a model whose groups hold copies of a shared model's one group computes the same
function, so surgery at depth ``l`` of the copy is the shared model with application ``l``
alone ablated.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AutoModelForSequenceClassification, PreTrainedModel

from bertgeom.capture.ablation import run_ablation
from bertgeom.capture.input_batch import InputBatch
from bertgeom.capture.loading import LoadedModel, load_model
from bertgeom.capture.tests.surgery import head_output_means, surgery
from bertgeom.capture.tests.tiny_models import texts_for, tiny_model, tiny_tokenizer

ZERO_MEAN = ("zero", "mean")
ABLATED: dict[str, tuple[str, dict[str, Any], tuple[str, ...]]] = {
    "roberta": ("roberta", {}, ("zero", "mean")),
    "distilbert": ("distilbert", {}, ("zero", "mean")),
    "electra": ("electra", {}, ("zero", "mean")),
    "esm": ("esm", {}, ("zero", "mean")),
    "esm-absolute": ("esm-absolute", {}, ("zero", "mean")),
    "mpnet": ("mpnet", {}, ("zero", "mean")),
    "deberta-v2": ("deberta-v2", {}, ("zero", "mean")),
    # One group per depth: each depth has its own weights; inner layers: two per group.
    "albert-groups": ("albert", {"num_hidden_layers": 3, "num_hidden_groups": 3}, ZERO_MEAN),
    "albert-inner-layers": (
        "albert",
        {"num_hidden_layers": 2, "num_hidden_groups": 2, "inner_group_num": 2},
        ZERO_MEAN,
    ),
    # ModernBERT's Wqkv has no bias unless attention_bias: the mean needs one to hold m_h.
    "modernbert": ("modernbert", {"attention_bias": True}, ZERO_MEAN),
    "modernbert-mean-pooling": (
        "modernbert",
        {"attention_bias": True, "classifier_pooling": "mean"},
        ZERO_MEAN,
    ),
    "modernbert-no-bias": ("modernbert", {}, ("zero",)),
}
"""The architectures whose ablation is proved here (BERT's own test is ``test_ablation.py``):
the tiny model of the first entry with the config changes of the second, and the modes the
surgery can express (zero needs no bias)."""
CLASSES = ("x", "y", "z")
INPUTS = 12


def _classifier(architecture: str, directory: Path, **changes: Any) -> LoadedModel:
    """A random three-class classifier of ``architecture`` (its tiny config with ``changes``),
    weights drawn wide (std 0.3) so that heads matter to the call."""
    config = tiny_model(architecture).config
    for name, value in changes.items():
        setattr(config, name, value)
    config.num_labels = len(CLASSES)
    config.id2label = dict(enumerate(CLASSES))
    config.label2id = {label: index for index, label in enumerate(CLASSES)}
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config, attn_implementation="eager")
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.3)
    return _saved(model, architecture, directory)


def _saved(model: PreTrainedModel, architecture: str, directory: Path) -> LoadedModel:
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


@pytest.mark.parametrize("variant", ABLATED)
def test_every_ablation_equals_weight_surgery(variant: str, tmp_path: Path) -> None:
    architecture, changes, modes = ABLATED[variant]
    loaded = _classifier(architecture, tmp_path / "model", **changes)
    assert len({id(layer) for layer in loaded.layers()}) == loaded.n_layers  # no sharing
    texts = texts_for(architecture, INPUTS, seed=4)
    table = run_ablation(loaded, lambda: _batches(loaded, texts, 5), modes)
    effects = _compare_with_surgery(loaded, loaded, texts, table.accumulator.result(), modes)
    assert np.ptp(effects) > 1e-3  # the ablations change the calls: the test can fail


@pytest.mark.parametrize(("depths", "inner"), [(3, 1), (2, 2)])
def test_shared_albert_ablates_the_ablated_application_alone(
    depths: int, inner: int, tmp_path: Path
) -> None:
    """ALBERT as released (one group at every depth; here also with two inner layers, run
    alternately): ``run_ablation`` at depth l equals surgery at depth l of the unshared copy
    (a group per depth, each a copy of the shared one: the same logits), i.e. application l
    ablated and the others not. Surgery on the shared weights, which ablates every
    application, gives other numbers: the comparison can tell the two apart."""
    shared = _classifier(
        "albert", tmp_path / "shared", num_hidden_layers=depths, inner_group_num=inner
    )
    assert len({id(layer) for layer in shared.layers()}) == inner < shared.n_layers
    unshared = _unshared_copy(shared, tmp_path / "unshared")
    assert unshared.n_layers == shared.n_layers
    assert len({id(layer) for layer in unshared.layers()}) == unshared.n_layers
    texts = texts_for("albert", INPUTS, seed=4)
    batch = next(_batches(shared, texts, INPUTS))
    with torch.inference_mode():
        torch.testing.assert_close(
            shared.model(**batch.encoding).logits, unshared.model(**batch.encoding).logits
        )
    table = run_ablation(shared, lambda: _batches(shared, texts, 5), ZERO_MEAN)
    result = table.accumulator.result()
    effects = _compare_with_surgery(shared, unshared, texts, result, ZERO_MEAN)
    assert np.ptp(effects) > 1e-3
    every_application = [
        _surgery_log_probability(shared, layer, [head], torch.zeros(_width(shared)), batch)
        for layer in range(shared.n_layers)
        for head in range(shared.n_heads)
    ]
    per_application = [
        _table_value(result, layer, head, "zero")
        for layer in range(shared.n_layers)
        for head in range(shared.n_heads)
    ]
    assert max(abs(a - b) for a, b in zip(every_application, per_application, strict=True)) > 1e-3


def _compare_with_surgery(
    ablated: LoadedModel,
    operated: LoadedModel,
    texts: list[str],
    result: pd.DataFrame,
    modes: tuple[str, ...],
) -> list[float]:
    """Assert that ``result`` (``ablated``'s table) gives, for every depth, head or whole block
    and mode, the true-class log-probability of surgery on ``operated`` (the same function as
    ``ablated``, depth by depth), with the means of ``ablated``; the table's values."""
    batch = next(_batches(ablated, texts, INPUTS))
    means = head_output_means(ablated, batch)
    effects = []
    for layer in range(ablated.n_layers):
        for head in (*range(ablated.n_heads), -1):
            heads = list(range(ablated.n_heads)) if head == -1 else [head]
            for mode in modes:
                bias = torch.zeros(_width(ablated)) if mode == "zero" else means[layer]
                expected = _surgery_log_probability(operated, layer, heads, bias, batch)
                got = _table_value(result, layer, head, mode)
                assert got == pytest.approx(expected, abs=1e-4), (layer, head, mode)
                effects.append(got)
    return effects


def _surgery_log_probability(
    loaded: LoadedModel, layer: int, heads: list[int], bias: torch.Tensor, batch: InputBatch
) -> float:
    """Mean true-class log-probability over ``batch`` of :func:`surgery`'s copy."""
    true = torch.tensor([CLASSES.index(label) for label in batch.labels or ()])
    with torch.inference_mode():
        logits = surgery(loaded, layer, heads, bias)(**batch.encoding).logits
    log_p = torch.log_softmax(logits.double(), -1)[torch.arange(len(true)), true]
    return float(log_p.mean())


def _table_value(result: pd.DataFrame, layer: int, head: int, mode: str) -> float:
    rows = result.query(
        "layer == @layer and head == @head and mode == @mode and `class` == 'all' "
        "and metric == 'true_log_probability'"
    )
    return float(rows["value"].item())


def _width(loaded: LoadedModel) -> int:
    return loaded.n_heads * loaded.head_size


def _unshared_copy(shared: LoadedModel, directory: Path) -> LoadedModel:
    """``shared`` (an ALBERT classifier of one layer group) with a group per depth, each a
    copy of the shared group's weights."""
    config = copy.deepcopy(shared.model.config)
    config.num_hidden_groups = config.num_hidden_layers
    prefix = "albert.encoder.albert_layer_groups.0."
    weights: dict[str, torch.Tensor] = {}
    for name, value in shared.model.state_dict().items():
        if not name.startswith(prefix):
            weights[name] = value
            continue
        for group in range(config.num_hidden_groups):
            weights[f"albert.encoder.albert_layer_groups.{group}.{name[len(prefix) :]}"] = value
    model = type(shared.model)(config)
    model.load_state_dict(weights, strict=True)
    return _saved(model.eval(), "albert", directory)
