"""``bloodseg-evaluate``: score a model file on images with known instances.

    bloodseg-evaluate ckpt_path=experiments/runs/count_real/<time>/checkpoints/best.ckpt
    bloodseg-evaluate ckpt_path=... data.root=/data/other-smears predict.tta=true
    bloodseg-evaluate weights=count_real data.root=../shared/data/bbbc041seg-mini

The model is read from its stored spec (:mod:`bloodseg.spec`: nothing in it is instantiated)
and run through the one inference path with its own preprocessing and its tuned
post-processing (``postprocess.json`` beside the weights), so evaluating a run's checkpoint
on its data reproduces the run's own ``test_metrics.json``. ``data.root`` defaults to the
folder the model was trained on (said in the log); pass it to evaluate other images.

Writes the test files of a run folder (:mod:`bloodseg.rundir`: ``test_metrics.json``,
``per_image.csv``, ``size_hist.csv``, ``samples/``) into the output folder
(``$XDG_STATE_HOME/bloodseg/evaluate/<time>``, i.e. ``~/.local/state/bloodseg/...``, unless
``hydra.run.dir=<folder>``). The test stage itself is
:func:`bloodseg.evaluation.test_stage`, what a training run's test runs too.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from bloodseg.cli.errors import hydra_override_hints, model_options, user_errors
from bloodseg.config import CONF_DIR

log = logging.getLogger(__name__)
EXAMPLE = "bloodseg-evaluate weights=count_real data.root=<folder with test/original, test/mask>"


def evaluate(cfg: DictConfig) -> dict:
    """Score the model file on ``data.root``'s ``data.split`` into ``paths.output_dir``;
    returns the test metrics."""
    from bloodseg import evaluation
    from bloodseg.data.bbbc041seg import image_digests, list_split
    from bloodseg.data.boxes import boxes_for
    from bloodseg.inference import predictor_from_config
    from bloodseg.io import DataError

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
    trained_on = set(predictor.spec.provenance.get("train_images") or [])
    seen = sum(d in trained_on for d in image_digests(samples))
    if seen:  # the scores would flatter: the model has seen these very images
        log.warning("%d of the %d image(s) scored are among the model's training images (same "
                    "content): these scores are not held-out estimates", seen, len(samples))
    info = {"data_root": str(root), "scored_training_images": seen,
            # exact instance labels come with the built-in synthetic data only
            "data_kind": "synthetic" if all(s.instances for s in samples) else "real",
            "color": predictor.spec.preprocess.color, "target": predictor.spec.target.name}
    scored = evaluation.test_stage(predictor, samples, out, weights, info,
                                   int(cfg.get("n_samples", 4)),
                                   boxes_for(root, (cfg.get("data") or {}).get("boxes")))
    shown = {k: round(v, 4) for k, v in scored.metrics.items()}
    log.info("test metrics: %s", shown)
    log.info("wrote %s", out / "test_metrics.json")
    return scored.metrics


@hydra_override_hints  # a clear hint for unquoted paths, before Hydra parses
@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="evaluate")
def main(cfg: DictConfig) -> dict:
    """The test metrics (what ``main(cfg)`` returns when called with a config)."""
    if model_options(cfg, "bloodseg-evaluate", EXAMPLE):
        return {}
    with user_errors():
        return evaluate(cfg)


if __name__ == "__main__":
    main()
