"""Defining changes: the frequency rule, and the placement against a slow per-class loop."""

from __future__ import annotations

import numpy as np
import pytest

from bertgeom.model.defining_changes import defining_call, defining_changes


def test_defining_changes_are_those_of_at_least_80_percent_of_a_class() -> None:
    changes = [("A1B", "C2D")] * 8 + [("A1B",)] * 2 + [("E3F",)] * 3
    labels = ["x"] * 10 + ["y"] * 3
    defining = defining_changes(changes, labels)
    assert defining == {"x": frozenset({"A1B", "C2D"}), "y": frozenset({"E3F"})}
    assert defining_changes(changes, labels, min_frequency=0.9)["x"] == frozenset({"A1B"})


def _slow_call(
    carried: set[str], unread: set[str], defining: dict[str, frozenset[str]], margin: int
) -> tuple[str, int]:
    """The same placement written as a loop over every class and every defining change."""
    names = sorted(set().union(*defining.values()))
    distances = {}
    for label, own in defining.items():
        distances[label] = sum(
            1 for name in names if name not in unread and ((name in carried) != (name in own))
        )
    nearest = min(distances.values())
    best = [label for label, d in distances.items() if d == nearest]
    others = [d for label, d in distances.items() if label not in best]
    told = len(best) == 1 and all(d >= nearest + margin for d in others)
    return (best[0] if told else ""), nearest


def test_placement_equals_a_slow_loop_on_random_spikes() -> None:
    rng = np.random.default_rng(0)
    universe = [f"X{i}Y" for i in range(30)]
    for _ in range(300):
        defining = {
            label: frozenset(rng.choice(universe, size=int(rng.integers(0, 8)), replace=False))
            for label in ("a", "b", "c", "d")
        }
        carried = set(rng.choice(universe, size=int(rng.integers(0, 10)), replace=False))
        unread = set(rng.choice(universe, size=int(rng.integers(0, 10)), replace=False))
        margin = int(rng.integers(1, 4))
        call = defining_call(sorted(carried), frozenset(unread), defining, margin)
        assert (call.label, call.distance) == _slow_call(carried, unread, defining, margin)


DEFINING = {
    "pre-VOC": frozenset(),
    "Gamma": frozenset({"L18F", "T20N", "P26S", "K417T", "E484K", "N501Y", "D614G", "V1176F"}),
    "Beta": frozenset({"D80A", "D215G", "K417N", "E484K", "N501Y", "D614G", "A701V"}),
}


@pytest.mark.parametrize(
    ("carried", "unread", "told"),
    [
        # A whole Gamma spike with two of its changes reverted and a private one.
        (("L18F", "T20N", "K417T", "E484K", "N501Y", "D614G", "Q675H"), (), "Gamma"),
        # A pre-VOC spike with two convergent markers: nearer pre-VOC by far.
        (("E484K", "D614G", "V1176F"), (), "pre-VOC"),
        # Convergent markers alone cannot tell Gamma from Beta when the rest is unread.
        (
            ("E484K", "N501Y", "D614G"),
            ("L18F", "T20N", "P26S", "K417T", "V1176F", "D80A", "D215G", "K417N", "A701V"),
            "",
        ),
        # Nothing read at all: nothing told.
        ((), tuple(set().union(*DEFINING.values())), ""),
    ],
)
def test_told_classes(carried: tuple[str, ...], unread: tuple[str, ...], told: str) -> None:
    assert defining_call(carried, frozenset(unread), DEFINING).label == told


def test_no_defining_changes_tell_nothing() -> None:
    call = defining_call(("D614G",), frozenset(), {})
    assert call.label == "" and call.read == 0
