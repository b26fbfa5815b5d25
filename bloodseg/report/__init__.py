"""The report: figures and a results table from the run folders a sweep leaves behind.

It only reads run folders (through :mod:`bloodseg.rundir`), so it runs wherever matplotlib
does, without torch. ``bloodseg-report`` is the command (see ``__main__``); from Python::

    run = load_run("experiments/runs/Unet_grayscale/2024-06-01_12-00-00")
    run.history[["train/iou", "val/iou"]]     # one row per epoch
    plot_curves(run, Path("figures"))
    table = results_table([run])

Modules: ``runs`` (loading, finding runs), ``figures``, ``tables``, ``readme`` (the README
section), ``gallery`` (synthetic vs real smears). A cross-validation's table and plot are
:mod:`bloodseg.cv.outputs`'s.
"""

from bloodseg.report.figures import (
    plot_comparison,
    plot_count_scatter,
    plot_counts,
    plot_curves,
    plot_panel,
    plot_sizes,
)
from bloodseg.report.readme import find_section, markers, readme_section, update_readme
from bloodseg.report.runs import (
    Found,
    Incomplete,
    Run,
    Sample,
    assign_labels,
    data_caption,
    find_runs,
    load_history,
    load_run,
    safe_stem,
)
from bloodseg.report.tables import incomplete_markdown, results_markdown, results_table

__all__ = [
    "Found", "Incomplete", "Run", "Sample", "assign_labels", "data_caption", "find_runs",
    "find_section", "incomplete_markdown", "load_history", "load_run", "markers",
    "plot_comparison", "plot_count_scatter", "plot_counts", "plot_curves", "plot_panel",
    "plot_sizes",
    "readme_section", "results_markdown", "results_table", "safe_stem", "update_readme",
]
