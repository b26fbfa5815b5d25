"""The package's layering, enforced: data flows one way and nothing imports sideways or up.

The ranks are ARCHITECTURE.md's two tables, read from it (one source): the layer table ranks the
top-level modules and the sub-packages; the package table orders the modules inside
``data/``, ``models/``, ``postprocess/`` and ``report/``. A module may import only modules of a
lower layer; inside its own sub-package, only modules of a lower tier (``data/synthetic/`` is
one unit). A new module must be given a place in those tables, which is the point: placing it
is a design decision.

Entry points (the table's ``top`` row: the ``cli/`` package) are imported by nothing outside
it, anywhere: not by the library, not by ``benchmarks/``, not by ``tests/``. The exceptions,
for a test or benchmark that runs a command as a user would: ``from <command> import main``
(and nothing else from it); and tests of the commands' shared helper, ``cli/errors.py``.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "bloodseg"
ARCHITECTURE = ROOT / "ARCHITECTURE.md"
#: where code that uses the library lives: it may import the library, never an entry point
USERS = {"benchmarks": ROOT / "benchmarks", "tests": ROOT / "tests"}
#: the one name a test or benchmark may import from an entry point: the command itself
COMMAND = "main"
#: a sub-package whose modules import each other freely (one unit in its package's order)
UNITS = {"data.synthetic"}
# report draws from run folders alone: it must run where torch does not
REPORT_MAY_NOT_IMPORT = {"module", "callbacks", "models", "losses", "modelfile", "training",
                         "prediction", "exporting", "tuning", "ddp", "sweep", "spec",
                         "inference", "evaluation", "outcome", "baselines"}
# ... except the Otsu baselines' scorer, imported lazily for bloodseg-report --baselines alone
REPORT_MAY_IMPORT = {"baselines"}
#: what tests may import from the commands besides ``main``: the commands' shared helper
TESTED_HELPERS = {"cli.errors"}


# -- the tables -------------------------------------------------------------------------------


def _dotted(span: str) -> str:
    """``data/cli.py`` -> ``data.cli``; ``report/`` -> ``report``."""
    return span.strip("/").removesuffix(".py").replace("/", ".")


def _rows(text: str, header: str) -> list[list[str]]:
    """The cells of the markdown table whose header row starts with ``header``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows


@dataclass(frozen=True)
class Layers:
    ranks: dict[str, int]            # top-level module or sub-package -> layer
    entry_points: frozenset[str]     # dotted, without ``bloodseg.``
    tiers: dict[str, dict[str, int]]  # sub-package -> its module (or unit) -> tier


def read_layers(text: str) -> Layers:
    ranks, entries = {}, set()
    for layer, modules, *_ in _rows(text, "| layer |"):
        names = [_dotted(m) for m in re.findall(r"`([^`]+)`", modules)]
        if layer == "top":
            entries |= set(names)
        else:
            ranks.update({n: int(layer) for n in names})
    tiers = {}
    for package, order, *_ in _rows(text, "| package |"):
        pkg = _dotted(package.strip("`"))
        tiers[pkg] = {f"{pkg}.{_dotted(m)}": t
                      for t, tier in enumerate(order.split("<"))
                      for m in re.findall(r"`([^`]+)`", tier)}
    return Layers(ranks, frozenset(entries), tiers)


LAYERS = read_layers(ARCHITECTURE.read_text())


# -- imports ----------------------------------------------------------------------------------


def module_name(path: Path, package: Path = PACKAGE) -> str:
    rel = path.relative_to(package).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"] or ["__init__"]
    return ".".join(parts)


def is_package(name: str, package: Path = PACKAGE) -> bool:
    return (package.joinpath(*name.split(".")) / "__init__.py").is_file()


def _is_module(name: str, package: Path) -> bool:
    path = package.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


@dataclass(frozen=True)
class Import:
    target: str        # the bloodseg module imported, dotted, without ``bloodseg.``
    name: str | None   # ``from target import name`` where name is not a module, else None


def imports(path: Path, package: Path = PACKAGE) -> set[Import]:
    """Every bloodseg module a file imports (nested imports too); ``from bloodseg.data import
    cli`` imports the module ``data.cli``, not the package."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {Import(a.name.removeprefix("bloodseg."), None) for a in node.names
                      if a.name.startswith("bloodseg.")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and (
                node.module == "bloodseg" or node.module.startswith("bloodseg.")):
            base = node.module.removeprefix("bloodseg").lstrip(".")
            for a in node.names:
                sub = f"{base}.{a.name}".lstrip(".")
                if _is_module(sub, package):
                    found.add(Import(sub, None))
                elif base:  # ``from bloodseg import __version__``: the package root, no rank
                    found.add(Import(base, a.name))
    return found


# -- the rule ---------------------------------------------------------------------------------


def is_entry(name: str, layers: Layers = LAYERS) -> bool:
    """An entry point, or a module of an entry-point package (``cli/``)."""
    return any(name == e or name.startswith(e + ".") for e in layers.entry_points)


def rank(name: str, layers: Layers = LAYERS) -> int | None:
    """The layer of a module: its own, or its top-level package's."""
    for key in (name, name.split(".")[0]):
        if key in layers.ranks:
            return layers.ranks[key]
    return None


def sub_package(name: str, package: Path = PACKAGE) -> str | None:
    """The ordered sub-package a module is in (``data`` for ``data.dataset``), if any."""
    parts = name.split(".")
    return parts[0] if len(parts) > 1 or is_package(name, package) else None


def tier(name: str, layers: Layers = LAYERS) -> int | None:
    """A module's tier inside its sub-package (units such as ``data.synthetic`` count whole)."""
    pkg = name.split(".")[0]
    order = layers.tiers.get(pkg, {})
    for unit in UNITS:
        if name == unit or name.startswith(unit + "."):
            return order.get(unit)
    return order.get(name)


def _unit(name: str) -> str:
    return next((u for u in UNITS if name == u or name.startswith(u + ".")), name)


def inside(me: str, target: str, package: Path = PACKAGE, layers: Layers = LAYERS
           ) -> str | None:
    """Why ``me`` may not import ``target`` of its own sub-package (None: it may)."""
    pkg = me.split(".")[0]
    if _unit(me) == _unit(target) in UNITS:
        return None  # a unit's modules (and its __init__) import each other freely
    if me == pkg:
        return None  # a package's __init__ re-exports its modules
    if target == pkg:
        return f"{target} (its own package's __init__, which imports it)"
    mine, theirs = tier(me, layers), tier(target, layers)
    if theirs is None:
        return f"{target} (no place in {pkg}/'s order in ARCHITECTURE.md)"
    if mine is None or theirs >= mine:
        return f"{target} (tier {theirs} >= {mine} in {pkg}/)"
    return None


def violations(path: Path, package: Path = PACKAGE, layers: Layers = LAYERS) -> list[str]:
    """The imports of a module of ``package`` that break the layering."""
    me = module_name(path, package)
    bad = []
    for imp in sorted(imports(path, package), key=lambda i: (i.target, i.name or "")):
        target = imp.target
        if is_entry(target, layers) and not is_entry(me, layers):
            bad.append(f"{target} (an entry point)")
        elif me.split(".")[0] == "report" and target.split(".")[0] in REPORT_MAY_NOT_IMPORT \
                and target not in REPORT_MAY_IMPORT:
            bad.append(f"{target} (report reads run folders only)")
        elif me == "__init__" or is_entry(me, layers):
            continue  # the package root registers resolvers; entry points import the library
        elif target.split(".")[0] == me.split(".")[0]:
            why = inside(me, target, package, layers)
            if why:
                bad.append(why)
        elif rank(target, layers) is None or rank(target, layers) >= rank(me, layers):
            bad.append(f"{target} (rank {rank(target, layers)} >= {rank(me, layers)})")
    return sorted(set(bad))


def entry_imports(path: Path, package: Path = PACKAGE, layers: Layers = LAYERS,
                  allowed: frozenset[str] = frozenset()) -> list[str]:
    """What a file outside the package (a test, a benchmark, ``train.py``) imports from entry
    points, other than a command's ``main`` (and the ``allowed`` modules)."""
    return sorted(f"{i.target}" + (f" ({i.name})" if i.name else "")
                  for i in imports(path, package)
                  if is_entry(i.target, layers) and i.name != COMMAND
                  and i.target not in allowed)


# -- the checks -------------------------------------------------------------------------------

MODULES = sorted({module_name(p) for p in PACKAGE.rglob("*.py")})


@pytest.mark.parametrize("name", MODULES)
def test_module_has_a_place(name):
    where = "the layer table"
    placed = name == "__init__" or is_entry(name) or rank(name) is not None
    if placed and not is_entry(name) and sub_package(name) in LAYERS.tiers:
        where = f"the {sub_package(name)}/ row of the package table"
        placed = name == sub_package(name) or tier(name) is not None
    assert placed, f"bloodseg.{name} has no place: add it to {where} in ARCHITECTURE.md"


def test_the_tables_name_only_modules_that_exist():
    named = set(LAYERS.ranks) | set(LAYERS.entry_points)
    named |= {m for order in LAYERS.tiers.values() for m in order}
    missing = sorted(n for n in named if not _is_module(n, PACKAGE))
    assert not missing, f"ARCHITECTURE.md places modules that do not exist: {missing}"


def test_entry_points_are_the_commands():
    """The ``top`` row is ``cli/``: every console script is a module there, every module there
    but its shared helper is a console script, and there is no other ``__main__``."""
    scripts = re.findall(r'^bloodseg-\w+ = "bloodseg\.([\w.]+):main"',
                         (ROOT / "pyproject.toml").read_text(), flags=re.M)
    assert set(LAYERS.entry_points) == {"cli"}
    commands = {m for m in MODULES if is_entry(m)} - {"cli", *TESTED_HELPERS}
    assert set(scripts) == commands
    assert not list(PACKAGE.rglob("__main__.py"))


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=module_name)
def test_imports_point_down(path):
    bad = violations(path)
    assert not bad, f"bloodseg.{module_name(path)} imports upward or sideways: {', '.join(bad)}"


def _user_files(folder: str) -> list[Path]:
    return sorted(USERS[folder].rglob("*.py"))


def test_the_root_train_py_only_runs_the_command():
    assert entry_imports(ROOT / "train.py") == []


#: what a test or a benchmark that runs a command may do instead of importing its logic
USER_HINTS = {"tests": "Import the library module that holds the logic; a test of a command",
              "benchmarks": "Import the library module that holds the logic (ARCHITECTURE.md); "
                            "a benchmark that runs a command"}


@pytest.mark.parametrize("path", [p for folder in USERS for p in _user_files(folder)],
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_tests_and_benchmarks_import_no_entry_point(path):
    folder = path.relative_to(ROOT).parts[0]
    bad = entry_imports(path, allowed=frozenset(TESTED_HELPERS if folder == "tests" else ()))
    assert not bad, (f"{path.relative_to(ROOT)} imports from entry points: {', '.join(bad)}. "
                     f"{USER_HINTS[folder]} may import its `{COMMAND}` only")


# -- the rule itself, on a made-up package ----------------------------------------------------

TABLES = """
| layer | modules | what |
|---|---|---|
| 0 | `labels.py`, `transforms.py` | x |
| 5 | `metrics.py`, `postprocess/` | x |
| top | `train.py`, `data/cli.py` | entry points |

| package | its modules, lowest first |
|---|---|
| `postprocess/` | `base.py` < `watershed.py`, `markers.py` |
"""


def test_the_rule_catches_upward_sideways_and_entry_imports(tmp_path):
    pkg = tmp_path / "bloodseg"
    (pkg / "postprocess").mkdir(parents=True)
    (pkg / "data").mkdir()
    cases = {
        "labels.py": "from bloodseg.metrics import InstanceStats\n",          # upward
        "transforms.py": "def f():\n    import bloodseg.labels\n",          # sideways, nested
        "metrics.py": "from bloodseg.train import train\n",                   # entry point
        "train.py": "from bloodseg.metrics import InstanceStats\n",
        "data/__init__.py": "",
        "data/cli.py": "def main():\n    pass\n",
        "postprocess/__init__.py": "from bloodseg.postprocess.watershed import W\n",  # fine
        "postprocess/base.py": "from bloodseg.labels import centroids\n",      # fine
        "postprocess/watershed.py": "from bloodseg.postprocess import base\n",  # fine: lower
        "postprocess/markers.py": ("from bloodseg.postprocess.watershed import W\n"  # same tier
                                   "from bloodseg.postprocess import M\n"),        # its __init__
    }
    for name, text in cases.items():
        (pkg / name).write_text(text)
    layers = read_layers(TABLES)

    def bad(name):
        return violations(pkg / name, pkg, layers)

    assert bad("labels.py") == ["metrics (rank 5 >= 0)"]
    assert bad("transforms.py") == ["labels (rank 0 >= 0)"]
    assert bad("metrics.py") == ["train (an entry point)"]
    assert bad("postprocess/base.py") == bad("postprocess/watershed.py") == []
    assert bad("postprocess/__init__.py") == []
    assert bad("postprocess/markers.py") == [
        "postprocess (its own package's __init__, which imports it)",
        "postprocess.watershed (tier 1 >= 1 in postprocess/)"]

    test = tmp_path / "test_x.py"
    test.write_text("from bloodseg.cli.data import main\nfrom bloodseg.data import cli\n"
                    "from bloodseg.train import train\nimport bloodseg.train\n"
                    "from bloodseg.metrics import InstanceStats\n")
    assert entry_imports(test, pkg, layers) == ["data.cli", "train", "train (train)"]
