"""Commands answer at once: ``import bloodseg`` and every command's ``--help`` (and argument
errors) happen before torch, Lightning, segmentation_models_pytorch or matplotlib load."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "pytorch_lightning", "lightning_fabric", "segmentation_models_pytorch",
         "matplotlib", "wandb")
COMMANDS = re.findall(r'^bloodseg-\w+ = "(bloodseg\.cli\.\w+):main"',
                      (REPO / "pyproject.toml").read_text(), flags=re.M)

# One interpreter runs every command's --help in turn (a subprocess each would cost seconds of
# Python start-up); a command that imported a heavy library shows up right after its turn.
PROBE = """
import importlib, json, sys
from hydra.core.global_hydra import GlobalHydra
heavy = {heavy!r}
loaded = {{}}
import bloodseg
loaded["import bloodseg"] = sorted(h for h in heavy if h in sys.modules)
for module in {commands!r}:
    sys.argv = [module, "--help"]
    try:
        importlib.import_module(module).main()
    except SystemExit:
        pass
    GlobalHydra.instance().clear()
    loaded[module] = sorted(h for h in heavy if h in sys.modules)
print("LOADED " + json.dumps(loaded))
"""


def test_import_and_help_load_no_heavy_library():
    assert len(COMMANDS) >= 9
    code = PROBE.format(heavy=HEAVY, commands=COMMANDS)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("LOADED "))
    loaded = json.loads(line.removeprefix("LOADED "))
    assert set(loaded) == {"import bloodseg", *COMMANDS}
    assert {k: v for k, v in loaded.items() if v} == {}, "heavy imports before parsing"
    assert "usage" in proc.stdout.lower() or "== Config ==" in proc.stdout
