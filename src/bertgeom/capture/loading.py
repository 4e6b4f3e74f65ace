"""Loading any supported BERT-family model directory for analysis, with eager attention.

A model directory is a Hugging Face directory on local disk: ``config.json``, safetensors
weights, usually tokenizer files; it may be named by a hub id in the local cache
(:mod:`bertgeom.model.resolve`). Remote code and pickled weights are never loaded, and a model
loads exactly or is refused (:mod:`bertgeom.model.checkpoint`). A model with a
sequence-classification head (the bertgeom classifier, a fine-tuned BERT) is loaded with its
head so its predictions come out of the same forward pass; the analysis reads its encoder. A
model without one is loaded as the bare encoder, without its pooler: the weights of heads it
does not have (a masked-LM head, the pooler) are not loaded, and the manifest lists them, as it
lists the weights of modules the analysis never runs that the files lack (ESM's contact head).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from bertgeom.capture.adapters import (
    ArchitectureAdapter,
    attention_weights,
    encoder_layers,
    projection_weights,
)
from bertgeom.capture.architectures import ADAPTERS
from bertgeom.capture.hooks import CapturedLayer, LayerCapture
from bertgeom.errors import ModelError, first_line
from bertgeom.measures.subspace_weights import AttentionWeights
from bertgeom.model.checkpoint import (
    file_sha256,
    load_tokenizer,
    load_weights,
    missing_tokenizer,
    refuse_shipped_code,
    weights_files,
)
from bertgeom.model.resolve import ModelName, ResolvedModel, resolve_model
from bertgeom.model.storage import quiet_transformers, read_config

ATTENTION_IMPLEMENTATION = "eager"
"""The attention kernel analysis needs: the only one that returns the probabilities."""

_UNLIMITED = 1_000_000
"""Tokenizers without a maximum report about 1e30; anything above this means 'none'."""


@dataclass(frozen=True)
class KmerSettings:
    """How a bertgeom classifier tokenises spikes: overlapping k-mers of length k every stride."""

    k: int
    stride: int


@dataclass
class LoadedModel:
    """A model ready for capture: ``model`` (eval mode, with its head if it has one) and
    ``encoder`` (``model.base_model``, the module the hooks are placed on)."""

    directory: Path
    model: PreTrainedModel
    encoder: nn.Module
    config: PretrainedConfig
    adapter: ArchitectureAdapter
    tokenizer: PreTrainedTokenizerBase | None
    n_layers: int
    n_heads: int
    hidden_size: int
    max_tokens: int
    class_names: tuple[str, ...] | None = None
    kmers: KmerSettings | None = None
    raw_config: dict[str, Any] = field(default_factory=dict)
    initial_weights_seed: int | None = None
    """Set for the untrained control: the seed of its initial weights."""
    source: ResolvedModel | None = None
    """How the model was named: the directory, or the hub id, revision and commit."""
    weights_files: tuple[Path, ...] = ()
    ignored_weights: tuple[str, ...] = ()
    """Weights of the files that belong to heads the model was loaded without (not loaded)."""
    absent_weights: tuple[str, ...] = ()
    """Weights of modules the analysis never runs (``ArchitectureAdapter.never_run``: ESM's
    contact head) that the files lack: transformers' initial values, which nothing reads."""

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.n_heads

    def attention_weights(self) -> list[AttentionWeights]:
        """q/k/v/o weights of every layer, for the weight-based subspace measures."""
        return attention_weights(self.encoder, self.adapter, self.n_heads)

    def query_key_weights(self) -> list[tuple[Tensor, Tensor | None, Tensor, Tensor | None]]:
        """``(W_q, b_q, W_k, b_k)`` of every layer, detached (biases None where absent; the
        query and key blocks of a fused ``Wqkv``)."""
        weights: list[tuple[Tensor, Tensor | None, Tensor, Tensor | None]] = []
        for layer in self.layers():
            query = projection_weights(layer, self.adapter, "query")
            key = projection_weights(layer, self.adapter, "key")
            weights.append((*query, *key))
        return weights

    def layers(self) -> list[nn.Module]:
        return encoder_layers(self.encoder, self.adapter)

    def require_tokenizer(self) -> PreTrainedTokenizerBase:
        if self.tokenizer is None:
            raise ModelError(missing_tokenizer(self.directory))
        return self.tokenizer

    def summary(self) -> dict[str, Any]:
        """What the manifest records about the model: what it is, where it came from (path;
        hub id, revision and commit; the SHA-256 of its weights files), the weights of the
        files that were ignored (heads it was loaded without) and the weights of modules never
        run that the files lack, and where the architecture's numbers depart from DESIGN's
        BERT (``caveats``, ``docs/models.md``)."""
        source = self.source or ResolvedModel(self.directory)
        return {
            **source.to_json(),
            "weights_sha256": {path.name: file_sha256(path) for path in self.weights_files},
            "ignored_weights": list(self.ignored_weights),
            "absent_weights": list(self.absent_weights),
            "tokenizer": None if self.tokenizer is None else type(self.tokenizer).__name__,
            "model_type": self.config.model_type,
            "architectures": list(getattr(self.config, "architectures", None) or []),
            "loaded_as": type(self.model).__name__,
            "name_or_path": self.raw_config.get("_name_or_path"),
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "hidden_size": self.hidden_size,
            "head_size": self.head_size,
            "max_tokens": self.max_tokens,
            "vocab_size": getattr(self.config, "vocab_size", None),
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "classes": list(self.class_names) if self.class_names else None,
            "bertgeom": self.raw_config.get("bertgeom"),
            "attention_implementation": self.config._attn_implementation,
            "caveats": list(self.adapter.caveats),
            "weights": "trained"
            if self.initial_weights_seed is None
            else f"initial (untrained), seed {self.initial_weights_seed}",
        }


def _has_classification_head(config: PretrainedConfig) -> bool:
    architectures = getattr(config, "architectures", None) or []
    return any(str(name).endswith("ForSequenceClassification") for name in architectures)


def _max_tokens(
    config: PretrainedConfig,
    adapter: ArchitectureAdapter,
    tokenizer: PreTrainedTokenizerBase | None,
) -> int:
    """The longest input the model takes (positions, and the tokenizer's own maximum)."""
    positions = int(getattr(config, "max_position_embeddings", 512))
    if adapter.position_offset_from_pad:
        padding = adapter.padding_idx
        if padding is None:
            padding = int(getattr(config, "pad_token_id", 1) or 0)
        positions -= padding + 1
    if tokenizer is not None and 0 < int(tokenizer.model_max_length) < _UNLIMITED:
        positions = min(positions, int(tokenizer.model_max_length))
    return positions


def _kmer_settings(raw: dict[str, Any]) -> KmerSettings | None:
    extra = raw.get("bertgeom")
    if not isinstance(extra, dict) or "k" not in extra or "stride" not in extra:
        return None
    return KmerSettings(k=int(extra["k"]), stride=int(extra["stride"]))


def load_model(model: ModelName, *, initial_weights_seed: int | None = None) -> LoadedModel:
    """Load a supported model, named by its directory or a cached hub id, with eager attention,
    exactly (:mod:`bertgeom.model.checkpoint`), and check that it yields the attention
    probabilities; every problem is one :class:`ModelError` line. A directory without tokenizer
    files loads with ``tokenizer`` None, which :meth:`LoadedModel.require_tokenizer` refuses.

    ``initial_weights_seed``: the untrained control. The same architecture (config, tokenizer,
    classes) with the weights Hugging Face initialises, drawn after ``torch.manual_seed(seed)``
    (the global generator is restored afterwards), instead of the trained ones; the directory
    is checked as for the trained model except that its weights are not read beyond their
    headers.
    """
    source = resolve_model(model)
    directory = source.directory
    raw = read_config(directory)
    refuse_shipped_code(directory, raw)
    model_type = raw.get("model_type")
    if model_type not in ADAPTERS:
        raise ModelError(
            f"{directory}: model type {model_type!r} is not supported; bertgeom analyses "
            f"{', '.join(sorted(ADAPTERS))} models (MiniLM checkpoints are 'bert', ESM-2 and "
            "Nucleotide Transformer v1 'esm', DeBERTa-v3 'deberta-v2')"
        )
    files = weights_files(directory, raw)
    adapter = ADAPTERS[str(model_type)]
    options: dict[str, Any] = {"local_files_only": True, "trust_remote_code": False}
    ignored: tuple[str, ...] = ()
    absent: tuple[str, ...] = ()
    with quiet_transformers():
        try:
            config = AutoConfig.from_pretrained(directory, **options)
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ModelError(f"{directory}: unusable config.json ({first_line(error)})") from error
        refusal = adapter.refuse(config) if adapter.refuse is not None else None
        if refusal is not None:
            raise ModelError(f"{directory}: {refusal}")
        head = _has_classification_head(config)
        loader = AutoModelForSequenceClassification if head else AutoModel
        architecture: dict[str, Any] = (
            {"add_pooling_layer": False} if adapter.optional_pooler and not head else {}
        )
        if initial_weights_seed is None:
            loaded_model, ignored, absent = load_weights(
                loader,
                directory,
                files,
                adapter.heads,
                adapter.never_run,
                config=config,
                attn_implementation=ATTENTION_IMPLEMENTATION,
                trust_remote_code=False,
                **architecture,
            )
        else:
            try:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(initial_weights_seed)
                    loaded_model = loader.from_config(
                        config, attn_implementation=ATTENTION_IMPLEMENTATION, **architecture
                    )
            except (ValueError, KeyError, RuntimeError, TypeError) as error:
                raise ModelError(
                    f"{directory}: cannot build the model from config.json ({first_line(error)})"
                ) from error
        tokenizer = load_tokenizer(directory, getattr(config, "vocab_size", None))
        if tokenizer is not None:
            check_special_layout(directory, tokenizer)
    # A half-precision file (fp16, bf16) loads in its own dtype; it is measured in float32, the
    # upcast exact, so that attention and stream are not rounded to 8-11 bits before any measure.
    loaded_model.float().eval()
    encoder = loaded_model.base_model
    n_heads = int(config.num_attention_heads)
    loaded = LoadedModel(
        directory=directory,
        model=loaded_model,
        encoder=encoder,
        config=loaded_model.config,
        adapter=adapter,
        tokenizer=tokenizer,
        n_layers=len(encoder_layers(encoder, adapter)),
        n_heads=n_heads,
        hidden_size=int(config.hidden_size),
        max_tokens=_max_tokens(config, adapter, tokenizer),
        class_names=(
            tuple(str(config.id2label[i]) for i in range(int(config.num_labels))) if head else None
        ),
        kmers=_kmer_settings(raw),
        raw_config=raw,
        initial_weights_seed=initial_weights_seed,
        source=source,
        weights_files=files,
        ignored_weights=ignored,
        absent_weights=absent,
    )
    check_attention_output(loaded)
    return loaded


def check_special_layout(directory: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    """Require the layout the measures assume: the tokenizer opens every input with one special
    token and closes it with one (``[CLS] ... [SEP]``, ``<s> ... </s>``, ESM's
    ``<cls> ... <eos>``), so the content of an input of n tokens is ``1..n-2`` (the gates, the
    ``[CLS]`` vectors). A tokenizer that adds no closing token (an ESM tokenizer without an
    ``<eos>``) would make the last content token count as ``[SEP]``: refused, one line."""
    special = set(tokenizer.all_special_ids)
    names = set(tokenizer.all_special_tokens)
    vocabulary = tokenizer.get_vocab()
    probe = next(
        (
            token
            for token, _ in sorted(vocabulary.items(), key=lambda item: item[1])
            if token not in names and token.isascii() and token.isalnum()
        ),
        None,
    )
    if probe is None:
        return  # no plain token to probe with; the vocabulary checks have passed
    ids = list(tokenizer(probe, return_token_type_ids=False)["input_ids"])
    if len(ids) >= 3 and ids[0] in special and ids[-1] in special:
        return
    tokens = tokenizer.convert_ids_to_tokens(ids)
    raise ModelError(
        f"{directory}: the tokenizer ({type(tokenizer).__name__}) turns {probe!r} into "
        f"{tokens}; bertgeom's measures need every input between an opening and a closing "
        "special token ([CLS] ... [SEP], <cls> ... <eos>): save a tokenizer that adds both"
    )


def check_attention_output(loaded: LoadedModel) -> None:
    """Run four tokens through the model and require attention probabilities from every layer
    (``ModelError`` otherwise)."""
    layers_seen: list[int] = []

    def record(captured: CapturedLayer) -> None:
        layers_seen.append(captured.layer)

    if loaded.config._attn_implementation != ATTENTION_IMPLEMENTATION:
        raise ModelError(
            f"{loaded.directory}: the model runs {loaded.config._attn_implementation!r} "
            "attention, which returns no attention probabilities; bertgeom needs eager attention"
        )
    pad = int(getattr(loaded.config, "pad_token_id", 0) or 0)
    token = 1 if pad != 1 else 2
    input_ids = torch.full((1, 4), token, dtype=torch.long)
    with (
        torch.inference_mode(),
        LayerCapture(loaded.encoder, loaded.adapter, loaded.n_heads, record),
    ):
        loaded.encoder(input_ids=input_ids, attention_mask=torch.ones_like(input_ids))
    if layers_seen != list(range(loaded.n_layers)):
        raise ModelError(f"{loaded.directory}: the model's layers could not be captured")
