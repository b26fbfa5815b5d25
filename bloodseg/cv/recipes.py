"""What a cross-validation trains: recipes (Hydra overrides of ``bloodseg-train``) and the
overrides each fold's run gets on top of them.

The shipped recipes are the configs ``conf/experiment/bench/<name>.yaml`` (run as
``experiment=bench/<name>``), each derived from ``experiment=count_real`` and holding only
what differs; ``NAME="override override ..."`` on the command line adds another. Every run
gets the fold's data, its run folder, the CSV logger and the seed (:func:`run_overrides`).

    >>> recipe_names()[:2]
    ['binary_s05', 'contour_s05']
    >>> parse_named('wide="model.base_channels=32 trainer=cpu"', "--recipe")
    ('wide', ['model.base_channels=32', 'trainer=cpu'])
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Sequence
from pathlib import Path

from bloodseg.config import CONF_DIR

__all__ = ["FIXED_OVERRIDES", "NAME_RE", "QUICK_OVERRIDES", "RECIPES_DIR", "RECIPE_GROUP",
           "RECIPE_ORDER", "RecipeError", "composed", "hydra_value", "merge_overrides",
           "parse_named", "recipe_names", "recipe_overrides", "run_overrides",
           "same_training", "select_recipes", "split_overrides"]

# the recipes: conf/experiment/bench/<name>.yaml, each run as experiment=bench/<name>
RECIPE_GROUP = "bench"
RECIPES_DIR = Path(CONF_DIR) / "experiment" / RECIPE_GROUP
# the table's order, and --quick's first two; recipe files not named here follow, sorted
RECIPE_ORDER = ("binary_s05", "contour_s05", "distance_s05", "distance_s05_e24",
                "binary_wmap_s05", "binary_288x384")
# appended to every recipe by --quick: a tiny network, one epoch, no loader processes
QUICK_OVERRIDES = ("trainer.max_epochs=1", "data.image_size=64", "model.base_channels=4",
                   "data.num_workers=0")
# what every run gets, as results.json records it (the folders are each run's own)
FIXED_OVERRIDES = ("data=bbbc041seg", "data.root=<fold folder>", "logger=csv",
                   "callbacks.progress_bar=null", "hydra.run.dir=<run folder>")
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
SAFE_VALUE = re.compile(r"[A-Za-z0-9_/.+:@-]+")


class RecipeError(ValueError):
    """A recipe, variant or ensemble the command line gave that cannot be run (the message
    names it and what is expected)."""


def recipe_names(folder: Path = RECIPES_DIR) -> list[str]:
    """The recipes of ``conf/experiment/bench/``: :data:`RECIPE_ORDER` first, then any other
    file, sorted."""
    found = {p.stem for p in folder.glob("*.yaml")}
    return [n for n in RECIPE_ORDER if n in found] + sorted(found - set(RECIPE_ORDER))


def recipe_overrides(name: str) -> list[str]:
    """A recipe file's overrides of ``bloodseg-train``."""
    return [f"experiment={RECIPE_GROUP}/{name}"]


def split_overrides(text: str) -> list[str]:
    """Overrides as a shell splits them; a recipe quoted as a whole is unwrapped."""
    tokens = shlex.split(text)
    if len(tokens) == 1 and " " in tokens[0]:
        tokens = shlex.split(tokens[0])
    return tokens


def parse_named(text: str, flag: str = "--recipe") -> tuple[str, list[str]]:
    """``NAME="override override ..."`` -> (name, overrides); RecipeError otherwise."""
    name, sep, overrides = text.partition("=")
    name = name.strip()
    if not sep or not NAME_RE.fullmatch(name):
        raise RecipeError(f'{flag} {text!r}: expected NAME="override override ..." with NAME '
                          "made of letters, digits, _ . + -")
    return name, split_overrides(overrides.strip())


def select_recipes(names: Sequence[str], named: Sequence[str], reserved: str = ""
                   ) -> dict[str, list[str]]:
    """Name -> override list: ``names`` of conf/experiment/bench/ (every recipe file when
    neither ``names`` nor ``named`` is given), then the ``named`` ones (``NAME="..."``);
    ``reserved``: a name no recipe may take (the work folder's folds)."""
    chosen: dict[str, list[str]] = {}
    if names or not named:
        book = recipe_names()
        names = list(names) or book
        unknown = [n for n in names if n not in book]
        if unknown:
            raise RecipeError(f"{RECIPES_DIR}: no recipe {', '.join(unknown)} (it has "
                              f"{', '.join(book) or 'none'})")
        chosen |= {n: recipe_overrides(n) for n in names}
    for text in named:
        name, overrides = parse_named(text, "--recipe")
        if name in chosen:
            raise RecipeError(f"recipe {name!r} given twice")
        chosen[name] = overrides
    for name in chosen:
        if not NAME_RE.fullmatch(name) or name == reserved:
            raise RecipeError(f"recipe name {name!r}: use letters, digits, _ . + - (not "
                              f"{reserved!r})")
    if not chosen:
        raise RecipeError("no recipes to run")
    return chosen


def merge_overrides(*groups: Iterable[str]) -> list[str]:
    """Overrides in order, a later one replacing an earlier one of the same key."""
    merged: dict[str, str] = {}
    for group in groups:
        for item in group:
            key = item.split("=", 1)[0].lstrip("+~")
            merged.pop(key, None)
            merged[key] = item
    return list(merged.values())


def hydra_value(value: str | Path) -> str:
    """A value as a Hydra override accepts it: quoted unless it is plainly safe."""
    value = str(value)
    if SAFE_VALUE.fullmatch(value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def run_overrides(recipe: Sequence[str], fold_dir: Path, run_dir: Path, seed: int,
                  quick: bool) -> list[str]:
    """A fold's run: ``seed`` (the recipe's own ``seed=`` wins: ensemble members on the same
    folds), the recipe, :data:`QUICK_OVERRIDES` with ``quick``, then the fold's data and the
    run folder (:data:`FIXED_OVERRIDES`), which no recipe overrides."""
    fixed = ["data=bbbc041seg", f"data.root={hydra_value(fold_dir)}", "logger=csv",
             "callbacks.progress_bar=null", f"hydra.run.dir={hydra_value(run_dir)}"]
    return merge_overrides([f"seed={seed}"], recipe, QUICK_OVERRIDES if quick else (), fixed)


def composed(overrides: Sequence[str]) -> dict:
    """The training config ``bloodseg-train`` would compose from ``overrides`` (unresolved),
    less the run's name and Hydra's own settings, which do not change what trains."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = OmegaConf.to_container(compose("train", overrides=list(overrides)), resolve=False)
    cfg.pop("name", None)
    return cfg


def same_training(recorded: Sequence[str], now: Sequence[str]) -> bool:
    """Whether a run recorded with ``recorded`` overrides trained what ``now`` would: the same
    overrides, or others that compose to the same config (runs recorded before the recipe
    files spelled their recipe out; ``experiment=bench/<name>`` says it in one word)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    if list(recorded) == list(now):
        return True
    try:
        return composed(recorded) == composed(now)
    except (HydraException, OmegaConfBaseException):  # an override the configs no longer take
        return False
