"""The tuning and test stages on a saved model file (checkpoint or bundle), from a Hydra config.

A training run tunes and tests the weights it has just fitted (:mod:`bloodseg.training`); these
run the same stages (:mod:`bloodseg.evaluation`) on any model file: :func:`evaluate` scores it
on images with known instances and writes a run folder's test files, :func:`tune` chooses its
post-processing and writes ``postprocess.json`` beside the weights. The model is read from its
stored spec (nothing in it is instantiated); ``data.root`` defaults to the folder the model was
trained on. The commands are ``bloodseg-evaluate`` and ``bloodseg-tune``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from bloodseg import evaluation, rundir
from bloodseg.data.bbbc041seg import list_split
from bloodseg.inference import predictor_from_config, tuned_path, write_tuned
from bloodseg.io import DataError

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict:
    """Score the model file on ``data.root``'s ``data.split`` into ``paths.output_dir``;
    returns the test metrics."""
    out = Path(cfg.paths.output_dir)
    predictor, weights = predictor_from_config(cfg)
    root = (cfg.get("data") or {}).get("root")
    if not root:
        root = predictor.spec.provenance.get("data_root")
        if not root:
            raise DataError(f"{weights}: the model does not say which data it was trained on; "
                            "pass data.root=<folder with train/ and test/>")
        log.info("data.root=%s (the folder the model was trained on; pass data.root= to "
                 "evaluate other images)", root)
    samples = list_split(root, (cfg.get("data") or {}).get("split", "test"))
    info = {"data_root": str(root),
            # exact instance labels come with the built-in synthetic data only
            "data_kind": "synthetic" if all(s.instances for s in samples) else "real",
            "color": predictor.spec.preprocess.color, "target": predictor.spec.target.name}
    scored = evaluation.test_stage(predictor, samples, out, weights, info,
                                   int(cfg.get("n_samples", 4)))
    shown = {k: round(v, 4) for k, v in scored.metrics.items()}
    log.info("test metrics: %s", shown)
    log.info("wrote %s", out / "test_metrics.json")
    return scored.metrics


def tune(cfg: DictConfig) -> Path:
    """Choose the model file's post-processing on ``tune.split``; returns the
    ``postprocess.json`` written (beside the weights unless ``output=``)."""
    spec = evaluation.tune_spec(cfg.get("tune") or True)  # tune=null: the defaults
    if spec is None:  # split: null turns train.py's stage off; here it means nothing
        raise ValueError("tune.split must be train or val, got None")
    predictor, weights = predictor_from_config({**cfg, "postprocess_file": None})
    if isinstance(weights, list):  # an ensemble: its choice is tied to its first member
        if not cfg.get("output"):
            raise DataError("tuning an ensemble writes its choice to output=<file.json>; pass "
                            "that file as postprocess_file= to evaluate and predict")
        weights = weights[0]
    out = Path(cfg.output) if cfg.get("output") else tuned_path(weights)
    if out.suffix != ".json":
        out = out / rundir.TUNED
    if out.exists() and not cfg.get("overwrite", False):
        raise DataError(f"{out} exists (an earlier tuning); pass overwrite=true to replace it, "
                        "or output=<another folder>")
    root = cfg.data.get("root") or predictor.spec.provenance.get("data_root")
    if not root:
        raise DataError(f"{weights}: the model does not say which data it was trained on; "
                        "pass data.root=<folder with train/ and test/>")
    samples = evaluation.tuning_samples(root, spec["split"], spec["max_images"],
                                        float(cfg.data.val_fraction), int(cfg.data.seed))
    result = evaluation.tune_stage(predictor, samples, spec)
    record = evaluation.tuning_record(spec, result, len(samples), predictor.tta_mode)
    written = write_tuned(weights, evaluation.tuned_postprocess(result), record, out)
    rundir.write_tuning(Path(cfg.paths.output_dir), record)
    print(f"chose {result.best} (was {result.before}) on {len(samples)} {spec['split']} "
          f"image(s); wrote {written}")
    return written
