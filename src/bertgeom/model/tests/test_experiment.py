"""What each genome kept out of the dataset should be called, by its Nextstrain clade."""

from __future__ import annotations

import pandas as pd

from bertgeom.model.experiment import clade_expectation, expectation_summary


def test_clade_expectation_follows_the_tree_definition() -> None:
    outside = pd.DataFrame(
        {
            "label": ["other-VOI", "disputed", "disputed", "disputed", "disputed"],
            "record_ids": [
                "MZ622372.1,MZ622522.1",  # Epsilon (21C): outside the classes
                "MZ477751.1",  # clade 20B (pre-VOC), though its spike looks like Gamma's
                "OZ377424.1",  # clade 25I (BA.3.2): a descendant of 21M, so Omicron
                "Australia/VIC969/2020",  # no clade (too many N)
                "not-in-the-labels",
            ],
        }
    )
    expected = clade_expectation(outside)
    assert expected == ["unassigned", "pre-VOC", "Omicron", "unassigned", "unassigned"]
    summary = expectation_summary(["unassigned", "Gamma", "Omicron", "pre-VOC", "Alpha"], expected)
    assert summary == {
        "unassigned": {"n": 3, "as_expected": 1},
        "pre-VOC": {"n": 1, "as_expected": 0},
        "Omicron": {"n": 1, "as_expected": 1},
    }
