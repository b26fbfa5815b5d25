"""The shipped model: counts without training or download, through the one inference path."""

from __future__ import annotations

import pytest

from bloodseg.inference import Predictor
from bloodseg.io import CheckpointError, read_mask
from bloodseg.labels import instances_from_mask
from bloodseg.measure import cell_rows
from bloodseg.metrics import match_instances
from bloodseg.modelfile import model_file
from bloodseg.weights import listing, model_card, weights_names, weights_path
from tests.conftest import REPO
from tests.helpers.cli import run


def test_shipped_models_are_listed_with_their_cards():
    assert "count_real" in weights_names()
    path = weights_path("count_real")
    assert path.is_file() and path.stat().st_size < 8e6  # a few MB: fp16 weights
    card = model_card("count_real")
    for must in ("Training data", "licen", "Intended use", "Not for", "real_cv.py"):
        assert must.lower() in card.lower(), must
    assert "count_real" in listing()
    proc = run("bloodseg.cli.weights", [], REPO, in_process=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("count_real") and "MB" in proc.stdout
    with pytest.raises(CheckpointError, match="no such shipped model; valid: count_real"):
        model_file(weights="nope")


@pytest.mark.real
def test_shipped_model_counts_the_shared_sample(shared_data):
    """The sample is not a training image. Its mask draws no cell that touches the frame
    (the model finds 4 such partial cells there) and merges 3 touching pairs into one
    component each (the model splits them), so the count is compared where the mask's rule
    is known: cells away from the frame; and every cell of the mask must be found."""
    sample = shared_data / "bbbc041seg-sample"
    predictor = Predictor.load(model_file(weights="count_real"))
    assert predictor.spec.postprocess.fields["marker_threshold"] == 0.6  # tuned, carried along
    labels = predictor(predictor.read(sample / "original.png"))
    truth = instances_from_mask(read_mask(sample / "mask.png"))
    match = match_instances(truth, labels)
    assert truth.max() == 45 and match.fn == 0 and match.tp == 45

    def inner(lab):
        return sum(not r["touches_frame"] for r in cell_rows(lab, "", ""))

    assert abs(inner(labels) - inner(truth)) <= 3
    assert abs(int(labels.max()) - 45) <= 7  # 4 frame-cut + 3 merged in the mask
