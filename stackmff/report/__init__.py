"""Benchmark reports from a tidy metrics table: tables (Markdown, LaTeX, CSV), plots (PNG) and one HTML page.

The report stage (``pipelines/stages/report.py``) calls these; they are library code and import nothing from
``pipelines``.
"""

from .html import SceneView, build_html, select_crop, table_html
from .plots import plot_metric_bars, plot_paired_differences, plot_quality_vs_n, plot_quality_vs_runtime
from .tables import (
    RUN_COLUMNS,
    TIDY_COLUMNS,
    Table,
    headline,
    metric_tables,
    paired_differences,
    read_runs,
    read_tidy,
    resource_table,
    summarize,
    to_latex,
    to_markdown,
    write_csv,
    write_text,
)

__all__ = [
    "RUN_COLUMNS",
    "TIDY_COLUMNS",
    "SceneView",
    "Table",
    "build_html",
    "headline",
    "metric_tables",
    "paired_differences",
    "plot_metric_bars",
    "plot_paired_differences",
    "plot_quality_vs_n",
    "plot_quality_vs_runtime",
    "read_runs",
    "read_tidy",
    "resource_table",
    "select_crop",
    "summarize",
    "table_html",
    "to_latex",
    "to_markdown",
    "write_csv",
    "write_text",
]
