"""Every Python example in the README runs and prints what the README says it prints (so the
documentation cannot rot)."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bertgeom.genomics.fasta import read_fasta
from bertgeom.genomics.reference import SPIKE_END, SPIKE_START, data_path
from bertgeom.genomics.spike import QCStatus

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)

Namespace = dict[str, Any]
QC_STATUSES = {status.value for status in QCStatus}


def printed_table(lines: list[str], columns: list[str]) -> list[list[str]]:
    """The rows of the pandas frame printed in ``lines`` under the header ``columns`` (each row
    its index, then one field per column), up to the next line that is not such a row."""
    headers = [number for number, line in enumerate(lines) if line.split() == columns]
    assert headers, f"no printed table with the columns {columns}:\n" + "\n".join(lines)
    rows = []
    for line in lines[headers[0] + 1 :]:
        fields = line.split()
        if len(fields) != len(columns) + 1:
            break
        rows.append(fields)
    return rows


def readme_predict_columns(classes: tuple[str, ...]) -> list[str]:
    """The columns of the README's table of what ``predict`` writes, ``p_<class>`` expanded."""
    after = README.read_text().split("`predict` writes one row per input record", 1)[1]
    lines = after.splitlines()
    start = next(number for number, line in enumerate(lines) if line.startswith("|"))
    table = list(itertools.takewhile(lambda line: line.startswith("|"), lines[start:]))
    columns = []
    for row in table[2:]:  # after the header and its rule
        for name in re.findall(r"`([^`]+)`", row.split("|")[1]):
            columns += [f"p_{label}" for label in classes] if name == "p_<class>" else [name]
    return columns


def check_prediction_example(printed: str, namespace: Namespace) -> None:
    """One genome to its spike and tokens, then the calls of the shipped model on a file."""
    lines = printed.splitlines()
    spike, calls, classifier = namespace["spike"], namespace["calls"], namespace["classifier"]

    # print(spike.status, len(spike.sequence), spike.reference_positions[:3])
    spike_line = re.fullmatch(r"(\S+) (\d+) \[(\d+) (\d+) (\d+)\]", lines[0])
    assert spike_line, lines[0]
    status, length, *positions = spike_line.groups()
    assert status in QC_STATUSES
    assert int(length) == len(spike.sequence) > 0
    assert [int(p) for p in positions] == spike.reference_positions[:3].tolist()
    assert all(SPIKE_START <= int(p) <= SPIKE_END for p in positions)

    # print(len(kmers(spike.sequence)), "tokens"): 12-mers, stride 9, N-padded to a multiple of 12
    tokens = re.fullmatch(r"(\d+) tokens", lines[1])
    assert tokens, lines[1]
    padded = -(-len(spike.sequence) // 12) * 12
    assert int(tokens.group(1)) == len(range(0, padded - 12 + 1, 9))

    # print(calls[["record_id", "status", "predicted_class", "probability"]].head())
    rows = printed_table(lines[2:], ["record_id", "status", "predicted_class", "probability"])
    assert len(rows) == 5
    classes = classifier.settings.classes
    for _index, _record_id, call_status, predicted_class, probability in rows:
        assert call_status in QC_STATUSES
        assert predicted_class in (*classes, "unassigned")
        assert 0 < float(probability) <= 1
    assert [row[1] for row in rows] == calls["record_id"].head().tolist()

    # one row per input record, in input order, with the columns the README lists for predict
    records = [record.record_id for record in read_fasta(data_path("genomes_ncbi.fasta.xz"))]
    assert calls["record_id"].tolist() == records
    assert calls.columns.tolist() == readme_predict_columns(classes)


def check_ablation_example(printed: str, namespace: Namespace) -> None:
    """Head ablation and the untrained control on four genomes of each label."""
    lines = printed.splitlines()
    ablation, control = namespace["ablation"], namespace["control"]
    assert all(len(genomes) == 4 for genomes in namespace["picked"].values())

    # ablation.parquet: layer, head, mode, class, metric, value
    assert ablation.columns.tolist() == ["layer", "head", "mode", "class", "metric", "value"]
    rows = printed_table(lines, ablation.columns.tolist())
    assert rows, "the query on ablation.parquet printed no rows"
    n_layers = int(control["layer"].max()) + 1
    # the baseline, then each layer's whole attention block zeroed and its keys masked
    modes = {"none", "zero", "mask_mutation_keys", "mask_matched_keys"}
    assert len(rows) == 1 + n_layers * (len(modes) - 1)
    for _index, layer, head, mode, class_name, metric, value in rows:
        assert (head, class_name, metric) == ("-1", "all", "accuracy")
        assert mode in modes and (mode == "none") == (layer == "-1")
        assert 0 <= float(value) <= 1
    assert {row[3] for row in rows} == modes

    # the control's cone index at every layer output, the embedding output (layer -1) first
    assert json.loads(Path("results/control/manifest.json").read_text())["control"]["kind"] == (
        "random-init"
    )
    rows = printed_table(lines, ["layer", "point", "class", "metric", "value"])
    assert [int(row[1]) for row in rows] == list(range(-1, n_layers))
    for _index, _layer, point, class_name, metric, value in rows:
        assert (point, class_name, metric) == ("layer_output", "all", "cone.normalized_mean")
        assert 0 < float(value) <= 1


CHECKS: dict[str, Callable[[str, Namespace], None]] = {
    "predict_records": check_prediction_example,
    "ablation=": check_ablation_example,
}
"""Each README block, found by a string only it holds, and what it must print."""


def block_check(block: str) -> Callable[[str, Namespace], None]:
    checks = [check for marker, check in CHECKS.items() if marker in block]
    assert len(checks) == 1, f"a README Python block without exactly one check:\n{block}"
    return checks[0]


def test_every_readme_python_block_has_its_check() -> None:
    assert len(BLOCKS) == len(CHECKS)
    assert len({block_check(block) for block in BLOCKS}) == len(BLOCKS)


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_python_example_prints_what_the_readme_says(
    block: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    check = block_check(block)
    monkeypatch.chdir(tmp_path)  # examples write their outputs where they run
    namespace: Namespace = {}
    exec(compile(block, str(README), "exec"), namespace)
    check(capsys.readouterr().out, namespace)


def test_readme_has_a_two_command_quick_start() -> None:
    text = README.read_text()
    quick_start = text.split("## Quick start", 1)[1].split("##", 1)[0]
    commands = re.findall(r"^make \w+", quick_start, flags=re.MULTILINE)
    assert commands == ["make demo", "make test"]
