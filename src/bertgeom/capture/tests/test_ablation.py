"""Ablation runs: a planted head that carries the decision, and every edit checked against the
same ablation done by weight surgery (an independent computation)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

from bertgeom.capture.ablation import run_ablation
from bertgeom.capture.ablation_plan import ablation_plan
from bertgeom.capture.head_editor import HeadEditor
from bertgeom.capture.input_batch import InputBatch
from bertgeom.capture.loading import LoadedModel, load_model
from bertgeom.capture.tests.surgery import head_output_means, surgery
from bertgeom.capture.tests.tiny_models import VOCABULARY, sentences, tokenizer
from bertgeom.errors import InputError
from bertgeom.measures.ablation import Ablation

PLANTED_VOCABULARY = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b", "c"]


def _planted_classifier(directory: Path) -> Path:
    """One layer, two heads, uniform attention. Head 1's value reads embedding dim 1 (+1 for
    'a', -1 for 'b'), W_O writes it to dim 2, and the classifier reads dim 2 of [CLS] through
    the pooler: the class ('A' has a-tokens, 'B' b-tokens) reaches [CLS] only through head 1.
    Head 0 and the feed-forward block write nothing."""
    config = BertConfig(
        vocab_size=len(PLANTED_VOCABULARY),
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=4,
        max_position_embeddings=16,
        id2label={0: "A", 1: "B"},
        label2id={"A": 0, "B": 1},
    )
    model = BertForSequenceClassification(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            parameter.fill_(1.0 if "LayerNorm.weight" in name else 0.0)
        words = model.bert.embeddings.word_embeddings.weight
        words[:, 0] = 1.0
        words[5] = torch.tensor([0, 1.0, 0, 0, 0, 0, 0, 0])
        words[6] = torch.tensor([0, -1.0, 0, 0, 0, 0, 0, 0])
        layer = model.bert.encoder.layer[0]
        layer.attention.self.value.weight[4, 1] = 1.0
        layer.attention.output.dense.weight[2, 4] = 10.0
        model.bert.pooler.dense.weight[0, 2] = 1.0
        model.classifier.weight[0, 0], model.classifier.weight[1, 0] = 5.0, -5.0
    model.save_pretrained(directory)
    BertTokenizer(vocab={t: i for i, t in enumerate(PLANTED_VOCABULARY)}).save_pretrained(directory)
    return directory


def _batches(
    loaded: LoadedModel, texts: list[str], labels: list[str], size: int
) -> Iterator[InputBatch]:
    assert loaded.tokenizer is not None
    for start in range(0, len(texts), size):
        chunk = texts[start : start + size]
        encoding = loaded.tokenizer(chunk, padding=True, return_tensors="pt")
        yield InputBatch(
            np.arange(start, start + len(chunk)),
            tuple(f"input-{i}" for i in range(start, start + len(chunk))),
            tuple(labels[start : start + size]),
            {"input_ids": encoding["input_ids"], "attention_mask": encoding["attention_mask"]},
        )


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return load_model(_planted_classifier(tmp_path_factory.mktemp("planted") / "model"))


PLANTED_TEXTS = ["a a a", "a a", "a c a a", "c a", "b b b", "b b", "b c b b", "c b"]
PLANTED_LABELS = ["A"] * 4 + ["B"] * 4


def _value(table: pd.DataFrame, layer: int, head: int, mode: str, metric: str) -> float:
    rows = table.query(
        "layer == @layer and head == @head and mode == @mode and `class` == 'all' "
        "and metric == @metric"
    )
    return float(rows["value"].item())


def test_the_planted_head_alone_carries_the_decision(planted: LoadedModel) -> None:
    run = run_ablation(
        planted,
        lambda: _batches(planted, PLANTED_TEXTS, PLANTED_LABELS, 3),
        ("zero", "mean"),
    )
    table = run.accumulator.result()
    assert run.labelled == 8 and run.passes == 2
    assert _value(table, -1, -1, "none", "accuracy") == 1.0
    for mode in ("zero", "mean"):
        assert _value(table, 0, 1, mode, "accuracy") == 0.5  # every input called 'B'
        assert _value(table, 0, -1, mode, "accuracy") == 0.5  # the block holds head 1
        assert _value(table, 0, 0, mode, "accuracy") == 1.0
        assert _value(table, 0, 0, mode, "true_log_probability") == pytest.approx(
            _value(table, -1, -1, "none", "true_log_probability")
        )
        assert _value(table, 0, 1, mode, "macro_f1") == pytest.approx(1 / 3)


def test_masking_the_content_keys_of_the_planted_head_removes_the_class(
    planted: LoadedModel,
) -> None:
    batch = next(_batches(planted, PLANTED_TEXTS, PLANTED_LABELS, 8))
    ids = batch.encoding["input_ids"]
    special = (ids == 2) | (ids == 3)
    with torch.inference_mode(), HeadEditor(planted, keep_attention=True) as editor:
        editor.recording = True
        planted.model(**batch.encoding)
        editor.recording = False
        editor.ablation, editor.keep = Ablation(0, 1, "mask_mutation_keys"), special
        only_special = planted.model(**batch.encoding).logits
        editor.ablation = Ablation(0, -1, "mask_mutation_keys")  # every head of the layer
        block_only_special = planted.model(**batch.encoding).logits
        editor.keep = ids != 0
        everything = planted.model(**batch.encoding).logits
    assert (only_special.argmax(1) == 1).all()
    torch.testing.assert_close(block_only_special, only_special)  # head 0 writes nothing
    assert everything.argmax(1).tolist() == [0] * 4 + [1] * 4
    editor.ablation, editor.keep = Ablation(0, 1, "mask_mutation_keys"), special
    with torch.inference_mode():  # the editor's hooks went with the block: no edit now
        after = planted.model(**batch.encoding).logits
    assert after.argmax(1).tolist() == [0] * 4 + [1] * 4


@pytest.fixture(scope="module")
def random_classifier(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(VOCABULARY),
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=40,
        id2label={0: "x", 1: "y", 2: "z"},
        label2id={"x": 0, "y": 1, "z": 2},
    )
    model = BertForSequenceClassification(config)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.3)
    directory = tmp_path_factory.mktemp("random-classifier") / "model"
    model.save_pretrained(directory)
    tokenizer().save_pretrained(directory)
    return load_model(directory)


def test_every_ablation_equals_weight_surgery(random_classifier: LoadedModel) -> None:
    """Through ``run_ablation`` (replayed layers, the last layer on [CLS] alone, sdpa in the
    ablated passes): the mean true-class log-probability of every head and block ablation
    equals that of a surgically edited copy."""
    loaded = random_classifier
    texts, labels = sentences(12, seed=4), ["x", "y", "z"] * 4
    batch = next(_batches(loaded, texts, labels, 12))
    table = run_ablation(
        loaded, lambda: _batches(loaded, texts, labels, 5), ("zero", "mean")
    ).accumulator.result()
    means = head_output_means(loaded, batch)
    true = torch.tensor([("x", "y", "z").index(label) for label in labels])
    for layer in range(3):
        for head in (*range(4), -1):
            heads = list(range(4)) if head == -1 else [head]
            for mode, bias in (("zero", torch.zeros(32)), ("mean", means[layer])):
                with torch.inference_mode():
                    logits = surgery(loaded, layer, heads, bias)(**batch.encoding).logits
                log_p = torch.log_softmax(logits.double(), -1)[torch.arange(12), true].mean()
                got = _value(table, layer, head, mode, "true_log_probability")
                assert got == pytest.approx(float(log_p), abs=1e-4), (layer, head, mode)


def test_batch_size_does_not_change_the_result(random_classifier: LoadedModel) -> None:
    loaded = random_classifier
    texts = sentences(10, seed=5)
    labels = ["x", "y", "z", "x", "w", "y", "z", "x", "y", "z"]  # 'w': not a class, skipped
    tables = [
        run_ablation(
            loaded, lambda size=size: _batches(loaded, texts, labels, size), ("zero", "mean")
        )
        for size in (10, 3)
    ]
    assert tables[0].labelled == 9 and tables[0].unlabelled == 1
    pd.testing.assert_frame_equal(
        tables[0].accumulator.result(), tables[1].accumulator.result(), rtol=1e-5, atol=1e-6
    )


def test_plan_and_refusals(random_classifier: LoadedModel, loaded_models: dict) -> None:
    plan = ablation_plan(2, 3, ("zero", "keys"), spike=True)
    assert len(plan) == 1 + 2 * (3 + 1) + 2 * (3 + 1) * 2
    assert len(ablation_plan(2, 3, ("keys",), spike=False)) == 1
    with pytest.raises(InputError, match="unknown"):
        ablation_plan(2, 3, ("shuffle",), spike=False)
    with pytest.raises(InputError, match="classification head"):
        run_ablation(loaded_models["bert"], lambda: iter(()))
