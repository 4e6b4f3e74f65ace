"""bertgeom: the geometry of BERT as a tool.

A SARS-CoV-2 variant classifier (whole genomes in, variant class out, through the spike gene,
12-mer tokens and a BERT trained from scratch), and the local and global geometric analysis of
any BERT-family encoder (gates, directionality of subspace selection, cone index, distribution of
the token stream). Definitions: ``docs/definitions.md``.
"""

__version__ = "0.1.0"
