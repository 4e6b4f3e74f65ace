"""``bertgeom.analysis`` never imports ``bertgeom.scale``, which builds on it: the package has
no import circle, and the Dask executor reaches ``analyze`` through the registry only."""

from __future__ import annotations

import ast
import graphlib
import subprocess
import sys
from pathlib import Path

import pytest

import bertgeom
from bertgeom.analysis import AnalysisOptions, LocalExecutor, executor_for
from bertgeom.errors import InputError

PACKAGE = Path(bertgeom.__file__).parent
SCALE = "bertgeom.scale"


def _modules() -> dict[str, Path]:
    """Every module of the package but the tests, by dotted name."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        if "tests" in path.relative_to(PACKAGE).parts:
            continue
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _imported(path: Path, modules: dict[str, Path]) -> set[str]:
    """What ``path`` imports anywhere (at the top, in functions, under TYPE_CHECKING), by
    ``import``, ``from ... import`` (relative ones resolved) or ``importlib.import_module``."""
    name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")[: -node.level]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                child = f"{base}.{alias.name}"
                names.add(child if child in modules else base)
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None))
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.add(node.args[0].value)
    return names


def test_analysis_never_names_scale() -> None:
    modules = _modules()
    for path in sorted((PACKAGE / "analysis").glob("*.py")):
        found = [n for n in _imported(path, modules) if n == SCALE or n.startswith(SCALE + ".")]
        assert not found, f"{path.name} imports {found}"


def test_no_import_circle_among_the_modules() -> None:
    """Module to module, counting every import wherever it is written (a package's
    ``__init__`` imported by its own modules is not a circle: Python runs it first)."""
    modules = _modules()
    graph = {
        name: {
            target
            for target in _imported(path, modules)
            if target in modules and target != name and not name.startswith(target + ".")
        }
        for name, path in modules.items()
    }
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as error:
        pytest.fail(f"import circle: {' -> '.join(error.args[1])}")


def test_importing_analysis_loads_no_scale_module() -> None:
    code = (
        "import sys, bertgeom.analysis\n"
        f"print(sorted(m for m in sys.modules if m.startswith({SCALE!r})))\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert output.strip() == "[]"


def test_cluster_options_without_a_dask_executor_are_one_input_error() -> None:
    """In a process that has not imported ``bertgeom.scale``, nothing is registered."""
    code = (
        "from bertgeom.analysis import AnalysisOptions, executor_for\n"
        "from bertgeom.errors import InputError\n"
        "try:\n"
        "    executor_for(AnalysisOptions(dask_workers=2))\n"
        "except InputError as error:\n"
        "    print(error)\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "executor=bertgeom.scale.executor.DaskExecutor" in output
    assert "import bertgeom.scale" in output


def test_scale_registers_its_executor() -> None:
    from bertgeom.scale.cluster import ClusterSpec
    from bertgeom.scale.executor import DaskExecutor

    assert isinstance(executor_for(AnalysisOptions()), LocalExecutor)
    executor = executor_for(AnalysisOptions(dask_workers=2))
    assert executor == DaskExecutor(ClusterSpec(workers=2))
    with pytest.raises(InputError, match="either --scheduler ADDRESS or --dask-workers N"):
        executor_for(AnalysisOptions(scheduler="tcp://host:8786", dask_workers=2))
