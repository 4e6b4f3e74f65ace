"""The change check (expected changes, leave-one-out calibration, the p-value) on planted data
checked against brute-force counts, and the order of the rules that withhold a call."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bertgeom.genomics.clades import OUTSIDE_CLASSES, Placement
from bertgeom.model.change_check import CHANGE_CHECK_FILE, ChangeCheck, fit_change_check
from bertgeom.model.defining_changes import DefiningCall
from bertgeom.model.predict import (
    CLADE_DISAGREES,
    CLADE_OUTSIDE_CLASSES,
    DEFINING_DISAGREES,
    LOW_PROBABILITY,
    UNASSIGNED,
    UNEXPECTED_CHANGES,
    checked_calls,
)


def planted(seed: int = 0, n: int = 60) -> tuple[list[tuple[str, ...]], list[str]]:
    """Class A always carries M1 and sometimes M2 (30 %); every spike has 0-2 private changes."""
    rng = np.random.default_rng(seed)
    changes, labels = [], []
    for index in range(n):
        carried = ["M1"] + (["M2"] if rng.random() < 0.3 else [])
        carried += [f"P{index}-{j}" for j in range(int(rng.integers(0, 3)))]
        changes.append(tuple(carried))
        labels.append("A")
    return changes, labels


def test_expected_changes_and_leave_one_out_calibration() -> None:
    changes, labels = planted()
    check = fit_change_check(changes, labels, [("M1", "X")], ["A"], {"L": ("D1",)}, ("A", "L"))
    assert check.expected["A"] == {"M1", "M2"}
    assert check.expected["L"] == {"D1"}  # no real spikes: the definition
    # Brute force: each training spike's private changes are unexpected once it is left out.
    brute = [sum(c.startswith("P") for c in carried) for carried in changes]
    assert list(check.calibration["A"][:-1]) == brute
    assert check.calibration["A"][-1] == 1  # the validation spike's X


def test_a_change_carried_once_is_never_expected() -> None:
    check = fit_change_check([("Z",), ()], ["A", "A"], [], [], {}, ("A",), min_frequency=0.0)
    assert check.expected["A"] == frozenset()


def test_p_value_is_the_smoothed_tail_share() -> None:
    calibration = tuple([0] * 50 + [1] * 30 + [2] * 15 + [3] * 5)
    check = ChangeCheck(expected={"A": frozenset()}, calibration={"A": calibration})
    for u in range(6):
        brute = (1 + sum(count >= u for count in calibration)) / (1 + len(calibration))
        assert check.p_value("A", u) == pytest.approx(brute)
    assert not check.rejects("A", ["a", "b"])  # p = 21 / 101
    assert check.rejects("A", ["a", "b", "c", "d"])  # p = 1 / 101


def test_small_classes_are_tested_against_the_pooled_counts() -> None:
    check = ChangeCheck(
        expected={"A": frozenset(), "B": frozenset()},
        calibration={"A": tuple([0] * 40), "B": (0, 0, 0)},
    )
    # B alone could never reach 0.05 (its smallest p is 1/4); pooled with A it can.
    assert check.p_value("B", 1) == pytest.approx(1 / 44)
    assert check.rejects("B", ["x"])


def test_json_round_trip(tmp_path: Path) -> None:
    changes, labels = planted()
    check = fit_change_check(changes, labels, [], [], {}, ("A",))
    check.save(tmp_path)
    loaded = ChangeCheck.load(tmp_path)
    assert loaded == check
    assert ChangeCheck.load(tmp_path / "missing") is None


def test_checked_calls_withhold_for_probability_then_changes() -> None:
    check = ChangeCheck(
        expected={"A": frozenset({"M1"}), "B": frozenset()},
        calibration={"A": tuple([0] * 40), "B": tuple([0] * 40)},
    )
    probabilities = np.array([[0.99, 0.01], [0.99, 0.01], [0.4, 0.6]])
    calls = checked_calls(probabilities, [("M1",), ("M1", "Q9"), ("Q9",)], ("A", "B"), 0.7, check)
    assert calls.argmax == ["A", "A", "B"]
    assert calls.called == ["A", UNASSIGNED, UNASSIGNED]
    assert calls.reasons == ["", UNEXPECTED_CHANGES, LOW_PROBABILITY]
    assert calls.unexpected == [(), ("Q9",), ("Q9",)]
    assert calls.p_values[0] == pytest.approx(1.0) and calls.p_values[1] == pytest.approx(1 / 41)
    without = checked_calls(probabilities, [(), (), ()], ("A", "B"), 0.7, None)
    assert without.called == ["A", "A", UNASSIGNED] and np.isnan(without.p_values).all()


def test_the_clade_tree_decides_where_it_tells_the_class() -> None:
    """A placement that confirms the call keeps it (whatever its probability or changes); one
    outside the classes or under another class withholds it; an undecided one leaves the call
    to the probability and the change check."""
    check = ChangeCheck(
        expected={"A": frozenset(), "B": frozenset()},
        calibration={"A": tuple([0] * 40), "B": tuple([0] * 40)},
    )

    def placed(label: str) -> Placement:
        return Placement("X", label, 0, 1, 0, 1, ("X",))

    probabilities = np.array([[0.55, 0.45], [0.99, 0.01], [0.99, 0.01], [0.99, 0.01], [0.6, 0.4]])
    changes = [("Q1", "Q2"), (), (), ("Q1",), ()]
    placements = [placed("A"), placed(OUTSIDE_CLASSES), placed("B"), placed(""), None]
    calls = checked_calls(probabilities, changes, ("A", "B"), 0.7, check, placements)
    assert calls.called == ["A", UNASSIGNED, UNASSIGNED, UNASSIGNED, UNASSIGNED]
    assert calls.reasons == [
        "",
        CLADE_OUTSIDE_CLASSES,
        CLADE_DISAGREES,
        UNEXPECTED_CHANGES,
        LOW_PROBABILITY,
    ]
    assert calls.unexpected[0] == ("Q1", "Q2")  # kept as information


def test_defining_changes_decide_where_the_tree_does_not() -> None:
    """Where the tree tells nothing, defining changes that tell the called class keep it
    (whatever its probability or changes), ones that tell another class withhold it, and a
    class told by defining nothing (pre-VOC: by the absence of every other class's changes)
    leaves the call to the probability and the change check. The tree still comes first."""
    check = ChangeCheck(
        expected={"A": frozenset(), "B": frozenset()},
        calibration={"A": tuple([0] * 40), "B": tuple([0] * 40)},
        defining={"A": frozenset({"M1", "M2"}), "B": frozenset()},
    )

    def told(label: str) -> DefiningCall:
        return DefiningCall(label, (label,), 0, 2)

    probabilities = np.array([[0.55, 0.45], [0.99, 0.01], [0.01, 0.99], [0.01, 0.99], [0.9, 0.1]])
    changes = [("Q1", "Q2"), (), (), ("Q1",), ()]
    defining = [told("A"), told("B"), told("B"), told("B"), told("B")]
    placements = [None, None, None, None, Placement("X", "A", 0, 1, 0, 1, ("X",))]
    calls = checked_calls(probabilities, changes, ("A", "B"), 0.7, check, placements, defining)
    assert calls.called == ["A", UNASSIGNED, "B", UNASSIGNED, "A"]
    assert calls.reasons == ["", DEFINING_DISAGREES, "", UNEXPECTED_CHANGES, ""]


def test_json_round_trip_keeps_defining_changes_and_reads_older_files(tmp_path: Path) -> None:
    changes, labels = planted()
    check = fit_change_check(changes, labels, [], [], {"B": ("Z9",)}, ("A", "B"))
    assert check.defining["B"] == frozenset({"Z9"})  # no real spikes: its definition
    check.save(tmp_path)
    assert ChangeCheck.load(tmp_path) == check
    older = json.loads((tmp_path / CHANGE_CHECK_FILE).read_text())
    del older["defining"]
    (tmp_path / CHANGE_CHECK_FILE).write_text(json.dumps(older))
    assert ChangeCheck.load(tmp_path).defining == {}  # type: ignore[union-attr]
