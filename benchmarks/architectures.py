"""The cost of the capture hooks on every supported architecture, against the plain forward pass.

For each architecture, a random model of realistic small size (6 layers; hidden 384 and 12
heads as MiniLM for the BERT-shaped ones, ALBERT, MPNet, DeBERTa-v3 (its relative-attention
settings) and ModernBERT (a local window of 128, every third layer global), ALBERT and ELECTRA
with 128-wide embeddings; hidden 320 and 20 heads as ESM-2 8M for ESM, rotary and absolute
positions) runs
``--inputs`` random inputs of 64-128 tokens (right-padded batches of ``--batch-size``) twice
per repeat, in the same process and on the same batches: the plain eager forward pass
(``model(**batch)`` under ``torch.inference_mode()``, eager attention as bertgeom loads every
model) and the same pass inside ``LayerCapture`` with a callback that does nothing (what the
hooks themselves cost; no measure runs: this is not ``bertgeom analyze``). The two alternate
within each repeat; the table gives the median over the repeats of inputs per second and the
ratio of the times (capture / plain).

    .venv/bin/python benchmarks/architectures.py --threads 1
    .venv/bin/python benchmarks/architectures.py --types esm albert --inputs 100 --repeats 5

``--save DIR`` instead writes each chosen model to ``DIR/<type>/`` as a model directory that
``bertgeom analyze`` loads (safetensors, a tokenizer: ESM's amino-acid ``EsmTokenizer``, a
whole-word ``BertTokenizer`` for the others) with ``inputs.txt``, ``--inputs`` texts of 64-128
tokens (random protein sequences for ESM, random words for the others), for the whole-process
comparison of ``benchmarks/analyze_workloads.py --model-dir DIR/<type>``.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from classifier import machine  # benchmarks/ is on sys.path as a script
from transformers import (
    AlbertConfig,
    AutoModel,
    BertConfig,
    BertTokenizer,
    DebertaV2Config,
    DistilBertConfig,
    ElectraConfig,
    EsmConfig,
    EsmTokenizer,
    ModernBertConfig,
    MPNetConfig,
    PretrainedConfig,
    PreTrainedModel,
    RobertaConfig,
)

from bertgeom.capture.architectures import ADAPTERS
from bertgeom.capture.hooks import CapturedLayer, LayerCapture

LAYERS, POSITIONS = 6, 514
MINILM = {
    "hidden_size": 384,
    "num_hidden_layers": LAYERS,
    "num_attention_heads": 12,
    "intermediate_size": 1536,
    "max_position_embeddings": POSITIONS,
    "vocab_size": 8000,
}
ESM2_8M = {
    **MINILM,
    "hidden_size": 320,
    "num_attention_heads": 20,
    "intermediate_size": 1280,
    "vocab_size": 33,
    "pad_token_id": 1,
    "mask_token_id": 32,
    "emb_layer_norm_before": False,
}

DEBERTA_V3 = {
    "relative_attention": True,
    "position_buckets": 256,
    "max_relative_positions": -1,
    "pos_att_type": ["p2c", "c2p"],
    "share_att_key": True,
    "norm_rel_ebd": "layer_norm",
    "position_biased_input": False,
    "type_vocab_size": 0,
}
MODERNBERT = {
    "pad_token_id": 0,
    **{name: 2 for name in ("cls_token_id", "bos_token_id")},
    **{name: 3 for name in ("sep_token_id", "eos_token_id")},
    "local_attention": 128,
    "global_attn_every_n_layers": 3,
}


def configs() -> dict[str, Callable[[], PretrainedConfig]]:
    """Each architecture (the ``model_type`` and, for ESM, its position kind) and its config."""
    return {
        "bert": lambda: BertConfig(**MINILM),
        "roberta": lambda: RobertaConfig(**MINILM, pad_token_id=1),
        "electra": lambda: ElectraConfig(**MINILM, embedding_size=128),
        "distilbert": lambda: DistilBertConfig(
            dim=384,
            n_layers=LAYERS,
            n_heads=12,
            hidden_dim=1536,
            max_position_embeddings=POSITIONS,
            vocab_size=8000,
        ),
        "esm (rotary, ESM-2)": lambda: EsmConfig(
            **ESM2_8M, position_embedding_type="rotary", token_dropout=True
        ),
        "esm (absolute, NT v1)": lambda: EsmConfig(
            **ESM2_8M, position_embedding_type="absolute", token_dropout=False
        ),
        "albert": lambda: AlbertConfig(**MINILM, embedding_size=128),
        "mpnet": lambda: MPNetConfig(**MINILM, pad_token_id=1),
        "deberta-v2 (v3 settings)": lambda: DebertaV2Config(**MINILM, **DEBERTA_V3),
        "modernbert": lambda: ModernBertConfig(**MINILM, **MODERNBERT),
    }


def build(config: PretrainedConfig) -> PreTrainedModel:
    torch.manual_seed(0)
    model: PreTrainedModel = AutoModel.from_config(config, attn_implementation="eager")
    return model.eval()


def batches(
    config: PretrainedConfig, inputs: int, batch_size: int, seed: int = 0
) -> list[dict[str, torch.Tensor]]:
    """Random token ids (avoiding the first five ids: special tokens), lengths 64..128,
    right-padded with ``pad_token_id``."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(64, 129, (inputs,), generator=generator).tolist()
    pad = int(getattr(config, "pad_token_id", 0) or 0)
    vocabulary = int(config.vocab_size)
    result = []
    for start in range(0, inputs, batch_size):
        chunk = lengths[start : start + batch_size]
        longest = max(chunk)
        ids = torch.full((len(chunk), longest), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), longest), dtype=torch.long)
        for row, length in enumerate(chunk):
            ids[row, :length] = torch.randint(5, vocabulary, (length,), generator=generator)
            mask[row, :length] = 1
        result.append({"input_ids": ids, "attention_mask": mask})
    return result


def plain(model: PreTrainedModel, data: list[dict[str, torch.Tensor]]) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in data:
            model(**batch)
    return time.perf_counter() - start


def captured(model: PreTrainedModel, data: list[dict[str, torch.Tensor]], n_heads: int) -> float:
    adapter = ADAPTERS[str(model.config.model_type)]

    def nothing(layer: CapturedLayer) -> None:
        pass

    start = time.perf_counter()
    with torch.inference_mode(), LayerCapture(model.base_model, adapter, n_heads, nothing):
        for batch in data:
            model(**batch)
    return time.perf_counter() - start


ESM_VOCABULARY = [
    *("<cls>", "<pad>", "<eos>", "<unk>"),
    *"LAGVSERTIDPKQNFYMHWCXBUZO.-",
    *("<null_1>", "<mask>"),
]
"""ESM-2's 33 tokens, in its order (pad 1, mask 32)."""
AMINO_ACIDS = "LAGVSERTIDPKQNFYMHWC"


def save(name: str, config: PretrainedConfig, directory: Path, inputs: int, seed: int = 0) -> None:
    """The random model of ``name`` with a tokenizer and ``inputs.txt`` in ``directory``."""
    directory.mkdir(parents=True)
    rng = random.Random(seed)
    lengths = [rng.randint(62, 126) for _ in range(inputs)]  # plus [CLS] and [SEP]
    if name.startswith("esm"):
        vocabulary = directory / "vocab.txt"
        vocabulary.write_text("\n".join(ESM_VOCABULARY) + "\n")
        EsmTokenizer(vocab_file=str(vocabulary)).save_pretrained(directory)
        texts = ["".join(rng.choice(AMINO_ACIDS) for _ in range(n)) for n in lengths]
    else:
        size = int(config.vocab_size)
        pad = int(getattr(config, "pad_token_id", 0) or 0)
        specials = ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        words = [f"w{index}" for index in range(size - 5)]
        vocabulary_list = [*specials, *words]
        vocabulary_list.insert(pad, "[PAD]")
        ids = {token: index for index, token in enumerate(vocabulary_list)}
        BertTokenizer(vocab=ids).save_pretrained(directory)
        texts = [" ".join(rng.choice(words) for _ in range(n)) for n in lengths]
    build(config).save_pretrained(directory)
    (directory / "inputs.txt").write_text("\n".join(texts) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--types", nargs="*", default=None, help="a prefix of the names below")
    parser.add_argument("--save", type=Path, help="write the models and inputs here instead")
    options = parser.parse_args()
    if options.threads:
        torch.set_num_threads(options.threads)
    chosen = {
        name: make
        for name, make in configs().items()
        if not options.types or any(name.startswith(kind) for kind in options.types)
    }
    if options.save is not None:
        for name, make in chosen.items():
            slug = name.split(" (")[0] + ("-absolute" if "absolute" in name else "")
            save(name, make(), options.save / slug, options.inputs)
            print(f"{name}: {options.save / slug}")
        return
    print(f"{machine()}; {torch.get_num_threads()} torch threads; load {os.getloadavg()[0]:.2f}")
    print(
        f"{options.inputs} random inputs of 64-128 tokens, batch {options.batch_size}, "
        f"median of {options.repeats} repeats (plain and capture alternating)\n"
    )
    header = "| architecture | layers x hidden x heads | plain inputs/s | capture inputs/s |"
    print(header + " capture / plain time |")
    print("|---|---|---|---|---|")
    for name, make in chosen.items():
        config = make()
        model = build(config)
        data = batches(config, options.inputs, options.batch_size)
        heads = int(getattr(config, "num_attention_heads", getattr(config, "n_heads", 0)))
        hidden = int(getattr(config, "hidden_size", getattr(config, "dim", 0)))
        plain(model, data[:1])  # warm up both paths
        captured(model, data[:1], heads)
        times: dict[str, list[float]] = {"plain": [], "capture": []}
        for _ in range(options.repeats):
            times["plain"].append(plain(model, data))
            times["capture"].append(captured(model, data, heads))
        median: dict[str, Any] = {kind: statistics.median(t) for kind, t in times.items()}
        print(
            f"| {name} | {LAYERS} x {hidden} x {heads} | {options.inputs / median['plain']:.1f} "
            f"| {options.inputs / median['capture']:.1f} "
            f"| {median['capture'] / median['plain']:.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
