"""The analysis of a BERT-family model on inputs: ``analyze`` and what it is made of.

Modules, in the order the data flows:

- ``options``: what is asked (``InputSpec``, ``open_source``, ``AnalysisOptions``, the heads
  whose maps are kept);
- ``measurements``: the measurements of an analysis, built empty, and the predictions;
- ``executor``: where the passes over the inputs run (``Executor``; ``LocalExecutor``; the
  registry that ``bertgeom.scale`` fills with its Dask executor: this package never imports
  ``bertgeom.scale``);
- ``run``: ``analyze`` itself: load, measure, the ablation and control steps, write;
- ``writing``: the tables, arrays and manifest of a results directory.
"""

from bertgeom.analysis.executor import (
    AnalysisRun,
    Executor,
    LocalExecutor,
    executor_for,
    register_executor,
)
from bertgeom.analysis.measurements import (
    CLASS_COVARIANCE_BUDGET,
    Predictions,
    RowWriter,
    build_measurements,
)
from bertgeom.analysis.options import (
    CONTROL_DIRECTORY,
    CONTROL_RANDOM_INIT,
    MAP_HEADS_BUDGET,
    AnalysisOptions,
    AnalysisSummary,
    InputKind,
    InputSpec,
    ProgressCallback,
    default_map_heads,
    open_source,
    parse_heads,
)
from bertgeom.analysis.run import analyze

__all__ = [
    "CLASS_COVARIANCE_BUDGET",
    "CONTROL_DIRECTORY",
    "CONTROL_RANDOM_INIT",
    "MAP_HEADS_BUDGET",
    "AnalysisOptions",
    "AnalysisRun",
    "AnalysisSummary",
    "Executor",
    "InputKind",
    "InputSpec",
    "LocalExecutor",
    "Predictions",
    "ProgressCallback",
    "RowWriter",
    "analyze",
    "build_measurements",
    "default_map_heads",
    "executor_for",
    "open_source",
    "parse_heads",
    "register_executor",
]
