"""Whole-process ``bertgeom analyze`` against a whole-process plain eager forward pass.

What a user times: ``bertgeom analyze --model M --text T --out O --batch-size B`` (start-up,
imports, loading, reading, tokenising, the forward pass, every measurement with the global
measures on, the weights, writing) against a Python process that imports transformers, loads
the same model with eager attention, tokenises the same lines in batches of B and runs the
forward pass, nothing else. Interleaved ``--repeats`` times for each batch size; the ratio of
the medians (plain seconds / analyze seconds) is issue 10's target (>= 0.75). Then one analyze
run's own timings, to show where the rest goes. ``--compare SRC`` also times, interleaved with
the two, ``bertgeom analyze`` imported from another source tree (``SRC``: the ``src`` folder of
an earlier checkout, e.g. ``git worktree add /tmp/before HEAD~1``), for before / after ratios
from one run.

    .venv/bin/python benchmarks/analyze_process.py [--inputs 400] [--repeats 3] [--batch-sizes 32 8]
        [--compare /tmp/before/src]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from analyze_speed import model_directory, sentences  # benchmarks/ is on sys.path as a script
from classifier import checkout_command, machine

PLAIN = """
import sys, torch
from transformers import AutoModel, AutoTokenizer
model_dir, text, batch_size = sys.argv[1], sys.argv[2], int(sys.argv[3])
tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
model = AutoModel.from_pretrained(model_dir, local_files_only=True, attn_implementation="eager")
model.eval()
lines = [line for line in open(text).read().splitlines() if line.strip()]
with torch.inference_mode():
    for start in range(0, len(lines), batch_size):
        batch = tokenizer(lines[start : start + batch_size], padding=True, truncation=True,
                          return_tensors="pt")
        model(**batch)
"""


def seconds(command: list[str], env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=env)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=(32, 8))
    parser.add_argument("--compare", type=Path, help="src folder of another bertgeom checkout")
    args = parser.parse_args()
    compare_prefix: list[str] = []
    compare_env = None
    if args.compare is not None:
        compare_prefix, compare_env = checkout_command(args.compare)
    bertgeom = str(Path(sys.executable).with_name("bertgeom"))
    print(machine())
    with tempfile.TemporaryDirectory(prefix="bertgeom-process-") as scratch_name:
        scratch = Path(scratch_name)
        model, name = model_directory(scratch)
        text = scratch / "sentences.txt"
        text.write_text("\n".join(sentences(args.inputs)) + "\n")
        (scratch / "plain.py").write_text(PLAIN)
        print(f"model: {name}; {args.inputs} inputs; whole processes, medians of {args.repeats}")
        header = f"{'batch':>5} {'plain s':>8} {'analyze s':>9} {'ratio':>6}"
        print(header + (f" {'compared s':>10} {'ratio':>6}" if compare_env else ""))
        last: dict[str, object] = {}
        for batch_size in args.batch_sizes:
            plain_command = [sys.executable, str(scratch / "plain.py"), str(model), str(text)]
            plain_command.append(str(batch_size))
            out = scratch / f"results-{batch_size}"
            common = [bertgeom, "analyze", "--model", str(model), "--text", str(text)]
            common += ["--batch-size", str(batch_size)]
            analyze_command = [*common, "--out", str(out)]
            compare_command = [*compare_prefix, *common[1:], "--out", f"{out}-compared"]
            seconds(plain_command)  # warm-up: file caches
            plain, analyze, compared = [], [], []
            for _ in range(args.repeats):
                plain.append(seconds(plain_command))
                analyze.append(seconds(analyze_command))
                if compare_env is not None:
                    compared.append(seconds(compare_command, compare_env))
            a, p = statistics.median(analyze), statistics.median(plain)
            line = f"{batch_size:5d} {p:8.2f} {a:9.2f} {p / a:6.2f}"
            if compared:
                c = statistics.median(compared)
                line += f" {c:10.2f} {p / c:6.2f}"
            print(line, flush=True)
            last[str(batch_size)] = json.loads((out / "manifest.json").read_text())["timings"]
        print("analyze's own timings (last run, seconds):")
        print(json.dumps(last, indent=1))


if __name__ == "__main__":
    main()
