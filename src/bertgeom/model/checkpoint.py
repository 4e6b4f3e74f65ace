"""Loading a model directory exactly, or refusing it by name.

What bertgeom measures must be the weights in the directory, so every load checks, before and
after ``from_pretrained``:

- no shipped code: a config (or tokenizer config) with an ``auto_map`` names Python files
  beside the weights that transformers would run with ``trust_remote_code``; such a model is
  refused before any of its files is read, and no option turns remote code on;
- the weights: safetensors only (``model.safetensors``, the shards of
  ``model.safetensors.index.json``, or the file the config names in ``transformers_weights``),
  every file present and its header readable (a truncated or corrupt file is named);
- transformers' own loading information (``output_loading_info``): a weight the model needs
  that is missing from the file or has another shape than the config gives, or a weight of the
  file that fits no module of the model, refuses it. The exceptions: weights of a task head
  or pooler the loaded model does not have (``ArchitectureAdapter.heads``: a masked-LM head
  beside the encoder), which the analysis never runs, and missing weights of modules of the
  bare model the analysis never runs either (``ArchitectureAdapter.never_run``: ESM's contact
  head); both are returned to be listed;
- the tokenizer: the directory's own files, a vocabulary of more than the special tokens, and
  token ids the model's embedding has rows for. transformers builds a tokenizer from the config
  alone when the files are missing, one that maps every word to ``[UNK]``: that never loads.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from safetensors import SafetensorError, safe_open
from torch import nn
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from bertgeom.errors import ModelError, first_line

SAFE_WEIGHTS = "model.safetensors"
SAFE_WEIGHTS_INDEX = "model.safetensors.index.json"
PICKLED_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "sentencepiece.bpe.model",
    "spiece.model",
    "tokenizer.model",
)
"""Files that hold a vocabulary (``tokenizer_config.json`` alone does not)."""

_SHOWN = 3
"""Names shown in a refusal before 'and N more'."""


def _some(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


def _weights(count: int) -> str:
    return f"{count} weight" + ("" if count == 1 else "s")


def refuse_shipped_code(directory: Path, config: dict[str, Any]) -> None:
    """Refuse a model whose config or tokenizer config maps classes to code shipped beside it
    (``auto_map``), naming the code and the architecture it claims. Nothing is imported."""
    mapped: list[str] = []
    maps = [("config.json", config.get("auto_map")), *_tokenizer_auto_map(directory)]
    for name, entries in maps:
        if not entries:
            continue
        if isinstance(entries, dict):
            pairs = [f"{auto} -> {target}" for auto, target in entries.items()]
        else:
            pairs = [str(target) for target in entries]
        mapped.append(f"{name} auto_map {', '.join(pairs)}")
    if not mapped:
        return
    claimed = ", ".join(str(name) for name in config.get("architectures") or []) or "none given"
    raise ModelError(
        f"{directory}: the model ships its own code ({'; '.join(mapped)}; architectures: "
        f"{claimed}, model_type {config.get('model_type')!r}), which bertgeom never runs; it "
        "loads only architectures transformers itself implements"
    )


def _tokenizer_auto_map(directory: Path) -> tuple[tuple[str, Any], ...]:
    path = directory / "tokenizer_config.json"
    if not path.is_file():
        return ()
    try:
        tokenizer_config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelError(f"{path}: unreadable tokenizer config ({error})") from error
    if not isinstance(tokenizer_config, dict):
        raise ModelError(f"{path}: unreadable tokenizer config (not a JSON object)")
    return (("tokenizer_config.json", tokenizer_config.get("auto_map")),)


def weights_files(directory: Path, config: dict[str, Any] | None = None) -> tuple[Path, ...]:
    """The safetensors files transformers loads from ``directory``, in its order of preference
    (the config's ``transformers_weights``, ``model.safetensors``, the shards of
    ``model.safetensors.index.json``), each present and with a readable header."""
    directory = Path(directory)
    named = (config or {}).get("transformers_weights")
    if named:
        chosen = directory / str(named)
        if _outside(str(named)) or not str(named).endswith(
            (".safetensors", ".safetensors.index.json")
        ):
            raise ModelError(
                f"{directory}: config.json names weights {named!r} (transformers_weights), not "
                "a safetensors file inside the directory; bertgeom loads safetensors only"
            )
        _require_file(chosen, "the weights config.json names (transformers_weights)")
        files = _shards(chosen) if chosen.name.endswith(".index.json") else (chosen,)
    elif (directory / SAFE_WEIGHTS).is_file():
        files = (directory / SAFE_WEIGHTS,)
    elif (directory / SAFE_WEIGHTS_INDEX).is_file():
        files = _shards(directory / SAFE_WEIGHTS_INDEX)
    else:
        raise ModelError(f"{directory}: {_why_no_weights(directory)}")
    for path in files:
        _check_header(path)
    return files


def _outside(name: str) -> bool:
    """Whether a file name from a model's own files leaves its directory (checked by name: in
    a Hugging Face cache the files are links into ``blobs/``)."""
    path = PurePosixPath(name.replace("\\", "/"))
    return path.is_absolute() or ".." in path.parts


def _require_file(path: Path, what: str) -> None:
    if path.is_symlink() and not path.exists():
        raise ModelError(
            f"{path}: {what} is a broken link (a cache whose blob is missing); download the "
            "model again"
        )
    if not path.is_file():
        raise ModelError(f"{path}: {what} is missing")


def _why_no_weights(directory: Path) -> str:
    names = sorted(path.name for path in directory.iterdir())
    if (directory / SAFE_WEIGHTS).is_symlink():
        return f"{SAFE_WEIGHTS} is a broken link (a cache whose blob is missing); download again"
    other = [name for name in names if name.endswith(".safetensors")]
    if other:
        return (
            f"no {SAFE_WEIGHTS} or {SAFE_WEIGHTS_INDEX} (only {_some(other)}, which are not the "
            "model's weights file); save the model with save_pretrained"
        )
    if any(name.endswith(PICKLED_SUFFIXES) for name in names):
        return (
            "only pickled weights (*.bin), which bertgeom does not load; save the model with "
            "safetensors"
        )
    return "no weights; save the model with safetensors"


def _shards(index: Path) -> tuple[Path, ...]:
    """The shard files of a safetensors index, all present."""
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        names = sorted({str(name) for name in weight_map.values()})
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as error:
        raise ModelError(
            f"{index}: unreadable shard index ({first_line(error)}); download or save the "
            "model again"
        ) from error
    if not names:
        raise ModelError(f"{index}: the shard index names no weights")
    escaping = [name for name in names if _outside(name)]
    if escaping:
        raise ModelError(f"{index}: shards outside the model directory ({_some(escaping)})")
    missing = [name for name in names if not (index.parent / name).is_file()]
    if missing:
        raise ModelError(
            f"{index}: {len(missing)} of its {len(names)} shards missing ({_some(missing)}); "
            "download or copy the whole model"
        )
    return tuple(index.parent / name for name in names)


def _check_header(path: Path) -> None:
    """Open a safetensors file's header (cheap): a truncated or corrupt file fails here."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            handle.keys()
    except (SafetensorError, OSError) as error:
        raise ModelError(
            f"{path}: unreadable safetensors file ({first_line(error)}); it is truncated or "
            "corrupt: download or save it again"
        ) from error


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file, computed once per file version in a process (an analysis and its
    untrained control record the same weights' hash)."""
    stat = Path(path).stat()
    return _sha256(Path(path).resolve(), stat.st_size, stat.st_mtime_ns)


@functools.cache
def _sha256(path: Path, size: int, modified_ns: int) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def load_weights(
    loader: Any,
    directory: Path,
    files: Sequence[Path],
    heads: Collection[str],
    never_run: Collection[str] = (),
    **options: Any,
) -> tuple[PreTrainedModel, tuple[str, ...], tuple[str, ...]]:
    """``loader.from_pretrained(directory, **options)``, checked with transformers' loading
    information: the model, the ignored weights of heads it does not have and the absent
    weights of ``never_run`` modules (each sorted); anything else that did not load exactly is
    one ``ModelError`` line."""
    try:
        model, info = loader.from_pretrained(
            directory,
            output_loading_info=True,
            # Mismatched shapes come back in the loading information, named, instead of an
            # error that names none of them; they are refused below all the same.
            ignore_mismatched_sizes=True,
            use_safetensors=True,
            local_files_only=True,
            **options,
        )
    except SafetensorError as error:
        raise ModelError(
            f"{directory}: unreadable safetensors weights ({first_line(error)}); the file is "
            "truncated or corrupt: download or save it again"
        ) from error
    except (OSError, ValueError, KeyError, RuntimeError, TypeError, AttributeError) as error:
        raise ModelError(f"{directory}: cannot load the model ({first_line(error)})") from error
    ignored, absent = check_loading_info(model, info, directory, files, heads, never_run)
    return model, ignored, absent


def check_loading_info(
    model: PreTrainedModel,
    info: dict[str, Any],
    directory: Path,
    files: Sequence[Path],
    heads: Collection[str],
    never_run: Collection[str] = (),
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Refuse what ``from_pretrained(..., output_loading_info=True)`` reports as missing
    (outside the ``never_run`` modules), mismatched, unexpected (outside ``heads`` the model
    lacks) or in error; return the ignored weights of heads and the absent weights of
    ``never_run`` modules, each sorted."""
    source = files[0].name if len(files) == 1 else f"the {len(files)} shards"
    reported = sorted(str(name) for name in info.get("missing_keys") or ())
    absent = [name for name in reported if _below_base(name, model)[0] in never_run]
    missing = [name for name in reported if name not in set(absent)]
    mismatched = sorted((str(entry[0]), entry[1], entry[2]) for entry in _entries(info))
    unexpected = sorted(str(name) for name in info.get("unexpected_keys") or ())
    own_modules = {name for name, _ in model.named_modules()}
    ignored = [name for name in unexpected if _unused_head(name, model, own_modules, heads)]
    unknown = [name for name in unexpected if name not in set(ignored)]
    problems: list[str] = []
    if missing:
        problems.append(f"{_missing_parts(missing, model)} missing from {source}: {_some(missing)}")
    if mismatched:
        shapes = [
            f"{name} ({_shape(in_file)} in the file, {_shape(by_config)} by config.json)"
            for name, in_file, by_config in mismatched
        ]
        problems.append(
            f"{_weights(len(mismatched))} of {source} "
            f"{'does' if len(mismatched) == 1 else 'do'} not have the shapes config.json gives "
            f"({_some(shapes)})"
        )
    if unknown:
        problems.append(
            f"{_weights(len(unknown))} of {source} {'fits' if len(unknown) == 1 else 'fit'} "
            f"no module of {type(model).__name__} "
            f"({_some(unknown)})"
        )
    errors = [str(message).strip().splitlines()[0] for message in info.get("error_msgs") or ()]
    if errors:
        problems.append(f"errors while loading ({_some(errors)})")
    if problems:
        raise ModelError(
            f"{directory}: {'; '.join(problems)}; bertgeom measures only weights that loaded"
        )
    return tuple(ignored), tuple(absent)


def _entries(info: dict[str, Any]) -> Iterable[tuple[Any, ...]]:
    for entry in info.get("mismatched_keys") or ():
        yield tuple(entry) if isinstance(entry, (tuple, list)) else (entry, None, None)


def _shape(shape: Any) -> str:
    return "?" if shape is None else "x".join(str(int(size)) for size in shape) or "scalar"


def _unused_head(
    name: str, model: PreTrainedModel, own_modules: set[str], heads: Collection[str]
) -> bool:
    """Whether weight ``name`` belongs to a head (or pooler) the loaded model does not have."""
    path = name.split(".")
    prefix = model.base_model_prefix
    if path[0] == prefix and prefix not in own_modules and len(path) > 1:
        path = path[1:]  # a bare encoder: the checkpoint's names may carry the prefix
    return path[0] in heads and path[0] not in own_modules


def _below_base(name: str, model: PreTrainedModel) -> list[str]:
    """The path of weight ``name`` of ``model`` from its base model (without the prefix a
    model with a head puts before the base model's weights)."""
    path = name.split(".")
    prefix = model.base_model_prefix
    with_head = isinstance(getattr(model, prefix, None), nn.Module)
    return path[1:] if with_head and path[0] == prefix and len(path) > 1 else path


def _missing_parts(missing: Sequence[str], model: PreTrainedModel) -> str:
    """'2 weights of the encoder and 1 of the classification head are' (the encoder is the
    base model; everything else of a model with a head is the head)."""
    prefix = model.base_model_prefix
    with_head = isinstance(getattr(model, prefix, None), nn.Module)
    encoder = [n for n in missing if not with_head or n.startswith(f"{prefix}.")]
    head = len(missing) - len(encoder)
    head_name = (
        "the classification head"
        if type(model).__name__.endswith("ForSequenceClassification")
        else "the head"
    )
    parts = []
    if encoder:
        parts.append(f"{_weights(len(encoder))} of the encoder")
    if head:
        parts.append(f"{_weights(head) if not encoder else head} of {head_name}")
    verb = "is" if len(missing) == 1 else "are"
    return f"{' and '.join(parts)} {verb}"


def missing_tokenizer(directory: Path) -> str:
    """The refusal of a directory without tokenizer files."""
    return (
        f"{directory}: no tokenizer files (none of {', '.join(TOKENIZER_FILES)}); save the "
        "tokenizer with the model (tokenizer.save_pretrained)"
    )


def load_tokenizer(directory: Path, vocab_size: int | None) -> PreTrainedTokenizerBase | None:
    """The tokenizer ``directory`` ships, checked (see the module docstring); ``None`` when it
    ships no tokenizer files at all (never the one transformers would build from the config).
    Call inside ``quiet_transformers``."""
    directory = Path(directory)
    present = [name for name in TOKENIZER_FILES if (directory / name).is_file()]
    if not present:
        return None
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            directory, local_files_only=True, trust_remote_code=False
        )
    # The tokenizers library raises a bare Exception for a corrupt tokenizer.json.
    except Exception as error:
        raise ModelError(f"{directory}: cannot load the tokenizer ({first_line(error)})") from error
    kind = type(tokenizer).__name__
    needed = [str(name) for name in getattr(tokenizer, "vocab_files_names", {}).values()]
    complete = "tokenizer.json" in present or (
        bool(needed) and all((directory / name).is_file() for name in needed)
    )
    if not complete:
        raise ModelError(
            f"{directory}: the tokenizer ({kind}) has no vocabulary here: it needs "
            f"{' or '.join(needed) or 'tokenizer.json'}, the directory has {', '.join(present)}; "
            "save the tokenizer with the model (tokenizer.save_pretrained)"
        )
    vocabulary = tokenizer.get_vocab()
    if not set(vocabulary) - set(tokenizer.all_special_tokens):
        raise ModelError(
            f"{directory}: the tokenizer's vocabulary holds only its {len(vocabulary)} special "
            "tokens: every word would be [UNK]; save the model's own tokenizer with it"
        )
    highest = max(vocabulary.values())
    if vocab_size is not None and highest >= int(vocab_size):
        raise ModelError(
            f"{directory}: the tokenizer has token ids up to {highest} but the model's embedding "
            f"has {vocab_size} rows (config.json vocab_size): it is not this model's tokenizer"
        )
    tokenizer.padding_side = "right"
    return tokenizer
