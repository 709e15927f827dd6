"""Build a report directory: analyses, plots and report.md written to a staging directory that
replaces the old report whole (a failed run leaves the earlier report untouched). The staging and
backup directories name their owner (host and pid): the next report into the same directory removes
those a killed run left behind."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from minilm_jax.analysis.result_rows import Duplicates, ResultsError, read_results
from minilm_jax.analysis.results import flops_field
from minilm_jax.analysis.seeds import seed_gaps, seed_spreads
from minilm_jax.analysis.zero_shot import zero_shot_analyses
from minilm_jax.analysis.zero_shot_seeds import zero_shot_seed_analyses
from minilm_jax.errors import UserError
from minilm_jax.storage import (RunPath, atomic_write_bytes, is_remote, owned_temp_dir,
                                remove_stale_temps, run_path)
from minilm_jax.analysis.variants import compare_downstream, compare_variants
from minilm_jax.sweep.status import STATUS_DIR, SweepStatus

from .analyses import analyse
from .fmt import code
from .downstream import (CORRELATION_PLOT, analyse_downstream, plot_correlation,
                         section_correlation, section_gaps)
from .markdown import section_curves, section_depth, section_icer, section_runs, section_summary
from .options import DOWNSTREAM_PLOT, ICER_PLOT, LOSS_PLOT, REPORT_NAME, ReportOptions
from .plots import plot_downstream, plot_icer, plot_loss_vs_flops
from .seeds import SEED_PLOT, plot_seed_bands, section_seeds
from .variants import section_variants
from .zero_shot import (ZERO_SHOT_PLOT, plot_zero_shot, section_perplexity_evaluations,
                        section_zero_shot, section_zero_shot_seeds)


def _sha256(path: RunPath) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


_TEMP_TAGS = ("partial", "old")  # staging and backup directories beside the report


def write_report(rows: list[dict[str, Any]], out: Path, options: ReportOptions,
                 source: RunPath, duplicates: Duplicates = Duplicates()) -> Path:
    """Analyse ``rows`` and write report.md and its plots into the (empty) directory ``out``;
    ``duplicates`` are the identical rows of ``source`` that were dropped (noted in the report)."""
    analyses = analyse(rows, options)
    for definition, curve in analyses.curves.items():
        plot_loss_vs_flops(analyses, curve, out / LOSS_PLOT.format(definition))
    icer_plotted = bool(analyses.icer_factors)
    if icer_plotted:
        plot_icer(analyses.icer_factors, analyses.icer_steps, out / ICER_PLOT)
    downstream = analyse_downstream(rows)
    downstream_plotted = plot_downstream(downstream.gaps, out / DOWNSTREAM_PLOT) is not None
    correlation_plotted = plot_correlation(downstream, out / CORRELATION_PLOT) is not None
    spreads = seed_spreads(rows, flops_field(options.flops))
    seeds_plotted = plot_seed_bands(spreads, out / SEED_PLOT)
    lines = ["# Scaling study report", "",
             f"Source: {code(source)} (sha256 {_sha256(source)[:16]}…, {len(rows)} rows"
             f"{_duplicates_note(duplicates)}). "
             f"Settings: headline FLOPs `{options.flops}`, {options.bins_per_decade} bins per "
             f"decade, {options.bootstrap} bootstrap resamples, seed {options.seed}, at least "
             f"{options.min_points} points per fit segment, {round(100 * options.confidence)}% "
             "intervals. Loss in nats; FLOPs are cumulative training FLOPs.", ""]
    lines += incomplete_note(source)
    lines += section_summary(analyses, downstream, options)
    lines += section_curves(analyses, options)
    lines += section_icer(analyses, options, icer_plotted)
    lines += section_depth(analyses, options)
    lines += section_gaps(downstream)
    if downstream_plotted:
        lines += [f"![downstream scores]({DOWNSTREAM_PLOT})", ""]
    lines += section_correlation(downstream, correlation_plotted)
    lines += section_seeds(spreads, seed_gaps(rows), seeds_plotted, analyses)
    zero_shot = zero_shot_analyses(rows, options.confidence)
    zero_shot_plots = [name if plot_zero_shot(z, out / name) is not None else ""
                       for z, name in ((z, ZERO_SHOT_PLOT.format(index=i))
                                       for i, z in enumerate(zero_shot))]
    lines += section_zero_shot(zero_shot, zero_shot_plots)
    lines += section_zero_shot_seeds(zero_shot_seed_analyses(rows, options.confidence))
    lines += section_perplexity_evaluations(rows)
    lines += section_variants(compare_variants(rows, options.flops), compare_downstream(rows))
    lines += section_runs(analyses)
    path = out / REPORT_NAME
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _duplicates_note(duplicates: Duplicates) -> str:
    if not duplicates.count:
        return ""
    plural = "s" if duplicates.count != 1 else ""
    return f"; {duplicates.count} duplicate row{plural} dropped, each identical to an earlier line"


def incomplete_note(results: RunPath) -> list[str]:
    """A warning at the top of the report when the sweep beside ``results`` (its stage records)
    has stages that did not finish: failed, interrupted, or still running when it was killed."""
    unfinished = SweepStatus(results.parent).unfinished()
    if not unfinished:
        return []
    shown = "; ".join(unfinished[:8]) + (f"; and {len(unfinished) - 8} more"
                                         if len(unfinished) > 8 else "")
    return [f"> **Incomplete sweep:** {len(unfinished)} stage(s) recorded in "
            f"{code(results.parent / STATUS_DIR)} did not finish ({shown}); their rows are "
            "missing below, and an interrupted sweep did not start the stages after them. Run "
            "the same sweep command again to resume (`python -m minilm_jax.sweep status` shows "
            "a failed stage's error).", ""]


def _check_replaceable(out: RunPath) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise UserError(f"--out exists and is not a directory: {out}")
    foreign = [p.name for p in out.iterdir() if not (p.is_file() and (
        p.name == REPORT_NAME or p.suffix == ".png"))]
    if foreign:
        raise UserError(f"refusing to replace {out}: it holds files that are not part of a report "
                        f"({', '.join(sorted(foreign)[:5])})")


def _publish(staging: Path, out: Path) -> None:
    """Swap the finished ``staging`` directory in for ``out`` (restoring ``out`` on failure)."""
    backup = None
    if out.exists():
        backup = owned_temp_dir(out.parent, out.name, "old")
        backup.rmdir()
        os.rename(out, backup)
    try:
        os.rename(staging, out)
    except BaseException:
        if backup is not None:
            os.rename(backup, out)
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


def _build_for_bucket(results: RunPath, out: RunPath, options: ReportOptions) -> RunPath:
    """Build the report in a local folder and upload it into ``out``; files of an earlier report
    that the new one lacks are deleted after the upload."""
    import tempfile

    _check_replaceable(out)
    with tempfile.TemporaryDirectory(prefix="minilm-report-") as local:
        built = build_report(results, Path(local) / "report", options).parent
        names = sorted(p.name for p in built.iterdir())
        old = [p for p in out.iterdir() if p.name not in names] if out.exists() else []
        for name in sorted(names, key=lambda n: n == REPORT_NAME):
            atomic_write_bytes(out / name, (built / name).read_bytes())
    for path in old:
        path.unlink()
    return out / REPORT_NAME


def build_report(results: str | Path, out: str | Path, options: ReportOptions | None = None
                 ) -> Path:
    """Load ``results``, write the report into a temporary sibling of ``out``, then swap it in.
    Returns the path of report.md. ``results`` and ``out`` may be ``gs://`` locations: a report
    for a bucket is built locally, then its files are uploaded (report.md last)."""
    options = options or ReportOptions()
    options.check()
    results = run_path(str(results))
    if is_remote(out):
        return _build_for_bucket(results, run_path(str(out)), options)
    out = Path(out)
    try:
        rows, duplicates = read_results(results)
    except ResultsError as err:
        raise UserError(str(err)) from None
    if not rows:
        raise UserError(f"results file has no rows: {results}")
    if duplicates.count:
        print(duplicates.warning(results), file=sys.stderr, flush=True)
    _check_replaceable(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out.parent, out.name, _TEMP_TAGS)
    staging = owned_temp_dir(out.parent, out.name, "partial")
    try:
        write_report(rows, staging, options, results, duplicates)
        os.chmod(staging, 0o755)
        _publish(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return out / REPORT_NAME
