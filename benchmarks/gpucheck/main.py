"""gpu_check's driver: the sections in budget order, each failure a row, the report written."""

from __future__ import annotations

import contextlib
import traceback
import warnings
from collections.abc import Callable, Iterator

import torch

from .common import (
    Generation,
)
from .epoch import section_epoch
from .report import Report, Row, environment
from .settings import (
    RUN_ORDER,
    Settings,
    parse_args,
)
from .smoke import section_smoke
from .steps import section_train_step

# -- main ----------------------------------------------------------------------------------


SECTIONS: dict[str, tuple[str, Callable[[Settings, Report], None]]] = {
    "1": ("train-step throughput", section_train_step),
    "2": ("Kaggle-sized epoch", section_epoch),
    "3": ("CLI smoke runs", section_smoke),
}


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Lightning's info lines and the warnings that do not matter here, off (for this run)."""
    import logging

    loggers = [logging.getLogger(n) for n in ("pytorch_lightning", "lightning.pytorch",
                                              "lightning_fabric")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    with warnings.catch_warnings():
        for pattern in (".*does not have many workers.*", ".*Tensor Cores.*",
                        ".*exceeds the number of.*", ".*is smaller than the logging interval.*",
                        ".*Precision bf16-mixed is not supported.*", ".*predict_dataloader.*",
                        ".*checkpoint.*", ".*sync_dist.*", ".*LeafSpec.*",
                        ".*but have no `val_dataloader`.*"):
            warnings.filterwarnings("ignore", message=pattern)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


def main(argv: list[str] | None = None) -> dict:
    """Run the check; returns the report (the JSON written to ``--out``)."""
    s = parse_args(argv)
    s.work.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    if s.threads:
        torch.set_num_threads(s.threads)
    rep = Report(s, environment(s))
    try:
        with quiet():
            rep.write()
            for sec in RUN_ORDER:
                if sec not in s.sections:
                    continue
                title, fn = SECTIONS[sec]
                print(f"== section {sec}: {title}", flush=True)
                try:
                    fn(s, rep)
                except Exception as err:  # noqa: BLE001  (the next section still runs)
                    rep.rows.append(Row(sec, f"section {sec}", title, "error",
                                        error=f"{type(err).__name__}: {err}"[:2000],
                                        metrics={"traceback": traceback.format_exc()[-4000:]}))
    finally:
        for item in rep.shared.values():
            if isinstance(item, Generation):
                item.cancel()
        torch.set_num_threads(threads)
        rep.write()
    print()
    print(rep.markdown())
    print(f"written: {s.out / 'gpu_check.json'} and {s.out / 'gpu_check.md'}")
    return rep.to_json()

