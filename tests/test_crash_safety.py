"""Crash safety: nothing lost, nothing mixed, nothing injected: one run per run folder,
checkpoints that a full disk or a kill cannot truncate, failures recorded even when the disk
is full, hostile run text escaped in the README, errors that name the file, and masks that
cannot teach anything flagged."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra.utils import instantiate

from bloodseg import rundir
from bloodseg.checkpoint_io import AtomicCheckpointIO
from bloodseg.outcome import run_recorded
from tests.conftest import CONF, REPO
from tests.helpers.cli import run, start
from tests.helpers.runs import TINY

TRAIN = [*TINY, "model.base_channels=4", "trainer.max_epochs=1", "test=false"]


def snapshot(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, bytes]:
    """Every file under ``folder`` (but ``skip``ped top-level names) and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.relative_to(folder).parts[0] not in skip}


def finished_run(out: Path) -> Path:
    """A run folder as a completed run leaves it (contents are never read by the check)."""
    (out / "checkpoints").mkdir(parents=True)
    (out / "meta.json").write_text(json.dumps({"name": "unet_gray", "status": "completed"}))
    (out / "metrics.csv").write_text("epoch,step,val/loss\n0,3,0.5\n")
    for name in ("best.ckpt", "last.ckpt"):
        torch.save({"epoch": 0}, out / "checkpoints" / name)
    return out


def spawn(code: str, *args: str, **kw) -> subprocess.Popen:
    """A Python child importing this checkout's bloodseg; its stdout is a pipe of lines."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=REPO, env=env, text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, **kw)


def wait_for_line(proc: subprocess.Popen, want: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if want in line:
            return
        if not line and proc.poll() is not None:
            pytest.fail(f"child ended (rc {proc.returncode}) before printing {want!r}")
    proc.kill()
    pytest.fail(f"child did not print {want!r} within {timeout}s")


# -- 1: a run folder belongs to one run -------------------------------------------------------


def test_a_finished_runs_folder_is_refused_before_anything_is_written(hydra_cfg, tmp_path):
    cfg = hydra_cfg(tmp_path, [*TRAIN, "seed=1"])
    out = finished_run(Path(cfg.paths.output_dir))
    before = snapshot(out)
    with pytest.raises(rundir.RunFolderTaken) as info:
        run_recorded(cfg)
    msg = str(info.value)
    assert msg.startswith(f"{out}: holds another run (meta.json (status: completed), "
                          "checkpoints/best.ckpt, checkpoints/last.ckpt, metrics.csv)")
    assert "a new hydra.run.dir=<folder>" in msg
    assert f"pass ckpt_path={out}/checkpoints/last.ckpt" in msg
    assert snapshot(out) == before, "the refused run wrote into the finished run's folder"


def test_only_its_own_last_ckpt_resumes_into_a_used_folder(tmp_path):
    out = finished_run(tmp_path / "run")
    lock = rundir.claim(out, out / "checkpoints" / "last.ckpt")  # a resume: allowed
    assert (out / rundir.LOCK).read_text().startswith(f"pid {os.getpid()} on ")
    lock.release()
    assert not (out / rundir.LOCK).exists()
    for other in (out / "checkpoints" / "best.ckpt", tmp_path / "elsewhere" / "last.ckpt", None):
        with pytest.raises(rundir.RunFolderTaken, match="holds another run"):
            rundir.claim(out, other)
    # a failed run's folder too; one that never got past "running" holds nothing to mix
    for status, refused in (("failed", True), ("running", False)):
        fresh = tmp_path / status
        fresh.mkdir()
        rundir.write_meta(fresh, {"name": "x", "status": status})
        if refused:
            with pytest.raises(rundir.RunFolderTaken, match=r"status: failed.*no checkpoints/"):
                rundir.claim(fresh)
        else:
            rundir.claim(fresh).release()


def test_a_live_run_holds_its_folder_and_a_dead_ones_lock_is_taken_over(
        hydra_cfg, tmp_path, caplog):
    cfg = hydra_cfg(tmp_path, TRAIN)
    out = Path(cfg.paths.output_dir)
    holder = spawn("import sys, time; from bloodseg import rundir\n"
                   "rundir.claim(sys.argv[1]); print('locked', flush=True); time.sleep(120)",
                   str(out))
    try:
        wait_for_line(holder, "locked")
        with pytest.raises(rundir.RunFolderTaken) as info:
            run_recorded(cfg)  # a second run started while the first one lives
        assert str(info.value) == (
            f"{out}: another run (pid {holder.pid} on {socket.gethostname()}) is writing to "
            "this folder now, and two runs in one folder mix their files. Pass a new "
            "hydra.run.dir=<folder>, or wait until that run ends.")
        assert sorted(p.name for p in out.iterdir()) == [rundir.LOCK], "the refused run wrote"
    finally:
        holder.kill()
        holder.wait()
    # the kernel dropped the dead process's lock; its pid is still in the file
    with caplog.at_level(logging.WARNING, logger="bloodseg.rundir"):
        lock = rundir.claim(out)
    assert f"taking over the lock of pid {holder.pid} on" in caplog.text
    assert (out / rundir.LOCK).read_text().startswith(f"pid {os.getpid()} ")
    lock.release()


@pytest.mark.slow
def test_two_runs_started_at_once_then_a_third_into_the_finished_folder(tmp_path):
    out = tmp_path / "run"
    args = [*TRAIN, f"paths.data_dir={tmp_path / 'data'}", f"hydra.run.dir={out}"]
    procs = [start("bloodseg.cli.train", [*args, f"seed={seed}"], tmp_path,
                   env={"OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for seed in (1, 2)]  # two processes: the lock is between them
    outputs = [p.communicate(timeout=300) for p in procs]
    results = [(p.returncode, out_, err) for p, (out_, err) in zip(procs, outputs)]
    assert sorted(rc for rc, _, _ in results) == [0, 2], results
    refused = next(err for rc, _, err in results if rc == 2)
    assert f"error: {out}: " in refused and "hydra.run.dir=<folder>" in refused
    assert "another run (pid" in refused or "holds another run" in refused
    assert "Traceback" not in refused
    # one run's files, none of the other's
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert json.loads((out / "meta.json").read_text())["status"] == "completed"
    assert not (out / "error.txt").exists() and not (out / rundir.LOCK).exists()

    before = snapshot(out, skip=(".hydra", "train.log"))
    third = run("bloodseg.cli.train", [*args, "seed=3"], tmp_path, in_process=True)
    assert third.returncode == 2, third.stderr
    assert f"ckpt_path={out}/checkpoints/last.ckpt" in third.stderr
    assert "holds another run" in third.stderr
    # Hydra itself rewrites .hydra/ and opens train.log before the task starts
    assert snapshot(out, skip=(".hydra", "train.log")) == before


# -- 2: checkpoints are written atomically; failures are recorded even on a full disk ---------


@pytest.mark.parametrize("trainer", sorted(p.stem for p in (CONF / "trainer").glob("*.yaml")),
                         ids=lambda name: f"trainer={name}")  # not "gpu": the GPU-only mark
def test_every_trainer_config_writes_checkpoints_atomically(hydra_cfg, tmp_path, trainer):
    cfg = hydra_cfg(tmp_path, [f"trainer={trainer}"])
    assert [type(p) for p in instantiate(cfg.trainer.plugins)] == [AtomicCheckpointIO]
    if trainer == "cpu":  # the others need GPUs to build; the plugin list is the same
        built = instantiate(cfg.trainer, logger=False)
        assert isinstance(built.strategy.checkpoint_io, AtomicCheckpointIO)


class FullDisk:
    """``os.fdopen`` whose files write half of what they are given and then raise ENOSPC,
    like a disk filling up mid-write; ``only`` limits it to paths containing that text."""

    def __init__(self, monkeypatch, only: str = "") -> None:
        self.real, self.only, self.hits = os.fdopen, only, []
        monkeypatch.setattr(os, "fdopen", self)

    def __call__(self, fd, *args, **kwargs):
        f = self.real(fd, *args, **kwargs)
        name = os.readlink(f"/proc/self/fd/{fd}")
        if self.only in name:
            real_write = f.write

            def write(data):
                self.hits.append(name)
                real_write(bytes(data)[: len(data) // 2])
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

            f.write = write
        return f


def test_full_disk_mid_checkpoint_keeps_the_old_file_and_names_the_new(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "best.ckpt"
    writer = AtomicCheckpointIO()
    writer.save_checkpoint({"epoch": 1, "w": torch.ones(1000)}, path)
    old = path.read_bytes()
    disk = FullDisk(monkeypatch)
    with pytest.raises(OSError) as info:
        writer.save_checkpoint({"epoch": 2, "w": torch.zeros(1000)}, path)
    assert disk.hits, "the save never reached the disk"
    assert info.value.errno == errno.ENOSPC
    assert str(info.value) == (f"[Errno 28] {path}: No space left on device; free space on "
                               "that disk or write to another folder")
    assert path.read_bytes() == old and os.listdir(path.parent) == ["best.ckpt"]


@pytest.mark.slow  # trains to its first checkpoint
def test_a_failing_checkpoint_write_fails_the_run_with_the_files_named(
        hydra_cfg, tmp_path, monkeypatch):
    cfg = hydra_cfg(tmp_path, TRAIN)
    out = Path(cfg.paths.output_dir)
    FullDisk(monkeypatch, only=".ckpt.")  # the checkpoint's temp file: the big write
    with pytest.raises(OSError) as info:
        run_recorded(cfg)
    assert info.value.errno == errno.ENOSPC and f"{out}/checkpoints/" in str(info.value)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["status"] == "failed"
    assert meta["error"].startswith(f"OSError: [Errno 28] {out}/checkpoints/")
    assert "No space left on device" in (out / "error.txt").read_text()
    assert not list((out / "checkpoints").iterdir()), "a partial checkpoint was left"
    assert not (out / rundir.LOCK).exists()


@pytest.mark.slow  # trains to its first checkpoint
def test_when_the_disk_stays_full_the_runs_own_error_still_surfaces(
        hydra_cfg, tmp_path, monkeypatch, caplog):
    cfg = hydra_cfg(tmp_path, TRAIN)
    out = Path(cfg.paths.output_dir)
    disk = FullDisk(monkeypatch, only=".ckpt.")

    def everything_fails_from_the_first_checkpoint_on(fd, *args, **kwargs):
        if disk.hits:
            disk.only = ""
        return disk(fd, *args, **kwargs)

    monkeypatch.setattr(os, "fdopen", everything_fails_from_the_first_checkpoint_on)
    with caplog.at_level(logging.ERROR), pytest.raises(OSError) as info:
        run_recorded(cfg)
    # the checkpoint's error, not the one from writing error.txt about it
    assert f"{out}/checkpoints/" in str(info.value)
    assert f"could not record the failure in {out}: [Errno 28] {out}/error.txt" in caplog.text
    assert f"could not record the failure in {out}: [Errno 28] {out}/meta.json" in caplog.text


CHILD_SAVE = """
import os, sys, time, torch
from bloodseg.checkpoint_io import AtomicCheckpointIO
path, writer = sys.argv[1], AtomicCheckpointIO()
writer.save_checkpoint({"epoch": 1, "w": torch.ones(50_000)}, path)
real = os.fdopen

def stalling(fd, *args, **kwargs):
    f = real(fd, *args, **kwargs)
    def write(data):
        f.raw.write(bytes(data)[: len(data) // 2])
        print("mid-write", flush=True)
        time.sleep(120)
    f.write = write
    return f

os.fdopen = stalling
writer.save_checkpoint({"epoch": 2, "w": torch.zeros(50_000)}, path)
"""


def test_a_kill_mid_checkpoint_leaves_the_old_checkpoint_whole(tmp_path):
    """A SIGKILL and a Ctrl+C, each to a writer stalled halfway through a checkpoint (the two
    children start at once: each spends seconds importing torch)."""
    children = {}
    try:
        for sig in (signal.SIGKILL, signal.SIGINT):
            path = tmp_path / sig.name / "checkpoints" / "last.ckpt"
            children[sig] = path, spawn(CHILD_SAVE, str(path), stderr=subprocess.DEVNULL)
        for sig, (path, child) in children.items():
            wait_for_line(child, "mid-write")
            temps = list(path.parent.glob(".last.ckpt.*.tmp"))
            assert len(temps) == 1 and 0 < temps[0].stat().st_size  # half of the new one
            child.send_signal(sig)
            assert child.wait(timeout=30) != 0
            ckpt = torch.load(path, weights_only=True)
            assert ckpt["epoch"] == 1 and torch.equal(ckpt["w"], torch.ones(50_000))
            # SIGINT lets the writer remove its temp file; after a SIGKILL the next claim does
            assert [t.exists() for t in temps] == [sig == signal.SIGKILL], sig.name
            rundir.claim(path.parent.parent, path).release()
            assert os.listdir(path.parent) == ["last.ckpt"]
    finally:
        for _, child in children.values():
            if child.poll() is None:
                child.kill()
                child.wait()


def unshare_tmpfs() -> list[str]:
    """``unshare`` + ``mount`` prefix that runs a command with a 1 MiB tmpfs at $FULL (a
    private mount namespace: nothing outlives the command); skips where that is not allowed."""
    prefix = ["unshare", "-rm", "sh", "-c",
              'mkdir -p "$FULL" && mount -t tmpfs -o size=1m tmpfs "$FULL" && exec "$@"', "sh"]
    if shutil.which("unshare") is None:
        pytest.skip("no unshare here to mount a small tmpfs")
    probe = subprocess.run([*prefix, "true"], env={**os.environ, "FULL": "/tmp/bloodseg-probe"},
                           capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {probe.stderr.decode().strip()}")
    return prefix


CHILD_FULL = """
import errno, json, os, sys, torch
from pathlib import Path
from bloodseg import rundir
from bloodseg.checkpoint_io import AtomicCheckpointIO
out = Path(os.environ["FULL"])
path = out / "checkpoints" / "best.ckpt"
writer = AtomicCheckpointIO()
writer.save_checkpoint({"epoch": 1, "w": torch.ones(50_000)}, path)  # 200 kB: fits
try:
    writer.save_checkpoint({"epoch": 2, "w": torch.zeros(500_000)}, path)  # 2 MB: does not
    result = {"error": None}
except OSError as err:
    result = {"errno": err.errno, "error": str(err)}
result["old"] = torch.load(path, weights_only=True)["epoch"]
result["files"] = sorted(os.listdir(path.parent))
rundir.write_meta(out, {"status": "failed"})  # small files still fit: nothing was left behind
print(json.dumps(result))
"""


def test_a_really_full_disk_keeps_the_old_checkpoint(tmp_path):
    prefix = unshare_tmpfs()
    env = {**os.environ, "FULL": str(tmp_path / "small"), "PYTHONPATH": str(REPO)}
    proc = subprocess.run([*prefix, sys.executable, "-c", CHILD_FULL], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.splitlines()[-1])
    path = tmp_path / "small" / "checkpoints" / "best.ckpt"
    assert result == {"errno": errno.ENOSPC, "old": 1, "files": ["best.ckpt"], "error": (
        f"[Errno 28] {path}: No space left on device; free space on that disk or write to "
        "another folder")}


@pytest.mark.slow
def test_ctrl_c_during_training_records_the_interruption(tmp_path):
    out = tmp_path / "run"
    proc = start("bloodseg.cli.train", [
        *TRAIN, "trainer.max_epochs=50", "data.synthetic.n_train=40",
        f"paths.data_dir={tmp_path / 'data'}", f"hydra.run.dir={out}"], tmp_path,
        env={"OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not (out / "checkpoints" / "last.ckpt").is_file():
        assert proc.poll() is None and time.monotonic() < deadline, "no epoch finished"
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 128 + signal.SIGINT
    meta = json.loads((out / "meta.json").read_text())
    assert meta["status"] == "interrupted" and meta["reason"] == "KeyboardInterrupt"
    assert "ckpt_path=" in meta["resume"] and "last.ckpt" in meta["resume"]
    assert rundir.read_error(out) is None  # nothing failed
    assert not (out / rundir.LOCK).exists()
    for ckpt in (out / "checkpoints").iterdir():
        assert torch.load(ckpt, weights_only=True)["epoch"] >= 0, ckpt


# -- 3: run text in the README is shown, never rendered ---------------------------------------

EVIL = ("x<script>alert(1)</script> <img src=x onerror=alert(2)> [click](javascript:alert(3))"
        "\n<!-- demo:end -->\n# pwned | `tick` *em* ~~s~~ $x$ &amp; \\")


class Tags(HTMLParser):
    """The tags, attributes and text of rendered Markdown."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.comments: list[str] = []
        self.text = ""
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_comment(self, data):
        self.comments.append(data)

    def handle_data(self, data):
        self.text += data


def render(markdown: str) -> Tags:
    """Markdown -> HTML as GitHub renders it before sanitizing (raw HTML passes through)."""
    markdown_it = pytest.importorskip("markdown_it")
    md = markdown_it.MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
    return Tags(md.render(markdown))


def hostile_runs(root: Path) -> Path:
    from tests.test_report import make_run

    run = make_run(root / "evil", EVIL, experiment=None, model="<img src=x onerror=alert(4)>",
                   color=EVIL, dice=0.8, data_kind="<script>alert(5)</script>")
    meta = json.loads((run / "meta.json").read_text())
    meta.update(optimizer={"_target_": "torch.optim.<b>Adam</b>\n<!-- demo:begin -->",
                           "lr": 1e-3},
                scheduler={"_target_": "[s](javascript:alert(7))"}, train_time_s="<i>8</i>",
                params="many", epochs_run="<u>9</u>", batch_size=[4])
    (run / "meta.json").write_text(json.dumps(meta))
    failed = root / "fail`\n<!-- demo:end -->"
    failed.mkdir()
    (failed / "meta.json").write_text(json.dumps(
        {"name": "f", "status": "failed", "error": "boom\n<!-- demo:end -->\n<script>x</script>"}))
    running = root / "<b>running"
    running.mkdir()
    (running / "meta.json").write_text(json.dumps({"name": "r", "status": "running"}))
    return root


def test_hostile_run_text_is_shown_never_rendered(tmp_path):
    from bloodseg.cli.report import main
    from bloodseg.report.markdown import one_line

    runs = hostile_runs(tmp_path / "runs")
    begin, end = "<!-- demo:begin -->", "<!-- demo:end -->"
    head, tail = "# Project\n\nIntro.\n\n", "\n\n## License\nMIT\n"
    readme = tmp_path / "README.md"
    readme.write_text(f"{head}{begin}\nold\n{end}{tail}")
    out = tmp_path / "figures"
    for _ in range(2):  # a rewrite, and one of its own output: one marker pair, the rest alone
        assert main([str(runs), "--out", str(out), "--readme", str(readme),
                     "--section", "demo"]) == 0
        text = readme.read_text()
        lines = text.splitlines()
        assert lines.count(begin) == 1 and lines.count(end) == 1
        assert text.startswith(f"{head}{begin}\n") and text.endswith(f"\n{end}{tail}")
    for doc in (text, (out / "results.md").read_text()):
        page = render(doc)
        own = [" demo:begin ", " demo:end "] if doc is text else []  # the README's markers
        assert page.comments == own, "run text became an HTML comment"
        assert {tag for tag, _ in page.tags} <= {
            "h1", "h2", "h3", "p", "strong", "code", "ul", "li", "table", "thead", "tbody", "tr",
            "th", "td", "img"}, page.tags
        for tag, attrs in page.tags:
            assert not any(name.startswith("on") for name in attrs), (tag, attrs)
            if tag == "img":
                assert attrs["src"].endswith(".png") and (out.name in attrs["src"]
                                                          or doc is not text)
        # ... and the text is there as written, on one line
        assert one_line(EVIL) in page.text
        assert "<script>alert(5)</script>" in page.text and "boom <!-- demo:end -->" in page.text
    shown = render(text).text
    assert "optimizer: <b>Adam</b> <!-- demo:begin -->, lr = 0.001" in shown
    assert "scheduler: [s](javascript:alert(7))" in shown


def test_a_readme_whose_markers_multiplied_is_refused_not_made_worse(tmp_path):
    from bloodseg.report import update_readme
    from bloodseg.report.readme import replace_section

    readme = tmp_path / "README.md"
    broken = "# T\n<!-- demo:begin -->\na\n<!-- demo:end -->\nb\n<!-- demo:end -->\n"
    readme.write_text(broken)
    with pytest.raises(ValueError) as info:
        update_readme(readme, tmp_path, pd.DataFrame({"experiment": ["x"]}), section="demo")
    assert str(info.value) == (
        f"{readme}: the demo section needs one line '<!-- demo:begin -->' followed by one line "
        "'<!-- demo:end -->'; found '<!-- demo:begin -->' on line(s) 2 and '<!-- demo:end -->' "
        "on line(s) 4, 6. Delete the extra lines (and what a broken rewrite left between "
        "them), then run bloodseg-report again")
    assert readme.read_text() == broken
    # a marker mentioned inside a line is prose, not a marker; a body holding one is refused
    readme.write_text("Put `<!-- demo:end -->` last.\n<!-- demo:begin -->\n<!-- demo:end -->\n")
    with pytest.raises(ValueError, match="refusing to write a demo section holding the marker "
                                         "line '<!-- results:end -->'"):
        replace_section(readme, "demo", "a\n<!-- results:end -->\nb")
    replace_section(readme, "demo", "fine")
    assert readme.read_text() == ("Put `<!-- demo:end -->` last.\n<!-- demo:begin -->\nfine\n"
                                  "<!-- demo:end -->\n")


# -- 4: errors that name the file -------------------------------------------------------------


@pytest.mark.parametrize("damage", [b"0" + b",9" * 30 + b"\n", b"\"0.5\n", bytes(range(128, 256))],
                         ids=["extra fields", "open quote", "binary"])
def test_a_damaged_metrics_csv_names_the_file_and_the_fix(tmp_path, capsys, damage):
    from bloodseg.cli.report import main
    from bloodseg.report import load_run
    from tests.test_report import make_run

    run = make_run(tmp_path / "runs" / "0", "r", experiment=None, model="unet", color="gray",
                   dice=0.8)
    metrics = run / "metrics.csv"
    metrics.write_bytes(metrics.read_bytes() + damage)
    with pytest.raises(rundir.RunDirError) as info:
        load_run(run)
    msg = str(info.value)
    assert msg.startswith(f"{metrics}: damaged, not a readable CSV (")
    assert msg.endswith("Fix or delete its broken lines, or run the run again into a new "
                        "folder (hydra.run.dir=<folder>)")
    assert main([str(tmp_path / "runs"), "--out", str(tmp_path / "f")]) == 1
    assert f"bloodseg-report: warning: skipped: {metrics}: damaged" in capsys.readouterr().err


def test_a_full_disk_while_logging_names_metrics_csv(tmp_path, monkeypatch):
    from pytorch_lightning.loggers.csv_logs import ExperimentWriter

    from bloodseg.loggers import CSVLogger

    def full(self):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    logger = CSVLogger(tmp_path, name="", version="")
    logger.log_metrics({"loss": 1.0}, step=0)
    monkeypatch.setattr(ExperimentWriter, "save", full)
    with pytest.raises(OSError) as info:
        logger.save()
    assert str(info.value) == (f"[Errno 28] {tmp_path / 'metrics.csv'}: No space left on "
                               "device; free space on that disk or write to another folder")


# -- 5: masks without cells or without background ---------------------------------------------


def masks_that_teach_nothing(root: Path) -> tuple[Path, Path]:
    """A tiny Kaggle-layout dataset with one all-0 and one all-255 training mask."""
    import cv2

    from tests.helpers.data import tiny_dataset, write_pair

    tiny_dataset(root, n_train=8)
    image = np.full((40, 60, 3), 200, np.uint8)
    write_pair(root, "train", "empty", image, np.zeros((40, 60), np.uint8))
    write_pair(root, "train", "full", image, np.full((40, 60), 255, np.uint8))
    assert cv2.imread(str(root / "train" / "mask" / "full.png")).min() == 255
    return root / "train" / "mask" / "empty.png", root / "train" / "mask" / "full.png"


def test_verify_warns_about_masks_without_cells_or_background(tmp_path, capsys):
    from bloodseg.cli.data import main as data_cli
    from bloodseg.data.bbbc041seg import verify

    empty, full = masks_that_teach_nothing(tmp_path / "d")
    report = verify(tmp_path / "d")
    assert report.ok and report.problems == []
    assert report.warnings == [
        f"{empty}: mask has no cells (every pixel is 0); if its image shows cells the mask is "
        "wrong: re-export it, or remove the pair",
        f"{full}: mask is all foreground (every pixel is 255): no background, no cell borders; "
        "an inverted or blank export? Fix it, or remove the pair"]
    assert data_cli(["verify", str(tmp_path / "d")]) == 0  # suspicious, not broken
    shown = capsys.readouterr().out
    assert f"2 warning(s):\n  - {empty}: mask has no cells" in shown
    assert f"  - {full}: mask is all foreground" in shown and "no problems found" in shown


def test_training_warns_once_about_masks_that_teach_nothing(tmp_path, caplog):
    from bloodseg.data.datamodule import BloodCellDataModule

    empty, full = masks_that_teach_nothing(tmp_path / "d")
    dm = BloodCellDataModule(root=str(tmp_path / "d"), image_size=32, val_fraction=0.2,
                             expected_counts={}, decode_threads=1)
    with pytest.warns(UserWarning) as caught, caplog.at_level(logging.WARNING):
        dm.setup("fit")
        dm.setup("test")  # the test masks are fine: no second warning
    assert len(caught) == 1 and caplog.text.count("masks have no cells or no background") == 1
    msg = str(caught[0].message)
    assert msg.startswith(f"{tmp_path / 'd'}: 2 of 10 train masks have no cells or no "
                          "background; training goes on with them. List them all with "
                          f"`bloodseg-data verify {tmp_path / 'd'}`:")
    assert f"\n  {empty}: mask has no cells" in msg and f"\n  {full}: mask is all fore" in msg


# -- predict: check first, then write; nothing lost, nothing skipped silently -------------------


def _predict_cfg(tmp_path: Path, ckpt: Path, inputs: Path, out: Path, *extra: str):
    from tests.conftest import compose_cfg

    return compose_cfg(tmp_path / "hydra", [f"ckpt_path={ckpt}", f"input={inputs}",
                                            f"output={out}", *extra], config_name="predict")


def _run_predict(cfg):
    from hydra.core.global_hydra import GlobalHydra

    from bloodseg.prediction import predict

    try:
        return predict(cfg)
    finally:
        GlobalHydra.instance().clear()


def _images(folder: Path, names: list[str]) -> Path:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        img = np.full((64, 64, 3), 40, np.uint8)
        cv2.circle(img, (32, 32), 9, (200, 120, 160), -1)
        cv2.imwrite(str(folder / name), img)
    return folder


def test_overwrite_with_a_mistyped_checkpoint_keeps_the_earlier_results(trained_run, tmp_path):
    from bloodseg.io import CheckpointError

    ckpt = trained_run / "checkpoints" / "best.ckpt"
    inputs, out = _images(tmp_path / "in", ["a.png", "b.png"]), tmp_path / "out"
    _run_predict(_predict_cfg(tmp_path, ckpt, inputs, out))
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    for bad in (tmp_path / "typo.ckpt", tmp_path):  # missing, and a folder
        with pytest.raises(CheckpointError, match="typo.ckpt|checkpoint not found"):
            _run_predict(_predict_cfg(tmp_path, bad, inputs, out, "overwrite=true"))
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before  # checked before anything was touched


def test_overwrite_keeps_files_the_user_put_in_result_folders(trained_run, tmp_path):
    from bloodseg.prediction import OutputFolderError

    ckpt = trained_run / "checkpoints" / "best.ckpt"
    inputs, out = _images(tmp_path / "in", ["a.png"]), tmp_path / "out"
    _run_predict(_predict_cfg(tmp_path, ckpt, inputs, out))
    (out / "masks" / "my_notes.txt").write_text("mine")
    with pytest.raises(OutputFolderError, match=r"masks/my_notes.txt.*did not write"):
        _run_predict(_predict_cfg(tmp_path, ckpt, inputs, out, "overwrite=true"))
    assert (out / "masks" / "my_notes.txt").read_text() == "mine"
    (out / "masks" / "my_notes.txt").unlink()
    rows, _ = _run_predict(_predict_cfg(tmp_path, ckpt, inputs, out, "overwrite=true"))
    assert [r["file"] for r in rows] == ["a.png"]


def test_a_failure_mid_batch_leaves_the_earlier_results_and_no_partial_ones(
        trained_run, tmp_path, monkeypatch):
    from bloodseg import prediction as predict_module

    ckpt = trained_run / "checkpoints" / "best.ckpt"
    inputs, out = _images(tmp_path / "in", ["a.png", "b.png"]), tmp_path / "out"
    _run_predict(_predict_cfg(tmp_path, ckpt, inputs, out))
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    calls = []

    def full_disk(path, labels):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(predict_module, "write_label_tiff", full_disk)
    with pytest.raises(OSError, match="No space left"):
        _run_predict(_predict_cfg(tmp_path, ckpt, inputs, out, "overwrite=true",
                                  "predict.formats=[tiff]"))
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before


def test_a_name_too_long_for_the_file_system_is_shortened_and_mapped(trained_run, tmp_path):
    from bloodseg.prediction import MAX_STEM_BYTES

    ckpt = trained_run / "checkpoints" / "best.ckpt"
    long_name = "x" * 244 + ".png"
    inputs, out = _images(tmp_path / "in", [long_name, "short.png"]), tmp_path / "out"
    rows, failed = _run_predict(_predict_cfg(tmp_path, ckpt, inputs, out))
    assert not failed and len(rows) == 2
    row = next(r for r in rows if r["file"] == long_name)
    assert len(Path(row["output"]).stem.encode()) <= MAX_STEM_BYTES
    assert (out / "masks" / row["output"]).is_file()
    assert (out / "instances" / row["output"]).is_file()


def test_output_under_a_file_is_refused_before_the_model_runs(trained_run, tmp_path,
                                                              monkeypatch):
    from bloodseg import inference
    from bloodseg.prediction import OutputFolderError

    ran = []
    monkeypatch.setattr(inference.Predictor, "outputs",
                        lambda self, *a, **k: ran.append(1))
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputFolderError, match="is a file, not a folder"):
        _run_predict(_predict_cfg(tmp_path, trained_run / "checkpoints" / "best.ckpt",
                                  _images(tmp_path / "in", ["a.png"]),
                                  tmp_path / "file" / "out"))
    assert not ran


def test_dangling_links_and_folders_named_like_images_are_listed(trained_run, tmp_path):
    inputs = _images(tmp_path / "in", ["a.png"])
    (inputs / "gone.png").symlink_to(tmp_path / "nowhere.png")
    (inputs / "loop.png").symlink_to(inputs / "loop.png")
    (inputs / "x.png").mkdir()
    rows, failed = _run_predict(_predict_cfg(
        tmp_path, trained_run / "checkpoints" / "best.ckpt", inputs, tmp_path / "out"))
    assert [r["file"] for r in rows] == ["a.png"]
    text = "\n".join(failed)
    assert "gone.png: a link to nothing" in text and "loop.png: a link to nothing" in text
    assert "x.png: not a file" in text


def test_post_processing_that_does_not_fit_the_target_fails_before_training(hydra_cfg,
                                                                            tmp_path):
    from bloodseg.spec import SpecError
    from bloodseg.training import train

    cfg = hydra_cfg(tmp_path, [*TINY, "target=contour", "postprocess=binary"])
    with pytest.raises(SpecError, match="binary reads 1-channel outputs, but target contour "
                       "has 3; use postprocess=contour"):
        train(cfg)
    assert not (Path(cfg.paths.output_dir) / "checkpoints").exists()
