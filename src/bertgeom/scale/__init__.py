"""Scale-out on Dask: ``analyze`` and ``predict`` sharded over the workers of a Dask cluster.

The inputs are cut into contiguous shards of positions (``capture.input_source.InputSource``); each
worker loads the model from its directory and streams its shard through the same engine as a
single process; the client merges the measurements' states and writes the per-input rows in
input order. ``docs/dask.md`` says how to run it on a real cluster. Dask is an optional extra
(``pip install 'bertgeom[dask]'``), imported only when a command asks for it.
"""

# Registers the Dask executor of ``analyze`` (``bertgeom.analysis.executor``).
from bertgeom.scale.executor import DaskExecutor

__all__ = ["DaskExecutor"]
