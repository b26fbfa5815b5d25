"""The Hydra configs accept every option the docs write, as the docs write it.

Every command line of ``python train.py`` / ``bloodseg-train``, ``bloodseg-predict``,
``bloodseg-evaluate``, ``bloodseg-tune`` and ``bloodseg-export`` written in README.md, docs/*.md
or the comments of conf/**/*.yaml (in code spans, code blocks or plain comment lines), and every
code span made only of overrides (``tune.metric=count_mae``), is composed with Hydra's compose
API against the root config its command uses (a bare span: against any root that takes it).
Placeholders (``<folder>``, ``...``) become a harmless value; ``hydra.*`` options, ``-m`` and
other flags are left out (they configure Hydra itself, not the job).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from tests.conftest import CONF, REPO
from tests.helpers.cli import run

#: the root config of each command (conf/<root>.yaml)
COMMANDS = {"train.py": "train", "bloodseg-train": "train", "bloodseg.train": "train",
            "bloodseg-predict": "predict", "bloodseg.predict": "predict",
            "bloodseg-evaluate": "evaluate", "bloodseg.evaluate": "evaluate",
            "bloodseg-tune": "tune", "bloodseg.tune": "tune",
            "bloodseg-export": "export", "bloodseg.export": "export"}
ROOTS = ("train", "predict", "evaluate", "tune", "export")
COMMAND = re.compile(r"(?<![\w./-])(?:(?:python3?\s+(?:-m\s+)?)?(?:\S*/)?(train\.py)"
                     r"|(?:python3?\s+-m\s+)(bloodseg\.(?:train|predict|evaluate|tune|export))\b"
                     r"|(bloodseg-(?:train|predict|evaluate|tune|export)))(?![\w.-])")
PLACEHOLDER = re.compile(r"<[^<>\n]*>")  # <folder>, <run>/checkpoints/best.ckpt
PH = "PLACEHOLDER"  # what a <placeholder> reads as until composing (no key is upper case)
OVERRIDE = re.compile(r"^(\+{1,2}|~)?([a-z_][\w.@/-]*)=(.*)$", re.S)  # lower case: no MAKE=x
SHELL_END = {"|", "||", "&&", ";", ">", ">>", "2>&1", "&"}
HARMLESS = "x"
#: written as option values but not options: names the docs mention as history
NOT_OPTIONS = {"postprocess=watershed": "the binary post-processing's old name (model files "
                                        "that say so still load); the docs say so"}


@dataclass(frozen=True)
class Doc:
    """One documented command (``root`` None: a bare span of overrides) and where it is."""

    where: str
    root: str | None
    overrides: tuple[str, ...]


# -- collecting --------------------------------------------------------------------------------


def doc_files() -> list[Path]:
    files = [REPO / "README.md", *sorted((REPO / "docs").glob("**/*.md"))]
    return [f for f in files if f.is_file()]


def markdown_snippets(text: str) -> list[tuple[int, str]]:
    """(line, text) of every fenced code block line and every inline code span."""
    out, fence = [], None
    lines = text.splitlines()
    prose: list[tuple[int, str]] = []
    joined = ""
    for i, line in enumerate(lines, 1):
        if re.match(r"^\s*(```|~~~)", line):
            fence = None if fence else line.strip()[:3]
            continue
        if fence:
            joined += line.rstrip().removesuffix("\\") + " "
            if not line.rstrip().endswith("\\"):
                out.append((i, joined))
                joined = ""
        else:
            prose.append((i, line))
    # code spans may wrap over a line break inside a paragraph
    starts = []
    text_prose = ""
    for i, line in prose:
        starts.append((len(text_prose), i))
        text_prose += line + "\n"
    for m in re.finditer(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", text_prose, re.S):
        line = max(n for pos, n in starts if pos <= m.start())
        out.append((line, m.group(2).replace("\n", " ")))
    return out


def yaml_snippets(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every comment of a YAML file: its code spans, and the comment itself
    (commands are often written bare: ``#   python train.py experiment=count_real``)."""
    out = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        m = re.search(r"(?:^|\s)#(.*)$", line)
        if not m:
            continue
        comment = m.group(1)
        spans = re.findall(r"`([^`]+)`", comment)
        out.extend((i, s) for s in spans)
        bare = re.sub(r"`[^`]*`", " ", comment)
        if COMMAND.search(bare):
            out.append((i, bare))
    return out


def tokens(text: str) -> list[str]:
    text = PLACEHOLDER.sub(PH, text).replace("…", "...")
    try:
        return shlex.split(text, comments=True)
    except ValueError:  # an unbalanced quote: prose, not a command
        return []


def command_overrides(words: list[str]) -> list[str]:
    """The ``key=value`` words of one command line, up to the end of the shell command."""
    out = []
    for word in words:
        if word in SHELL_END or word.startswith(("#", ">")):
            break
        if word.startswith("[") and word.endswith("]") and "=" in word:
            word = word[1:-1]  # an optional override: [data.root=...]
        if word.startswith("-") or "=" not in word:
            continue  # -m, --cfg job, --help, and words such as `...` between overrides
        if not OVERRIDE.match(word):
            break  # prose after the command: "python train.py debug=fdr (model=...)."
        out.append(word)
    return out


def snippet_docs(where: str, text: str) -> list[Doc]:
    docs = []
    found = list(COMMAND.finditer(text))
    for k, m in enumerate(found):
        name = next(g for g in m.groups() if g)
        end = found[k + 1].start() if k + 1 < len(found) else len(text)
        words = command_overrides(tokens(text[m.end():end]))
        if words:
            docs.append(Doc(where, COMMANDS[name], tuple(words)))
    if not found:  # a span of overrides only: `tune.metric=count_mae`, `model=attunet loss=dice`
        words = tokens(text)
        if words and all(OVERRIDE.match(w) for w in words):
            docs.append(Doc(where, None, tuple(words)))
    return docs


def documented() -> list[Doc]:
    docs: list[Doc] = []
    for path in doc_files():
        for line, text in markdown_snippets(path.read_text()):
            docs += snippet_docs(f"{path.relative_to(REPO)}:{line}", text)
    for path in sorted(CONF.glob("**/*.yaml")):
        for line, text in yaml_snippets(path):
            docs += snippet_docs(f"{path.relative_to(REPO)}:{line}", text)
    return docs


# -- composing ---------------------------------------------------------------------------------


def is_group(key: str) -> bool:
    return (CONF / key.replace(".", "/")).is_dir()


def alternatives(word: str) -> list[str]:
    """``format=onnx|torchscript`` -> both; ``weights=x|ckpt_path=x`` -> both."""
    if "|" not in word or word.split("=", 1)[1].startswith(("'", '"', "{", "[")):
        return [word]
    out: list[str] = []
    for part in word.split("|"):
        if "=" in part or not out:
            out.append(part)
        else:
            out.append(f"{out[-1].split('=', 1)[0]}={part}")
    return out


def composable(words: tuple[str, ...]) -> list[list[str]]:
    """The override lists to compose for one command: placeholders made harmless (dropped for
    a config group: no option is called ``x``), hydra.* left out, alternatives and sweeps
    (``model=unet,attunet``) expanded into one list per value."""
    lists: list[list[str]] = [[]]
    parser = OverridesParser.create()
    for word in words:
        if word in NOT_OPTIONS:
            continue
        choices = []
        for alt in alternatives(word):
            m = OVERRIDE.match(alt)
            if not m:
                raise AssertionError(f"not an override: {alt!r}")
            prefix, key, value = m.groups()
            if key == "hydra" or key.startswith(("hydra.", "hydra/")) or PH in key:
                continue  # Hydra's own settings; a key named by a placeholder
            if value in ("", "...") or PH in value:  # `init_from=`, data.root=<folder>
                if is_group(key):
                    continue  # experiment=<name>: no option is called x
                value = HARMLESS if value in ("", "...") else value.replace(PH, HARMLESS)
                alt = f"{prefix or ''}{key}={value}"
            override = parser.parse_override(alt)
            if override.is_sweep_override():
                choices += [f"{alt.split('=', 1)[0]}={v}"
                            for v in override.sweep_string_iterator()]
            else:
                choices.append(alt)
        if not choices:
            continue
        # the first choice in every list; each other choice once, with the others' first
        lists = [[*lst, choices[0]] for lst in lists] + [[*lists[0], c] for c in choices[1:]]
    return lists


def compose_error(root: str, overrides: list[str]) -> str | None:
    """None when ``overrides`` compose with ``conf/<root>.yaml``, else why not (inside an
    initialised Hydra)."""
    try:
        compose(config_name=root, overrides=overrides)
    except Exception as e:  # noqa: BLE001 - Hydra's own errors, reported
        return f"{type(e).__name__}: {str(e).strip().splitlines()[0]}"
    return None


def key_of(override: str) -> str:
    return OVERRIDE.match(override).group(2)


def clashes(key: str, keys: set[str]) -> bool:
    return any(k == key or k.startswith(f"{key}.") or key.startswith(f"{k}.") for k in keys)


def batches(singles: list[str]) -> list[list[str]]:
    """Single options in few compose calls (composing train is ~0.2 s): group choices
    together, value options together (on the default groups), never two of one key."""
    out: list[tuple[bool, set[str], list[str]]] = []
    for override in singles:
        key = key_of(override)
        group = is_group(key)
        batch = next((b for b in out if b[0] == group and not clashes(key, b[1])), None)
        if batch is None:
            batch = (group, set(), [])
            out.append(batch)
        batch[1].add(key)
        batch[2].append(override)
    return [b[2] for b in out]


def composing(root: str, batch: list[str]) -> set[str]:
    """The options of ``batch`` that compose with ``root``: options that compose together
    compose alone, and a batch that fails is halved until the failures are found."""
    if compose_error(root, batch) is None:
        return set(batch)
    if len(batch) == 1:
        return set()
    half = len(batch) // 2
    return composing(root, batch[:half]) | composing(root, batch[half:])


def group_choices(overrides: tuple[str, ...]) -> list[list[str]]:
    """``model.encoder=x`` written alone means "with a model that has it": the override lists
    with each option of its group chosen first (train.py's groups)."""
    group = key_of(overrides[0]).split(".")[0]
    if "." not in key_of(overrides[0]) or not is_group(group) or any(
            key_of(o) == group for o in overrides):
        return []
    return [[f"{group}={f.stem}", *overrides] for f in sorted((CONF / group).glob("*.yaml"))]


def has(tree: dict, key: str) -> bool:
    for part in key.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return False
        tree = tree[part]
    return True


def check(docs: list[Doc], conf: Path = CONF) -> list[str]:
    """The documented commands that do not compose with the configs in ``conf``, each with
    where it is written; a bare span of overrides (no command) passes when any command
    takes it."""
    where: dict[tuple[str | None, tuple[str, ...]], list[str]] = {}
    for doc in docs:
        for overrides in composable(doc.overrides):
            if overrides:
                where.setdefault((doc.root, tuple(overrides)), []).append(doc.where)
    errors: dict[tuple[str | None, tuple[str, ...]], str | None] = {}
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
            plain = {r: OmegaConf.to_container(compose(config_name=r)) for r in ROOTS}

            def home(override: str) -> str:  # the root a bare option is tried with first
                key = key_of(override)
                return next((r for r in ROOTS if not is_group(key) and has(plain[r], key)),
                            ROOTS[0])

            def alone(root: str, override: str) -> bool:  # False: cannot compose alone
                prefix, key = OVERRIDE.match(override).group(1, 2)
                return bool(prefix) or is_group(key) or has(plain[root], key)

            for root in ROOTS:  # single options first, in batches
                # (a value option whose key the root lacks, e.g. model.encoder=x, is left to
                # the tries below: in a batch it only makes the batch fail and halve)
                singles = sorted({ov[0] for r, ov in where if len(ov) == 1 and (
                    r == root or (r is None and home(ov[0]) == root)) and alone(root, ov[0])})
                for batch in batches(singles):
                    for ok in composing(root, batch):
                        errors.update({(r, (ok,)): None for r in (root, None)})
            for (root, overrides) in where:
                if (root, overrides) in errors:
                    continue
                tries = [(r, list(overrides)) for r in ([root] if root else ROOTS)]
                if root is None:  # right after the first try (whose error is the one shown)
                    tries[1:1] = [(ROOTS[0], o) for o in group_choices(overrides)]
                first = None
                for r, o in tries:
                    error = compose_error(r, o)
                    if error is None:
                        first = None
                        break
                    first = first or error
                errors[(root, overrides)] = first
    finally:
        GlobalHydra.instance().clear()
    return [f"{', '.join(w)}: {root or 'any command'} {' '.join(ov)} -> {errors[(root, ov)]}"
            for (root, ov), w in where.items() if errors[(root, ov)]]


# -- tests -------------------------------------------------------------------------------------


@pytest.fixture
def hydra_conf():
    """Hydra initialised on conf/, for compose()."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield
    GlobalHydra.instance().clear()


def test_the_docs_name_commands_to_check():
    docs = documented()
    roots = {d.root for d in docs}
    assert {"train", "predict", "evaluate", "tune", "export"} <= roots, roots
    assert len(docs) > 20


def test_every_documented_option_composes():
    failures = check(documented())
    assert not failures, "documented options that do not compose:\n" + "\n".join(failures)


def test_the_collector_reads_commands_as_the_docs_write_them():
    text = ("Run `python train.py experiment=count_real data.root=<folder> tune.max_images=4` "
            "or\n`bloodseg-export weights=<name>|ckpt_path=<file> format=onnx|bundle "
            "output=<file>`; sweep `python train.py -m model=unet,attunet hydra/launcher=joblib`"
            " and set `tune.metric=count_mae`; `MAKE_VAR=1` is not an option.\n"
            "```\nbloodseg-evaluate ckpt_path=x \\\n  [data.root=...] predict.tta=d4  # note\n"
            "```\n")
    docs = [d for line, s in markdown_snippets(text) for d in snippet_docs(f"t:{line}", s)]
    got = {(d.root, d.overrides) for d in docs}
    assert got == {
        ("train", ("experiment=count_real", f"data.root={PH}", "tune.max_images=4")),
        ("export", (f"weights={PH}|ckpt_path={PH}", "format=onnx|bundle", f"output={PH}")),
        ("train", ("model=unet,attunet", "hydra/launcher=joblib")),
        (None, ("tune.metric=count_mae",)),
        ("evaluate", ("ckpt_path=x", "data.root=...", "predict.tta=d4")),
    }, got
    export = next(d for d in docs if d.root == "export")
    assert composable(export.overrides) == [
        ["weights=x", "format=onnx", "output=x"], ["ckpt_path=x", "format=onnx", "output=x"],
        ["weights=x", "format=bundle", "output=x"]]
    sweep = next(d for d in docs if "model=unet,attunet" in d.overrides)
    assert composable(sweep.overrides) == [["model=unet"], ["model=attunet"]]  # no hydra/
    assert composable(("experiment=PLACEHOLDER", "data.root=...", "init_from=",
                       "callbacks.PLACEHOLDER=null", "postprocess=watershed")) == [
        ["data.root=x", "init_from=x"]]  # no option is called x; a key must be named


def test_an_option_the_config_lacks_fails_the_check():
    """What the check catches: before train.yaml declared the tune block, the documented
    ``tune.max_images=4`` was refused (it wanted ``+tune.max_images``)."""
    docs = [Doc("t:1", "train", ("experiment=count_real", "tune.no_such_key=4")),
            Doc("t:2", None, ("predict.no_such_key=1",)),
            Doc("t:3", "export", ("predict.tta=true",))]
    failures = check(docs)
    assert [f.split(":")[1] for f in failures] == ["1", "2", "3"], failures
    assert not check([Doc("t:4", "train", ("experiment=count_real", "tune.max_images=4"))])


def test_the_check_fails_on_the_old_undeclared_tune_block(tmp_path):
    """train.yaml once had ``tune: null``: the documented ``tune.max_images=4`` was refused."""
    import shutil

    conf = shutil.copytree(CONF, tmp_path / "conf")
    train = (conf / "train.yaml").read_text()
    block = re.search(r"^tune:\n(  .*\n)+", train, re.M)
    (conf / "train.yaml").write_text(train.replace(block.group(0), "tune: null\n"))
    doc = Doc("t:1", "train", ("experiment=count_real", "tune.max_images=4"))
    failures = check([doc], conf)
    assert len(failures) == 1 and "Could not override 'tune.max_images'" in failures[0]
    assert not check([doc])


@pytest.mark.parametrize("root", ["train", "predict", "evaluate", "tune"])
def test_predict_block_is_one_block_everywhere(root, hydra_conf):
    """conf/predict/default.yaml in every command that runs the network; predict.tta takes
    a bool or a mode name."""
    cfg = compose(config_name=root)
    keys = {"mode", "scale", "overlap", "batch_size", "tta", "backend", "prefetch", "device",
            "postprocess_at"}
    assert set(cfg.predict) == keys | ({"formats"} if root == "predict" else set())
    assert cfg.predict.tta is False and cfg.predict.mode == "auto"
    for tta, want in (("true", True), ("flips", "flips"), ("d4", "d4"), ("false", False)):
        assert compose(config_name=root, overrides=[f"predict.tta={tta}"]).predict.tta == want


def test_tuning_is_off_for_train_unless_a_config_turns_it_on(hydra_conf, capsys):
    from bloodseg.cli.tune import main as tune
    from bloodseg.tuning import TuneOptions

    def spec(root, *overrides):
        cfg = compose(config_name=root, overrides=list(overrides))
        options = TuneOptions.from_config(cfg.tune)
        return None if options is None else options.to_dict()

    assert spec("train") is None
    assert spec("train", "tune.max_images=4") is None  # declared, still off
    assert spec("train", "tune=null") is None
    assert spec("train", "experiment=pretrain_synthetic", "tune.max_images=4") is None
    on = {"split": "train", "metric": "f1", "grid": None, "max_images": 50}
    assert spec("train", "tune={split:train,metric:f1}") == on  # README's spelling
    assert spec("train", "tune.split=train") == on
    assert spec("train", "profile=demo") == on
    assert spec("train", "experiment=count_real", "tune.max_images=4",
                "tune.metric=count_mae", "tune.grid={marker_threshold:[0.4,0.5]}") == {
        **on, "max_images": 4, "metric": "count_mae", "grid": {"marker_threshold": [0.4, 0.5]}}
    assert spec("tune") == on  # bloodseg-tune always tunes
    with pytest.raises(SystemExit) as exit_:  # not silently the defaults
        tune(OmegaConf.create({"weights": "count_real", "tune": {"split": None}}))
    assert exit_.value.code == 2
    assert "split must be one of train, val" in capsys.readouterr().err
    with pytest.raises(ValueError, match="metric must be"):
        spec("train", "tune.metric=dice")  # checked even while off: fails before training


def test_train_cfg_job_prints_the_tune_override_without_training(tmp_path):
    proc = run(REPO / "train.py", ["experiment=count_real", "tune.max_images=4", "--cfg", "job"],
               tmp_path, env={"WANDB_MODE": "disabled"}, in_process=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "max_images: 4" in proc.stdout and "split: train" in proc.stdout
    assert not any(tmp_path.iterdir())  # nothing ran: no run folder, no logs
