"""``bloodseg-tune``: choose a model's post-processing on images with known instances.

    bloodseg-tune ckpt_path=<run>/checkpoints/best.ckpt data.root=<Kaggle-layout folder>
    bloodseg-tune ckpt_path=... data.root=... tune.metric=count_mae tune.max_images=null
    bloodseg-tune ckpt_path=... data.root=... 'tune.grid={marker_threshold:[0.4,0.5,0.6]}'

As StarDist's ``optimize_thresholds`` does, it runs the network once per training image
(``tune.split=train``: train + val; ``val``: the seeded validation split) through the one
inference path, tries a grid of post-processing values (the post-processor's own
``tune_grid()`` unless ``tune.grid``), and keeps the best by ``tune.metric``. The test split is
never looked at. The choice goes beside the weights (``postprocess.json``, tied to the weights
by their sha256; ``bloodseg-evaluate`` and ``bloodseg-predict`` pick it up) and never into
the checkpoint; ``output=`` puts it elsewhere (then pass ``postprocess_file=``). An existing
``postprocess.json`` is replaced only with ``overwrite=true``. Tuning itself (options, images,
grid search, the stage) is :mod:`bloodseg.tuning`, what a training run's tune stage runs too.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from bloodseg.cli.errors import hydra_override_hints, model_options, user_errors
from bloodseg.config import CONF_DIR

EXAMPLE = "bloodseg-tune ckpt_path=<run>/checkpoints/best.ckpt data.root=<Kaggle-layout folder>"


def tune(cfg: DictConfig) -> Path:
    """Choose the model file's post-processing on ``tune.split``; returns the
    ``postprocess.json`` written (beside the weights unless ``output=``)."""
    from bloodseg import rundir, tuning
    from bloodseg.inference import predictor_from_config
    from bloodseg.io import DataError, OptionError
    from bloodseg.modelfile import tuned_path, write_tuned

    options = tuning.TuneOptions.from_config(cfg.get("tune") or True)  # tune=null: defaults
    if options is None:  # split: null turns train.py's stage off; here it means nothing
        raise OptionError(f"tune.split must be one of {', '.join(tuning.SPLITS)}, got None")
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
    samples = tuning.tuning_samples(root, options.split, options.max_images,
                                    float(cfg.data.val_fraction), int(cfg.data.seed))
    result = tuning.tune_stage(predictor, samples, options)
    record = tuning.tuning_record(options, result, len(samples), predictor.tta_mode)
    written = write_tuned(weights, tuning.tuned_postprocess(result), record, out)
    rundir.write_tuning(Path(cfg.paths.output_dir), record)
    print(f"chose {result.best} (was {result.before}) on {len(samples)} {options.split} "
          f"image(s); wrote {written}")
    return written


@hydra_override_hints  # a clear hint for unquoted paths, before Hydra parses
@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="tune")
def main(cfg: DictConfig) -> Path:
    """The ``postprocess.json`` written (what ``main(cfg)`` returns with a config)."""
    if model_options(cfg, "bloodseg-tune", EXAMPLE):
        return None
    with user_errors():
        return tune(cfg)


if __name__ == "__main__":
    main()
