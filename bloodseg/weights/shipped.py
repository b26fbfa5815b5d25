"""The shipped models' bundles and model cards, by name (``weights=<name>``)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

SUFFIX = ".pt"


def _folder() -> Path:
    return Path(str(resources.files("bloodseg.weights")))


def weights_names() -> list[str]:
    """The shipped models' names (``weights=<name>``)."""
    return sorted(p.stem for p in _folder().glob(f"*{SUFFIX}"))


def weights_path(name: str) -> Path:
    """The bundle of shipped model ``name``; an unknown name lists the valid ones."""
    names = weights_names()
    if name not in names:
        from bloodseg.io import CheckpointError

        raise CheckpointError(f"weights={name}: no such shipped model; valid: "
                              f"{', '.join(names) or '(none installed)'}. Or pass "
                              "ckpt_path=<file> for your own checkpoint")
    return _folder() / f"{name}{SUFFIX}"


def model_card(name: str) -> str:
    """The model card (Markdown) of shipped model ``name``."""
    weights_path(name)
    card = _folder() / f"{name}.md"
    return card.read_text() if card.is_file() else ""


def listing() -> str:
    """One line per shipped model: name, size, the card's title; then how to use one."""
    names = weights_names()
    if not names:
        return "no shipped models installed"
    lines = []
    for name in names:
        size = weights_path(name).stat().st_size / 1e6
        title = next((line.strip("# ").strip() for line in model_card(name).splitlines()
                      if line.strip()), "")
        lines.append(f"{name:<16} {size:5.1f} MB  {title}")
    lines.append("use: bloodseg-predict weights=<name> input=<image or folder> output=<folder>")
    return "\n".join(lines)
