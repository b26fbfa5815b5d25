"""The report of a set of runs: every figure and the results table written into one folder.

:func:`build_report` draws each run's curves, test panel and cell sizes, the comparison over
runs, and writes ``results.csv`` and ``results.md`` (failed and unfinished runs listed under
the table); :func:`report_incomplete` names those runs on stderr. The command is
``bloodseg-report`` (:mod:`bloodseg.report.__main__`).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from bloodseg.io import write_text_atomic
from bloodseg.report.baselines import BASELINE_NOTE, baseline_rows
from bloodseg.report.figures import (
    plot_comparison,
    plot_counts,
    plot_curves,
    plot_panel,
    plot_sizes,
)
from bloodseg.report.runs import Found, Run, warn
from bloodseg.report.tables import (
    incomplete_markdown,
    kinds_caption,
    results_markdown,
    results_table,
)


def build_report(runs: Sequence[Run], out: str | Path, found: Found | None = None,
                 baselines: bool = False) -> tuple[list[Path], pd.DataFrame]:
    """Every figure and table for ``runs`` into ``out`` (with the failed and unfinished runs
    of ``found`` under the table, and with ``baselines`` the Otsu + watershed rows of
    :mod:`bloodseg.report.baselines` at its foot); returns the files written and the table."""
    out = Path(out)
    runs = sorted(runs, key=lambda r: r.label.lower())
    # an interrupted run has curves but no test results: drawn, left out of the table
    # (found lists it under the table, with how to resume)
    finished = [r for r in runs if not r.interrupted]
    rows = baseline_rows(finished) if baselines else []
    written: list[Path] = []
    for r in runs:
        written += plot_curves(r, out)
        written += [p for p in (plot_panel(r, out), plot_sizes(r, out)) if p]
    written += [p for p in (plot_counts(finished, out), plot_comparison(finished, out, rows))
                if p]
    table = results_table(finished)
    if rows:
        table = pd.concat([table, pd.DataFrame(rows)], ignore_index=True)
    buf = io.StringIO()
    table.to_csv(buf, index=False)
    written.append(write_text_atomic(out / "results.csv", buf.getvalue()))
    md = f"# Results\n\n{kinds_caption({str(r.data_kind) for r in runs})}\n\n"
    md += results_markdown(table)
    if rows:
        md += "\n" + BASELINE_NOTE + "\n"
    left_out = incomplete_markdown(found, out)
    if left_out:
        md += "\n" + left_out
    written.append(write_text_atomic(out / "results.md", md))
    return written, table


def report_incomplete(found: Found) -> None:
    """List the failed and unfinished runs on stderr."""
    if found.failed:
        warn(f"{len(found.failed)} failed run(s), not in the table:"
             + "".join(f"\n  {f.path}: {f.reason}" for f in found.failed))
    if found.unfinished:
        warn(f"{len(found.unfinished)} unfinished run(s), not in the table:"
             + "".join(f"\n  {u.path} ({u.reason})" for u in found.unfinished))
