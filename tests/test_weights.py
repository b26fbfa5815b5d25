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

#: sha256 of count_real.pt's weight tensors (names, dtypes, bytes), as trained
WEIGHTS_SHA256 = "4e7dbf4799e459d2bef857b609111a9e615b8c11728c2595621455386e87e64a"


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
    # the shipped model's own answer, exactly (the model card's "it counts 52"): a change of
    # the bundle's format, the inference path or the post-processing must not move it
    assert (int(labels.max()), match.fp, inner(labels)) == (52, 7, 44)


def test_shipped_bundle_weights_and_spec_are_as_shipped():
    """The bundle's weights are the trained ones, bit for bit (re-exports rename spec keys,
    never the weights), and its spec speaks today's names: the frame-cut rule is
    ``cut_cell_frac`` in the preprocessing (the masks', 0.4) and in the tuned post-processing."""
    import hashlib

    import torch

    bundle = torch.load(weights_path("count_real"), weights_only=True, map_location="cpu")
    weights, digest = bundle["weights"], hashlib.sha256()
    for key in sorted(weights):
        digest.update(key.encode() + str(weights[key].dtype).encode())
        digest.update(weights[key].numpy().tobytes())
    assert digest.hexdigest() == WEIGHTS_SHA256
    spec = bundle["bloodseg_spec"]
    assert spec["preprocess"]["cut_cell_frac"] == 0.4
    assert spec["postprocess"]["fields"]["cut_cell_frac"] == 0.5
    assert spec["provenance"]["tuned"] == {"marker_threshold": 0.6, "min_marker_area_frac": 0.4,
                                           "cut_cell_frac": 0.5}
