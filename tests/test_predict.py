"""bloodseg-predict never mixes outputs: reused folders, colliding names, CSV quoting,
progress on huge images and Hydra quoting hints for awkward paths."""

from __future__ import annotations

import logging
from io import StringIO
from pathlib import Path

import cv2
import numpy as np
import pytest
from hydra.core.global_hydra import GlobalHydra
from omegaconf import open_dict

from bloodseg.cli.errors import check_overrides
from bloodseg.inference import Predictor
from bloodseg.prediction import (
    OutputFolderError,
    TileProgress,
    check_output,
    output_names,
    predict,
)
from bloodseg.quoting import quote_value, quoting_hint
from tests.conftest import compose_cfg
from tests.helpers.cli import run
from tests.helpers.runs import read_csv


def ckpt(run: Path) -> Path:
    return run / "checkpoints" / "best.ckpt"


def write_images(folder: Path, names: list[str], size: tuple[int, int] = (96, 96)) -> Path:
    """Bright blobs on a dark background (any picture will do for these tests)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in names:
        img = np.full((*size, 3), 40, np.uint8)
        for _ in range(6):
            y, x = rng.integers(10, size[0] - 10), rng.integers(10, size[1] - 10)
            cv2.circle(img, (int(x), int(y)), 7, (200, 120, 160), -1)
        ok, data = cv2.imencode(Path(name).suffix, img)
        assert ok
        data.tofile(str(folder / name))
    return folder


def pngs(folder: Path) -> set[str]:
    return {p.name for p in folder.glob("*.png")}


def test_reused_output_is_refused_and_overwrite_replaces_only_our_results(trained_run, tmp_path):
    first = write_images(tmp_path / "first", ["a.png", "b.png"])
    out = tmp_path / "out"
    # Hydra's run folder is output= itself: .hydra/ and predict.log are already in it
    proc = run("bloodseg.cli.predict", [f"ckpt_path={ckpt(trained_run)}", f"input={first}",
                                        f"output={out}"], tmp_path, in_process=True)
    assert proc.returncode == 0, proc.stderr
    assert (out / ".hydra").is_dir() and (out / "predict.log").is_file()
    assert pngs(out / "masks") == {"a.png", "b.png"}
    (out / "notes.txt").write_text("mine")
    (out / "keep").mkdir()
    (out / "keep" / "x.png").write_bytes(b"mine")

    second = write_images(tmp_path / "second", ["c.png"])
    args = [f"ckpt_path={ckpt(trained_run)}", f"input={second}", f"output={out}",
            f"hydra.run.dir={tmp_path / 'hydra'}"]
    proc = run("bloodseg.cli.predict", args, tmp_path, in_process=True)
    assert proc.returncode == 2
    assert f"output folder {out} is not empty" in proc.stderr
    assert "overwrite=true" in proc.stderr and "another output=" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert pngs(out / "masks") == {"a.png", "b.png"}  # refused before touching anything

    proc = run("bloodseg.cli.predict", [*args, "overwrite=true"], tmp_path, in_process=True)
    assert proc.returncode == 0, proc.stderr
    for sub in ("masks", "instances", "overlays"):
        assert pngs(out / sub) == {"c.png"}  # stale a.png, b.png gone
    assert [r["file"] for r in read_csv(out / "counts.csv")] == ["c.png"]
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "keep" / "x.png").read_bytes() == b"mine"
    assert (out / ".hydra").is_dir() and (out / "predict.log").is_file()


def test_check_output_ignores_hydra_files_and_never_deletes_inputs(tmp_path):
    out = tmp_path / "run"
    (out / ".hydra").mkdir(parents=True)
    (out / "predict.log").write_text("")
    assert check_output(out) == []
    assert check_output(tmp_path / "new") == []
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputFolderError, match="is a file"):
        check_output(tmp_path / "file")
    with pytest.raises(OutputFolderError, match="is a file"):  # a path under a file
        check_output(tmp_path / "file" / "sub")
    write_images(out / "masks", ["old.png"])
    with pytest.raises(OutputFolderError, match="not empty .*masks.*overwrite=true"):
        check_output(out)
    with pytest.raises(OutputFolderError, match="would delete the input"):
        check_output(out, overwrite=True, inputs=[out / "masks" / "old.png"])
    with pytest.raises(OutputFolderError, match="did not write"):  # no counts.csv lists it
        check_output(out, overwrite=True)
    (out / "counts.csv").write_text("file,output\nold.jpg,old.png\n")
    assert check_output(out, overwrite=True) == [out / "masks", out / "counts.csv"]
    assert (out / "masks" / "old.png").is_file()  # listed, not deleted


def test_output_names_never_collide():
    files = [Path(n) for n in ["cell.jpg", "cell.png", "cell_png.tif", "Smear.png", "smear.PNG",
                               "x.png"]]
    names = output_names(files)
    assert names[Path("x.png")] == "x" and names[Path("cell_png.tif")] == "cell_png"
    assert names[Path("cell.jpg")] == "cell_jpg"
    assert len({n.casefold() for n in names.values()}) == len(files)


def test_same_stem_and_comma_names_map_unambiguously(trained_run, tmp_path):
    inputs = write_images(tmp_path / "in", ["cell.png", "cell.jpg", "a,b.png", 'say "hi".png'])
    out = tmp_path / "pred"
    cfg = compose_cfg(tmp_path, [f"ckpt_path={ckpt(trained_run)}", "input=x"],
                      config_name="predict")
    with open_dict(cfg):
        cfg.input, cfg.output = str(inputs), str(out)
    try:
        rows, failed = predict(cfg)
    finally:
        GlobalHydra.instance().clear()
    assert not failed and len(rows) == 4
    csv_rows = {r["file"]: r for r in read_csv(out / "counts.csv")}
    assert set(csv_rows) == {"cell.png", "cell.jpg", "a,b.png", 'say "hi".png'}
    assert csv_rows["cell.png"]["output"] == "cell_png.png"
    assert csv_rows["cell.jpg"]["output"] == "cell_jpg.png"
    assert csv_rows["a,b.png"]["output"] == "a,b.png"
    assert len({r["output"] for r in csv_rows.values()}) == 4
    for sub in ("masks", "instances", "overlays"):
        assert pngs(out / sub) == {r["output"] for r in csv_rows.values()}
    for r in csv_rows.values():
        inst = cv2.imread(str(out / "instances" / r["output"]), cv2.IMREAD_UNCHANGED)
        assert int(r["cell_count"]) == int(inst.max()) and r["width"] == "96"


def test_many_tiles_warn_up_front_and_report_progress(trained_run, caplog):
    image = np.full((300, 300, 3), 120, np.uint8)
    calls = []
    pred = Predictor.load(ckpt(trained_run), mode="tile", scale=1.0, batch_size=4, warn_tiles=5)
    with caplog.at_level(logging.WARNING, logger="bloodseg.inference"):
        pred.outputs(image, name="huge.png", progress=lambda d, t: calls.append((d, t)))
    assert calls == [(4, 9), (8, 9), (9, 9)]
    [record] = [r for r in caplog.records if r.levelno == logging.WARNING]
    msg = record.getMessage()
    assert msg.startswith("huge.png: 300x300 px at predict.scale=1 is 9 tiles of 128x128 px")
    assert "predict.scale" in msg and "predict.mode=resize" in msg
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="bloodseg.inference"):
        Predictor.load(ckpt(trained_run), mode="tile", scale=1.0).outputs(image)  # 9 <= 200
    assert not caplog.records


def test_tile_progress_off_a_terminal_logs_a_few_lines(caplog):
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(file=StringIO())) as bar:
        tiles = TileProgress(bar, bar.add_task("tiles"), warn_tiles=200)
        with caplog.at_level(logging.INFO, logger="bloodseg.prediction"):
            tiles.start("huge.png")
            for done in range(8, 1001, 8):
                tiles(min(done, 1000), 1000)
            tiles.start("small.png")
            for done in range(8, 101, 8):
                tiles(done, 100)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 10 and lines[-1] == "huge.png: 1000/1000 tiles"


def test_unquoted_non_ascii_path_gets_quoting_hint(tmp_path):
    proc = run("bloodseg.cli.predict", ["ckpt_path=x", "input=/data/dätä"], tmp_path,
               in_process=True)
    assert proc.returncode == 2
    assert "'input=\"/data/dätä\"'" in proc.stderr
    assert "LexerNoViableAltException" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("value", ["/data/a=b", "/data/a,b", "/data/dätä", "/data/(x)"])
def test_quoting_hint_for_overrides_hydra_rejects(value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        check_overrides(["ckpt_path=x", f"input={value}"])
    assert exit_info.value.code == 2
    assert f"'input=\"{value}\"'" in capsys.readouterr().err


def test_quoted_and_swept_overrides_pass(capsys):
    check_overrides(["ckpt_path=x", 'input="/data/dätä=1,2"', "input=/tmp/a b:c@d"])
    check_overrides(["-m", "model=unet,attunet"])
    check_overrides(["--config-name", "train", "hydra.run.dir=\"/r/ä\"", "+x=[1,2]"])
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("value", ["/d/dätä=1,2", "it's", 'say "hi"', "a\\", 'a\\"b', "(x)#~"])
def test_quoted_values_parse_back_exactly(value):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    [override] = OverridesParser.create().parse_overrides([f"input={quote_value(value)}"])
    assert override.value() == value
    assert quoting_hint(f"input={value}").startswith("'")


def test_hinted_override_works_end_to_end(trained_run, tmp_path):
    inputs = write_images(tmp_path / "dätä=1,2", ["zelle.png"])
    out = tmp_path / "out"
    proc = run("bloodseg.cli.predict", [
        f"ckpt_path={ckpt(trained_run)}", f"input={quote_value(str(inputs))}", f"output={out}",
        f"hydra.run.dir={tmp_path / 'hydra'}"], tmp_path, in_process=True)
    assert proc.returncode == 0, proc.stderr
    assert [r["output"] for r in read_csv(out / "counts.csv")] == ["zelle.png"]


def test_override_hints_decorator_checks_only_command_line_calls(monkeypatch, capsys):
    from bloodseg.cli.errors import hydra_override_hints

    calls = []
    entry = hydra_override_hints(lambda *args: calls.append(args) or "ran")
    monkeypatch.setattr("sys.argv", ["bloodseg-train", "data.root=/data/dätä"])
    assert entry("cfg") == "ran"  # called with a config (tests, DDP): no argv check
    with pytest.raises(SystemExit) as exit_info:
        entry()
    assert exit_info.value.code == 2 and calls == [("cfg",)]
    assert "'data.root=\"/data/dätä\"'" in capsys.readouterr().err
