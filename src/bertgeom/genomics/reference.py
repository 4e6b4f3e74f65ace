"""The Wuhan-Hu-1 reference (MN908947.3) and the spike gene's place on it (embedded data)."""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path

SPIKE_START = 21563
"""First reference position of the spike gene S (1-based, inclusive)."""
SPIKE_END = 25384
"""Last reference position of the spike gene S (1-based, inclusive; the stop codon TAA)."""
SPIKE_LENGTH = SPIKE_END - SPIKE_START + 1  # 3,822 nt

REFERENCE_ACCESSION = "MN908947.3"

SPIKE_DOMAINS: tuple[tuple[str, int, int], ...] = (
    # (name, first codon, last codon), 1-based spike amino-acid positions (UniProt P0DTC2).
    ("signal peptide", 1, 13),
    ("NTD", 14, 305),
    ("RBD", 319, 541),
    ("SD1/SD2", 542, 685),
    ("S2' / FP", 686, 833),
    ("HR1", 912, 984),
    ("CH / CD", 985, 1162),
    ("HR2", 1163, 1213),
    ("TM / CT", 1214, 1273),
)

SPIKE_DOMAIN_SLUGS: dict[str, str] = {
    "signal peptide": "signal_peptide",
    "NTD": "NTD",
    "RBD": "RBD",
    "SD1/SD2": "SD1_SD2",
    "S2' / FP": "S2_FP",
    "HR1": "HR1",
    "CH / CD": "CH_CD",
    "HR2": "HR2",
    "TM / CT": "TM_CT",
}
"""Names of the domains in metric names (``spike.domain.<slug>.share``)."""
SPIKE_CODONS = SPIKE_LENGTH // 3 - 1
"""Amino acids of the spike protein (1,273; the last codon of S is the stop codon)."""


def data_path(name: str) -> Path:
    """Path of a file of the embedded dataset (``bertgeom/genomics/data``)."""
    return Path(str(resources.files("bertgeom.genomics") / "data" / name))


@cache
def reference_genome() -> str:
    """The reference genome as an upper-case string (29,903 nt)."""
    lines = data_path("reference.fasta").read_text().splitlines()
    return "".join(line.strip() for line in lines if not line.startswith(">")).upper()


@cache
def reference_spike() -> str:
    """The reference spike gene, positions 21563..25384, upper case (3,822 nt, ATG...TAA)."""
    return reference_genome()[SPIKE_START - 1 : SPIKE_END]


def codon_of(reference_position: int) -> int:
    """Spike codon (1-based amino-acid position) of a reference nucleotide position in S."""
    return (reference_position - SPIKE_START) // 3 + 1


def domain_of(reference_position: int) -> str:
    """Spike domain containing a reference nucleotide position (``outside S`` or ``linker``)."""
    if not SPIKE_START <= reference_position <= SPIKE_END:
        return "outside S"
    codon = codon_of(reference_position)
    for name, first, last in SPIKE_DOMAINS:
        if first <= codon <= last:
            return name
    return "linker"
