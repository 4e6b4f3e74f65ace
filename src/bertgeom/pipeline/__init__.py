"""The case study end to end, without a console: the steps the classifier's commands share
(``pipeline.steps``) and the demo that runs them all, then analyses the model and writes the
report (``pipeline.demo``). Progress goes to a listener (``pipeline.options``); ``bertgeom.cli``
draws it as progress bars and lines.

The same recipe under several seeds (``pipeline.seeds``) and the analysis across them
(``pipeline.over_seeds``) are here too. Importing this package or ``pipeline.options`` is
light; ``pipeline.steps``, ``pipeline.demo``, ``pipeline.seeds`` and ``pipeline.over_seeds``
import torch.
"""
