"""Readable command-line errors for the Hydra entry points (quoting hints for overrides).

Hydra's override grammar rejects values with non-ASCII letters (``input=/data/dätä``), ``=``,
brackets, quotes, ``#``, ``~``, ``&`` or ``;`` unless the value is quoted, and reads an
unquoted comma (``input=/data/a,b``) as a sweep. Hydra then prints a lexer error
(``LexerNoViableAltException``) or "Ambiguous value" and exits 1, before the task function runs
and outside any ``try`` around it. :func:`check_overrides` parses the command line with Hydra's
own parser first and, for the override that fails, prints the fix::

    'input="/data/dätä"'

(the value quoted for Hydra, the whole override quoted for the shell), then exits 2.

Use it on a ``@hydra.main`` function, either as a decorator::

    @hydra_override_hints                    # outermost, above @hydra.main
    @hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
    def main(cfg: DictConfig) -> None: ...

or by calling :func:`run_hydra_main` from a plain entry point::

    def main() -> None:
        run_hydra_main(run)                  # run is the @hydra.main function
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn, TypeVar

from bloodseg.quoting import quoting_hint

F = TypeVar("F", bound=Callable[..., Any])

EXIT_USAGE = 2


@contextlib.contextmanager
def user_errors(*also: type[BaseException]) -> Iterator[None]:
    """A user's mistake raised inside (:data:`bloodseg.io.USER_ERRORS`, or one of ``also``):
    its one line on stderr and exit 2, no traceback (the message names the file and the fix)."""
    from bloodseg.io import USER_ERRORS

    try:
        yield
    except (*USER_ERRORS, *also) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None


def override_error_message(override: str, detail: str = "") -> str:
    """What to tell the user about an override Hydra cannot take as typed."""
    lines = [
        f"error: cannot use the command-line override {override!r}.",
        "Hydra needs quotes around values with non-ASCII letters or any of = , ( ) [ ] { } ' \" "
        "# ~ & ;",
        "and the shell needs quotes around the whole override. Type it as:",
        f"    {quoting_hint(override)}",
    ]
    if detail:
        lines.append(f"({detail})")
    return "\n".join(lines)


def _split_argv(argv: Sequence[str]) -> tuple[list[str], bool]:
    """Overrides and whether this is a multirun, parsed the way ``@hydra.main`` does."""
    try:
        from hydra._internal.utils import get_args_parser
    except ImportError:  # private in Hydra: without it, leave all checks to Hydra
        return [], False
    args, _ = get_args_parser().parse_known_args(list(argv))
    overrides = list(args.overrides or [])
    multirun = bool(args.multirun) or any(
        o.replace(" ", "").lstrip("+") in ("hydra.mode=MULTIRUN", "hydra.mode=multirun")
        for o in overrides)
    return overrides, multirun


def check_overrides(argv: Sequence[str] | None = None) -> None:
    """Exit 2 with a quoting hint when an override on the command line cannot work.

    Catches what Hydra's parser rejects (:class:`hydra.errors.OverrideParseException`) and, in
    a single run (no ``-m``), an unquoted comma in a value, which Hydra reads as a sweep.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ValueType
    from hydra.errors import OverrideParseException

    overrides, multirun = _split_argv(sys.argv[1:] if argv is None else argv)
    parser = OverridesParser.create()
    for override in overrides:
        try:
            parsed = parser.parse_overrides([override])[0]
        except OverrideParseException as err:
            _fail(override_error_message(err.override or override,
                                         f"Hydra: {err.message.splitlines()[0]}"))
        if not multirun and parsed.value_type == ValueType.SIMPLE_CHOICE_SWEEP:
            _fail(override_error_message(
                override, "an unquoted comma means a sweep; add -m if you meant to sweep"))


def _fail(message: str) -> NoReturn:
    print(message, file=sys.stderr)
    sys.exit(EXIT_USAGE)


def run_hydra_main(fn: Callable[[], Any], argv: Sequence[str] | None = None) -> Any:
    """Check the command line's overrides (see :func:`check_overrides`), then call ``fn()``."""
    check_overrides(argv)
    return fn()


def hydra_override_hints(fn: F) -> F:
    """Decorator for a ``@hydra.main`` function: checks overrides when called as a command.

    Calls with arguments (``main(cfg)``, e.g. from tests) go straight through.
    """
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not args and not kwargs:
            check_overrides()
        return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def model_options(cfg: Any, command: str, example: str) -> bool:
    """What every command that reads a model file checks before anything heavy loads:
    ``weights=list`` prints the shipped models (True: nothing else to do); a missing
    ``input=`` and a ``predict.*`` value outside its set exit 2 with one line and the fix."""
    from omegaconf import OmegaConf

    from bloodseg.options import OptionError, check_predict

    if cfg.get("weights") == "list":
        from bloodseg.weights import listing

        print(listing())
        return True
    if "input" in cfg.keys() and OmegaConf.is_missing(cfg, "input"):
        _fail(f"error: input= is missing: the image or folder to count, e.g.\n    {example}")
    if "output" in cfg.keys() and OmegaConf.is_missing(cfg, "output"):
        _fail(f"error: output= is missing: where to write the results, e.g.\n    {example}")
    try:
        check_predict(cfg.get("predict"))
    except OptionError as err:
        _fail(f"error: {err}")
    if not cfg.get("ckpt_path") and not cfg.get("weights"):
        _fail(f"error: {command} needs a model: weights=<name> (bloodseg-weights lists them) or "
              f"ckpt_path=<checkpoint or bundle>, e.g.\n    {example}")
    return False
