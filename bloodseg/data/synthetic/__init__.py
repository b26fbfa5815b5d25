"""Synthetic blood smears with exact instance labels: the offline default dataset.

Renders thin-smear microscope images in the look of BBBC041Seg (``"bbbc041"``: Giemsa-stained
malaria smears) or BCCD (``"bccd"``: pink cells, pale centres, a lobed white cell) together
with an instance map: every red and white cell has its own id, later = on top; platelets,
parasites outside cells and specks are painted but are not instances (as in the real masks).
:func:`write_dataset` writes the Kaggle layout ``{train,test}/{original,mask,instances}/``, so
everything that reads the real data also runs offline; :func:`cache_path` names a cache folder
after all of its arguments and :data:`GENERATOR_VERSION`. Sizes are ``(width, height)``.
Colours, cell sizes, coverage and gap width are calibrated on the real images (``params.py``).

Modules: ``params`` (styles, palettes, per-image parameters), ``placement`` and ``cells``
(where cells go, how they are drawn), ``stain`` (what a cell looks like inside), ``topology``
(instance-map repair), ``render`` (:func:`render_smear`), ``writer`` (datasets on disk).
Masks come from :func:`bloodseg.labels.mask_from_instances`. Example::

    image, instances = render_smear(np.random.default_rng(0), 800, 600, style="bbbc041")
    root = cache_path("data/synthetic", n_train=100, n_test=20, size=(256, 256))  # W x H
    write_dataset(root, n_train=100, n_test=20, size=(256, 256))
"""

from bloodseg.data.synthetic.params import DEFAULT_CELL_DIAMETER_FRAC, STYLES
from bloodseg.data.synthetic.render import render_smear
from bloodseg.data.synthetic.writer import (
    DATASET_JSON,
    GENERATOR_VERSION,
    cache_path,
    dataset_key,
    dataset_params,
    write_dataset,
)

__all__ = [
    "DATASET_JSON",
    "DEFAULT_CELL_DIAMETER_FRAC",
    "GENERATOR_VERSION",
    "STYLES",
    "cache_path",
    "dataset_key",
    "dataset_params",
    "render_smear",
    "write_dataset",
]
