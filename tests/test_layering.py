"""The package's layering, enforced: data flows one way and nothing imports sideways or up.

Every module of ``bloodseg/`` has a rank (ARCHITECTURE.md draws the same picture); a module
may import only modules of a lower rank, or modules of its own sub-package. Entry points sit
on top and nothing imports them. A new module must be given a rank here, which is the point:
placing it is a design decision.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "bloodseg"

# lowest first; a module may import only from lower ranks (or its own sub-package)
RANKS = {
    "io": 0, "cli_errors": 0,
    "labels": 1, "transforms": 1, "rundir": 1, "checkpoint": 1,
    "augment": 1, "targets": 1, "measure": 1,
    "checkpoint_io": 1,    # Lightning's checkpoint writer, atomic (every trainer config)
    "config": 2, "render": 2, "weights": 2,
    "progress": 1,         # k/N and ETA of long loops, for logs off a terminal
    "data": 3,
    "models": 4, "losses": 4,
    "postprocess": 5, "metrics": 5,
    "spec": 6,             # the model spec: registries + checks, no Hydra instantiate
    "tuning": 6,           # post-processing parameters chosen on training images
    "inference": 7,        # the one inference path (model files -> outputs -> instances)
    "module": 8,           # the LightningModule (writes the spec into its checkpoints)
    "evaluation": 9,       # test and tuning stages through the inference path
    "steptime": 9,         # one training step timed (benchmarks: train_step, gpu_check)
    "callbacks": 10, "loggers": 10,
    "console": 10,         # per-epoch log lines, model summary, quieter Lightning
    "ddp": 11, "sweep": 11,  # run orchestration used by the train entry point / Hydra
    "report": 12,          # figures and tables from run folders
}
ENTRY_POINTS = {
    "__init__", "train", "evaluate", "predict", "tune", "report.__main__",
    "data.cli", "models.__main__", "weights.__main__",
    "export",              # bloodseg-export: onnx / torchscript / bundle
}
# report draws from run folders alone: it must run where torch does not
REPORT_MAY_NOT_IMPORT = {"module", "callbacks", "models", "losses", "checkpoint", "train",
                         "evaluate", "predict", "tune", "ddp", "sweep", "spec", "inference",
                         "evaluation"}
# ... except the Otsu baselines' scorer, imported lazily for bloodseg-report --baselines alone
REPORT_MAY_IMPORT = {"evaluation.baselines"}


def module_name(path: Path, package: Path = PACKAGE) -> str:
    rel = path.relative_to(package).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"] or ["__init__"]
    return ".".join(parts)


def imported(path: Path) -> set[str]:
    """bloodseg modules imported anywhere in the file (nested imports too), without prefix."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "bloodseg":
                names |= {f"bloodseg.{a.name}" for a in node.names}
            else:
                names.add(node.module)
    return {n.removeprefix("bloodseg.") for n in names
            if n.startswith("bloodseg.") and n != "bloodseg"}


def is_entry(name: str) -> bool:
    return any(name == e or name.startswith(e + ".") for e in ENTRY_POINTS)


def rank(name: str) -> int | None:
    for key in (name, name.split(".")[0]):
        if key in RANKS:
            return RANKS[key]
    return None


MODULES = sorted(module_name(p) for p in PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("name", MODULES)
def test_module_has_a_place(name):
    assert is_entry(name) or rank(name) is not None, (
        f"bloodseg.{name} has no rank: add it to RANKS or ENTRY_POINTS in {Path(__file__).name} "
        "(and to ARCHITECTURE.md)")


def violations(path: Path, package: Path = PACKAGE) -> list[str]:
    me = module_name(path, package)
    bad = []
    for target in sorted(imported(path)):
        if is_entry(target) and target.split(".")[0] != me.split(".")[0]:
            bad.append(f"{target} (an entry point)")
        elif me.split(".")[0] == "report" and target.split(".")[0] in REPORT_MAY_NOT_IMPORT \
                and target not in REPORT_MAY_IMPORT:
            bad.append(f"{target} (report reads run folders only)")
        elif is_entry(me) or target.split(".")[0] == me.split(".")[0]:
            continue  # entry points may import anything; a sub-package its own modules
        elif rank(target) is None or rank(target) >= rank(me):
            bad.append(f"{target} (rank {rank(target)} >= {rank(me)})")
    return bad


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=module_name)
def test_imports_point_down(path):
    bad = violations(path)
    assert not bad, f"bloodseg.{module_name(path)} imports upward or sideways: {', '.join(bad)}"


def test_the_rule_catches_upward_sideways_and_entry_imports(tmp_path):
    pkg = tmp_path / "bloodseg"
    pkg.mkdir()
    cases = {
        "labels.py": "from bloodseg.metrics import InstanceStats\n",          # upward
        "transforms.py": "def f():\n    import bloodseg.labels\n",          # sideways, nested
        "metrics.py": "from bloodseg.train import train\n",                   # entry point
        "postprocess.py": "from bloodseg.labels import centroids\n",          # fine
    }
    for name, text in cases.items():
        (pkg / name).write_text(text)
    assert violations(pkg / "labels.py", pkg) == ["metrics (rank 5 >= 1)"]
    assert violations(pkg / "transforms.py", pkg) == ["labels (rank 1 >= 1)"]
    assert violations(pkg / "metrics.py", pkg) == ["train (an entry point)"]
    assert violations(pkg / "postprocess.py", pkg) == []
