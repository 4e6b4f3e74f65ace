"""Build the self-contained HTML report of a results directory (``bertgeom report``), of an
over-training directory (``analyze --over-training``: the last checkpoint's results and the
over-training section), or of an over-seeds directory (``analyze --over-seeds``: the first
seed's results and the over-seeds section).

The report is one file: figures are embedded PNGs, the CSS is inline, there is no script and
no link to anything outside the file, so it opens offline and can be mailed as it is.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import pyarrow as pa

import bertgeom
from bertgeom.atomic import atomic_file
from bertgeom.errors import InputError
from bertgeom.names import ReportSection
from bertgeom.outputs import check_output_file, contains
from bertgeom.report.content import Missing, Paragraph, Section
from bertgeom.report.findings_section import findings
from bertgeom.report.global_sections import cone, distribution, separability
from bertgeom.report.manifest_sections import metadata, overview
from bertgeom.report.over_seeds import OverSeeds, is_over_seeds, read_over_seeds
from bertgeom.report.sections import attention_maps, classifier, gates, subspace
from bertgeom.report.seeds_section import over_seeds
from bertgeom.report.spike_section import spike
from bertgeom.report.training import OverTraining, is_over_training, read_over_training
from bertgeom.report.training_section import over_training
from bertgeom.results.store import Results, load_results

SECTIONS: tuple[Callable[[Results], Section], ...] = (
    findings,
    overview,
    classifier,
    gates,
    attention_maps,
    subspace,
    cone,
    distribution,
    separability,
    spike,
    metadata,
)
"""The report's sections, in order (the findings first, the folded metadata last); each reads
only what it needs from the results."""
SECTION_IDS: tuple[str, ...] = tuple(
    section
    for section in ReportSection
    if section not in (ReportSection.OVER_TRAINING, ReportSection.OVER_SEEDS)
)
"""The id of each of ``SECTIONS``, in the same order."""
OVER_TRAINING_SECTION_IDS: tuple[str, ...] = tuple(
    section for section in ReportSection if section != ReportSection.OVER_SEEDS
)
"""The sections of the report of an over-training directory: ``SECTION_IDS`` with the
over-training section after the findings (``ReportSection``'s order)."""
OVER_SEEDS_SECTION_IDS: tuple[str, ...] = tuple(
    section for section in ReportSection if section != ReportSection.OVER_TRAINING
)
"""The sections of the report of an over-seeds directory: ``SECTION_IDS`` with the
over-seeds section after the findings (``ReportSection``'s order)."""
_DRAW_ERRORS = (KeyError, ValueError, IndexError, TypeError, AttributeError)


@dataclass
class ReportSummary:
    """What was built: the file, its size, the figures, and what could not be drawn."""

    path: Path
    size_bytes: int
    figures: int
    missing: dict[str, list[str]] = field(default_factory=dict)
    """Section id -> the lines saying what is missing from the results."""
    problems: dict[str, str] = field(default_factory=dict)
    """Section id -> why the section could not be drawn (results that break the contract)."""


def section_ids(path: Path) -> tuple[str, ...]:
    """The ids of the sections of the report of ``path``, in order."""
    if is_over_training(path):
        return OVER_TRAINING_SECTION_IDS
    return OVER_SEEDS_SECTION_IDS if is_over_seeds(path) else SECTION_IDS


def read_results(path: Path) -> Results:
    """``load_results`` with every way a directory can fail turned into one-line errors."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such results directory")
    if not path.is_dir():
        raise InputError(f"{path}: not a directory (give the folder bertgeom analyze wrote)")
    if is_over_training(path):
        raise InputError(
            f"{path}: an over-training directory, not a results directory: report it alone "
            f"(bertgeom report {path}), or use its checkpoints' results ({path}/checkpoints/step-N)"
        )
    if is_over_seeds(path):
        raise InputError(
            f"{path}: an over-seeds directory, not a results directory: report it alone "
            f"(bertgeom report {path}), or use its seeds' results ({path}/seeds/seed-N)"
        )
    if not (path / "heads.parquet").is_file() or not (path / "manifest.json").is_file():
        raise InputError(
            f"{path}: not a results directory (no manifest.json or heads.parquet); "
            "make one with bertgeom analyze"
        )
    try:
        return load_results(path)
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: a JSON file cannot be read ({error})") from None
    except (OSError, ValueError, pa.ArrowException) as error:
        raise InputError(f"{path}: a table or array cannot be read ({error})") from None


def draw_sections(
    results: Results,
    progress: Callable[[str], None] | None = None,
    functions: Sequence[tuple[Callable[[Results], Section], str]] | None = None,
) -> tuple[list[Section], dict[str, str]]:
    """Every section of the report (``functions``: each section's function and id, by default
    ``SECTIONS``), and the reason for each that could not be drawn (such a section holds one
    line saying so instead of failing the whole report)."""
    sections, problems = [], {}
    pairs = functions if functions is not None else list(zip(SECTIONS, SECTION_IDS, strict=True))
    for function, section_id in pairs:
        if progress is not None:
            progress(section_id)
        section, problem = draw_section(function, section_id, results)
        if problem is not None:
            problems[section_id] = problem
        sections.append(section)
    return sections, problems


def draw_section(
    function: Callable[[Results], Section], section_id: str, results: Results
) -> tuple[Section, str | None]:
    """One section, or one that says why it could not be drawn, and that reason."""
    try:
        return function(results), None
    except _DRAW_ERRORS as error:
        problem = f"{type(error).__name__}: {error}"
        section = Section(section_id, section_id.replace("-", " ").capitalize())
        section.blocks.append(
            Missing(f"This section could not be drawn from the results ({problem}).")
        )
        return section, problem


SectionFunction = Callable[[Results], Section]


def _with_section(
    extra: SectionFunction, extra_id: str, order: tuple[str, ...], note: Paragraph | None = None
) -> list[tuple[SectionFunction, str]]:
    """The report's sections with ``extra`` where ``order`` puts ``extra_id``, and ``note``
    first in the overview (which results the other sections show)."""

    def overview_with_note(results: Results) -> Section:
        section = overview(results)
        if note is not None:
            section.blocks.insert(0, note)
        return section

    functions = [
        (overview_with_note if section_id == ReportSection.OVERVIEW else function, section_id)
        for function, section_id in zip(SECTIONS, SECTION_IDS, strict=True)
    ]
    functions.insert(order.index(extra_id), (extra, extra_id))
    return functions


def draw_over_training_sections(
    data: OverTraining, progress: Callable[[str], None] | None = None
) -> tuple[list[Section], dict[str, str]]:
    """The sections of an over-training directory's report: those of its last checkpoint's
    results directory, the overview saying so, and the over-training section after the
    findings."""
    step = data.last_step
    epoch = data.training.loc[data.training["step"] == step, "epoch"].iloc[0]
    note = Paragraph(
        f"An analysis over training ({data.path.name}): the over-training section follows "
        f"every checkpoint; every other section shows the last checkpoint, step {step} (epoch "
        f"{epoch:.3g}), from its results directory checkpoints/step-{step} (step 0 is the "
        "untrained model, so there is no separate control)."
    )
    functions = _with_section(
        lambda _: over_training(data),
        ReportSection.OVER_TRAINING,
        OVER_TRAINING_SECTION_IDS,
        note,
    )
    return draw_sections(data.last, progress, functions)


def draw_sections_over_training(
    results: Results, data: OverTraining, progress: Callable[[str], None] | None = None
) -> tuple[list[Section], dict[str, str]]:
    """The sections of a results directory's report with the over-training section of an
    over-training directory of the same model's checkpoints after the findings (the demo: the
    final model analysed with its ablation and control, its checkpoints over training)."""
    others = f"the results in {results.path.name}/, not a checkpoint's"
    functions = _with_section(
        lambda _: over_training(data, others),
        ReportSection.OVER_TRAINING,
        OVER_TRAINING_SECTION_IDS,
    )
    return draw_sections(results, progress, functions)


def draw_over_seeds_sections(
    data: OverSeeds, progress: Callable[[str], None] | None = None
) -> tuple[list[Section], dict[str, str]]:
    """The sections of an over-seeds directory's report: those of its first seed's results
    directory, the overview saying so, and the over-seeds section after the findings."""
    seed = data.first_seed
    note = Paragraph(
        f"An analysis over seeds ({data.path.name}): the over-seeds section compares all "
        f"{len(data.seeds)} seeds; every other section shows the first seed, seed {seed}, from "
        f"its results directory {data.first_directory}."
    )
    functions = _with_section(
        lambda _: over_seeds(data), ReportSection.OVER_SEEDS, OVER_SEEDS_SECTION_IDS, note
    )
    return draw_sections(data.first, progress, functions)


def render_html(results: Results, sections: list[Section]) -> str:
    """The report's HTML (autoescaped: text from the results cannot inject markup)."""
    model = results.manifest.get("model", {})
    name = model.get("name_or_path") or model.get("path") or "model"
    return render_page(
        f"bertgeom report: {Path(str(name)).name}", subtitle(results), sections, results.path.name
    )


def subtitle(results: Results) -> str:
    """The model's shape and the inputs analysed, in one line."""
    model = results.manifest.get("model", {})
    data = results.manifest.get("data", {})
    return (
        f"{model.get('model_type', '')} with {model.get('n_layers', '?')} layers x "
        f"{model.get('n_heads', '?')} heads, {data.get('analysed', '?')} inputs "
        f"({data.get('source', '?')})"
    )


def render_page(title: str, subtitle: str, sections: list[Section], source: str) -> str:
    """A page of ``sections`` (autoescaped: text from the results cannot inject markup);
    ``source`` names what it was built from."""
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("bertgeom.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    return environment.get_template("report.html.j2").render(
        title=title,
        subtitle=subtitle,
        sections=sections,
        version=bertgeom.__version__,
        source=source,
    )


def build_report(
    results_dir: Path,
    out_path: Path | None = None,
    progress: Callable[[str], None] | None = None,
    *,
    overwrite: bool = False,
    over_training: Path | None = None,
) -> Path:
    """Write the report of ``results_dir`` (a results directory, an over-training directory:
    ``report.training``, or an over-seeds directory: ``report.over_seeds``) to ``out_path``
    (default ``results_dir/report.html``) atomically and return its path;
    ``progress(section_id)`` is called before each section.
    An existing ``out_path`` is replaced only when it is a bertgeom page (or ``overwrite``).
    ``over_training``: an over-training directory whose section the report of a results
    directory gains after the findings (``draw_sections_over_training``)."""
    return build_report_summary(
        results_dir, out_path, progress, overwrite=overwrite, over_training=over_training
    ).path


def build_report_summary(
    results_dir: Path,
    out_path: Path | None = None,
    progress: Callable[[str], None] | None = None,
    *,
    overwrite: bool = False,
    over_training: Path | None = None,
) -> ReportSummary:
    """``build_report``, returning what was built."""
    inputs = [Path(results_dir)] + ([Path(over_training)] if over_training is not None else [])
    out = output_path(out_path, Path(results_dir) / "report.html", overwrite, inputs)
    if over_training is not None:
        if not is_over_training(over_training):
            raise InputError(
                f"--over-training {over_training}: not an over-training directory; make one "
                "with bertgeom analyze --over-training"
            )
        results = read_results(results_dir)
        data = read_over_training(over_training, read_results)
        sections, problems = draw_sections_over_training(results, data, progress)
        return write_page(out, render_html(results, sections), sections, problems)
    if is_over_training(results_dir):
        data = read_over_training(results_dir, read_results)
        sections, problems = draw_over_training_sections(data, progress)
        return write_page(out, render_over_training_html(data, sections), sections, problems)
    if is_over_seeds(results_dir):
        seeds = read_over_seeds(results_dir, read_results)
        sections, problems = draw_over_seeds_sections(seeds, progress)
        return write_page(out, render_over_seeds_html(seeds, sections), sections, problems)
    results = read_results(results_dir)
    sections, problems = draw_sections(results, progress)
    return write_page(out, render_html(results, sections), sections, problems)


def render_over_training_html(data: OverTraining, sections: list[Section]) -> str:
    """The HTML of an over-training directory's report."""
    model = data.last.manifest.get("model", {})
    name = Path(str(data.record.get("model") or model.get("path") or "model")).name
    steps = sorted(data.training["step"].unique())
    return render_page(
        f"bertgeom report over training: {name}",
        f"{subtitle(data.last)}; {len(steps)} checkpoints, steps {steps[0]} to {steps[-1]}",
        sections,
        data.path.name,
    )


def render_over_seeds_html(data: OverSeeds, sections: list[Section]) -> str:
    """The HTML of an over-seeds directory's report."""
    model = data.first.manifest.get("model", {})
    name = Path(str(data.record.get("models") or model.get("path") or "model")).name
    seeds = ", ".join(str(seed) for seed in data.seeds)
    return render_page(
        f"bertgeom report over seeds: {name}",
        f"{subtitle(data.first)}; {len(data.seeds)} seeds ({seeds})",
        sections,
        data.path.name,
    )


PAGE_MARKER = b'<meta name="generator" content="bertgeom'
"""In the head of every page bertgeom writes (``templates/report.html.j2``)."""


def output_path(
    out_path: Path | None, default: Path, overwrite: bool = False, inputs: Sequence[Path] = ()
) -> Path:
    """``out_path`` or ``default``, refused when it is a directory, one of the results
    directories ``inputs`` read or a file inside them that is not a bertgeom page, or a file
    elsewhere that is not one (unless ``overwrite``): ``bertgeom.outputs.check_output_file``."""
    out = Path(out_path) if out_path is not None else default
    check_output_file(out, recognise=contains(PAGE_MARKER), inputs=inputs, overwrite=overwrite)
    return out


def write_page(
    out: Path, html: str, sections: list[Section], problems: dict[str, str]
) -> ReportSummary:
    """Write ``html`` to ``out`` atomically and say what was built."""
    with atomic_file(out) as partial:
        partial.write_text(html, encoding="utf-8")
    return ReportSummary(
        path=out,
        size_bytes=out.stat().st_size,
        figures=sum(len(section.figures) for section in sections),
        missing={s.id: [m.text for m in s.missing] for s in sections if s.missing},
        problems=problems,
    )
