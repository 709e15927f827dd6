"""The scaling-study report: Markdown with tables and PNG plots, from a sweep's ``results.jsonl``.

    python -m minilm_jax.report --results=PATH/results.jsonl --out=DIR

Modules: ``options`` (settings, file names), ``analyses`` (everything computed once from the rows),
``plots`` and ``downstream.plot_correlation`` (figures), ``markdown`` and ``downstream`` (sections),
``publish`` (the staging directory swapped in whole), ``__main__`` (the command).
"""

from .analyses import Analyses, CurveAnalysis, analyse, analyse_curve
from .markdown import bic_strength
from .options import ReportOptions
from .publish import build_report, write_report

__all__ = ["Analyses", "CurveAnalysis", "ReportOptions", "analyse", "analyse_curve",
           "bic_strength", "build_report", "write_report"]
