"""What a spike classifier should call each genome outside the eight classes."""

from __future__ import annotations

import pandas as pd

from bertgeom.model.experiment import spike_level_expectation, spike_level_summary


def test_spike_level_expectation_follows_the_spike_signature() -> None:
    outside = pd.DataFrame(
        {
            "label": ["other-VOI", "disputed", "disputed", "disputed", "disputed"],
            "record_ids": [
                "MZ622372.1,MZ622522.1",  # Epsilon: outside the classes
                "MZ477751.1",  # clade 20B, but a Gamma spike
                "OZ377424.1",  # clade 25I, spike signature ambiguous
                "Australia/VIC969/2020",  # no clade (N), a pre-VOC spike
                "not-in-the-labels",
            ],
        }
    )
    expected = spike_level_expectation(outside)
    assert expected == ["unassigned", "Gamma", "unassigned", "pre-VOC", "unassigned"]
    summary = spike_level_summary(["unassigned", "Gamma", "Omicron", "pre-VOC", "Alpha"], expected)
    assert summary == {
        "unassigned": {"n": 3, "as_expected": 1},
        "Gamma": {"n": 1, "as_expected": 1},
        "pre-VOC": {"n": 1, "as_expected": 1},
    }
