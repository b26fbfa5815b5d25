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
``postprocess.json`` is replaced only with ``overwrite=true``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

import bloodseg  # noqa: F401  (resolvers)
from bloodseg import evaluation, rundir
from bloodseg.checkpoint import CheckpointError
from bloodseg.cli_errors import hydra_override_hints
from bloodseg.config import CONF_DIR
from bloodseg.inference import predictor_from_config, tuned_path, write_tuned
from bloodseg.io import DataError

log = logging.getLogger(__name__)


def tune(cfg: DictConfig) -> Path:
    spec = evaluation.tune_spec(cfg.tune) or dict(evaluation.TUNE_DEFAULTS)
    predictor, weights = predictor_from_config({**cfg, "postprocess_file": None})
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
    record = evaluation.tuning_record(spec, result, len(samples))
    written = write_tuned(weights, evaluation.tuned_postprocess(result), record, out)
    rundir.write_tuning(Path(cfg.paths.output_dir), record)
    print(f"chose {result.best} (was {result.before}) on {len(samples)} {spec['split']} "
          f"image(s); wrote {written}")
    return written


@hydra_override_hints  # a clear hint for unquoted paths, before Hydra parses
@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="tune")
def main(cfg: DictConfig) -> None:
    try:
        tune(cfg)
    except (DataError, CheckpointError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
