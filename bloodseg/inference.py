"""The one inference path: image -> the spec's preprocessing -> network -> native-size outputs
-> post-processing.

A run's test scoring, the tuning stage, ``bloodseg-evaluate``, ``bloodseg-predict`` and
exports all go through :class:`Predictor`, so one model file gives one answer everywhere.

    >>> predictor = Predictor.load("run/checkpoints/best.ckpt")      # or a weights bundle
    >>> image = predictor.read("smear.png")                         # RGB uint8, any size
    >>> outputs, labels = predictor.predict(image)   # (C, H, W) at native size, int32 0..N

Model files are read with ``torch.load(weights_only=True)`` (:mod:`bloodseg.modelfile`) and
their spec is validated (:mod:`bloodseg.spec`) before anything is built. The post-processing
is, in this order: the caller's (``postprocess=``), a tuned file beside the weights
(``postprocess.json``, :func:`read_tuned`, only if it was tuned for exactly these weights), or
the spec's own.

Modes: ``auto`` runs what the network was trained for: the whole image at the training scale
(tiles beyond :data:`MAX_WHOLE_PIXELS`), or, for networks trained on squashed images (no
scale), the image squashed to the training size. ``whole``, ``tile`` and ``resize`` force one.

Where instances are found (``postprocess_at``): ``native`` runs the post-processing on the
outputs resized to the image's own size (how runs are scored); ``network`` runs it on the
network's maps, a quarter of the pixels at ``count_real``'s scale 0.5, then resizes the labels
(nearest) and keeps them inside the native foreground, so masks and outlines stay at full
resolution. ``native`` is the default everywhere: ``network`` kept ``count_real``'s counts on
the 40 smears it was trained on, but not on unseen smears (docs/inference.md).

Test-time augmentation (``tta``): ``flips`` (or ``true``) averages the outputs over the four
flips, ``d4`` over all eight rotations and flips. Ensembles: :meth:`Predictor.load` takes a
list of model files (``ckpt_path=[a.ckpt,b.ckpt]``) whose specs agree on target and
preprocessing, and averages their probability maps (after each one's TTA).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bloodseg import runtimes
from bloodseg.io import CheckpointError, read_image
from bloodseg.labels import relabel_sequential
from bloodseg.modelfile import check_ensemble, file_sha256, load_model, model_files, read_tuned
from bloodseg.options import OptionError, check_predict, tta_mode
from bloodseg.spec import MAX_INPUT_PIXELS, ModelSpec, Postprocess
from bloodseg.transforms import normalize, prepare_image, resize_labels, scaled_hw, upsample

if TYPE_CHECKING:  # torch loads only where a network runs in it (start-up)
    import torch

log = logging.getLogger(__name__)

#: images needing more tiles than this get a warning with ways to go faster
WARN_TILES = 200
#: ``auto`` runs the whole scaled image up to this many pixels, tiles beyond (memory)
MAX_WHOLE_PIXELS = MAX_INPUT_PIXELS  # the most a model file may ask for (spec)


# -- options ---------------------------------------------------------------------------------


def predictor_from_config(cfg: Mapping) -> tuple[Predictor, Path | list[Path]]:
    """The predictor of a CLI config (``ckpt_path`` | ``weights``, one or a list;
    ``postprocess`` = the user's own ``conf/postprocess`` choice, ``postprocess_file``,
    ``predict.*`` options, :mod:`bloodseg.options`) and its model file (a list for an
    ensemble)."""
    p = cfg.get("predict") or {}
    check_predict(p)  # before any model file is read
    paths = model_files(cfg.get("ckpt_path"), cfg.get("weights"))
    pp = cfg.get("postprocess")
    predictor = Predictor.load(
        paths if len(paths) > 1 else paths[0],
        postprocess=Postprocess.from_config(pp) if pp else None,
        postprocess_file=cfg.get("postprocess_file"), mode=p.get("mode", "auto"),
        scale=p.get("scale"), overlap=p.get("overlap", 0.25), batch_size=p.get("batch_size", 8),
        tta=p.get("tta", False), device=p.get("device", "auto"),
        backend=p.get("backend", "auto"),
        postprocess_at=p.get("postprocess_at", "native"))
    return predictor, (paths if len(paths) > 1 else paths[0])


# -- tiles -----------------------------------------------------------------------------------


def tile_starts(length: int, tile: int, overlap: float) -> list[int]:
    """Tile origins covering ``length`` with at least ``overlap`` shared between neighbours."""
    if length <= tile:
        return [0]
    step = max(1, int(tile * (1 - overlap)))
    starts = list(range(0, length - tile, step))
    return starts + [length - tile]


def blend_window(h: int, w: int) -> np.ndarray:
    """Weights that fade towards tile borders, where a network sees the least context."""
    wy = np.minimum(np.arange(h) + 1, np.arange(h)[::-1] + 1).astype(np.float32)
    wx = np.minimum(np.arange(w) + 1, np.arange(w)[::-1] + 1).astype(np.float32)
    return np.outer(wy / wy.max(), wx / wx.max()) + 1e-3


# A (B, C, H, W) torch tensor or numpy array alike: torch modules run on tensors, exported
# graphs on arrays (without torch).
Maps = Any


def _flip(t: Maps, dims: tuple[int, ...]) -> Maps:
    return np.flip(t, dims) if isinstance(t, np.ndarray) else t.flip(dims)


def _rot90(t: Maps, k: int) -> Maps:
    if isinstance(t, np.ndarray):
        return np.rot90(t, k, (-2, -1))
    import torch

    return torch.rot90(t, k, (-2, -1))


def _mean(views: list[Maps]) -> Maps:
    if isinstance(views[0], np.ndarray):
        return np.mean(views, axis=0, dtype=np.float32)
    import torch

    return torch.stack(views).mean(0)


def _d4(k: int, flip: bool) -> tuple[Callable[[Maps], Maps], Callable[[Maps], Maps]]:
    """One of the eight rotations/flips of a (B, C, H, W) tensor or array and its inverse."""
    def forward(t: Maps) -> Maps:
        t = _flip(t, (-1,)) if flip else t
        return _rot90(t, k)

    def inverse(t: Maps) -> Maps:
        t = _rot90(t, -k)
        return _flip(t, (-1,)) if flip else t

    return forward, inverse


def tta_outputs(net: Callable[[Maps], Maps], x: Maps, decode,
                tta: bool | str) -> tuple[Maps, Maps]:
    """Logits of ``x`` and the decoded probability maps; averaged over the four flips
    (``tta`` true or ``flips``) or the eight rotations and flips (``d4``); the identity's
    logits are returned. Every target here (foreground, contour classes, distance to the
    own boundary) is equivariant to these, so the inverse transform aligns the outputs.
    ``x``: a tensor for a torch module, an array for an exported graph."""
    mode = tta_mode(tta)
    logits = net(x)
    outputs = decode(logits if isinstance(logits, np.ndarray) else logits.detach())
    if mode == "flips":
        flipped = [_flip(decode(net(_flip(x, d))), d) for d in ((-1,), (-2,), (-2, -1))]
        outputs = _mean([outputs, *flipped])
    elif mode == "d4":
        views = [outputs]
        for k, flip in [(k, f) for f in (False, True) for k in range(4)][1:]:
            forward, inverse = _d4(k, flip)
            views.append(inverse(decode(net(forward(x)))))
        outputs = _mean(views)
    return logits, outputs


def _identity(t: np.ndarray) -> np.ndarray:
    return t  # an exported graph decodes its logits itself


def _is_list(v: Any) -> bool:
    return isinstance(v, Sequence) and not isinstance(v, str | bytes | Path)




def _cached_specs(paths: list[Path], keys: list[str] | None, backend: str, device: str
                  ) -> list[tuple[ModelSpec, Callable]] | None:
    """(spec, session) per model file when all of them run as exported graphs cached earlier
    (the spec kept beside each, validated again here), else None: then the files are read
    with torch. Only on the CPU, where ``device`` can be told without torch."""
    if keys is None or device not in ("auto", "cpu") or \
            (device == "auto" and runtimes.gpu_possible()):
        return None
    backend = runtimes.resolve(backend, "cpu")
    if backend == "torch":
        return None
    out = []
    for path, key in zip(paths, keys):
        d = runtimes.cached_spec(key)
        if d is None:
            return None
        try:  # the network is never built here: its class is not imported to check it
            spec = ModelSpec.from_dict(d, str(path), check_network=False)
            out.append((spec, runtimes.session(backend, runtimes.graph_path(key))))
        except Exception as err:  # stale or broken (any runtime's error): read the file,
            # whose path exports the graph again
            log.warning("%s: cached graph not usable (%s); reading the model file", path,
                        str(err).splitlines()[0] if str(err) else type(err).__name__)
            return None
    return out


# -- the predictor ---------------------------------------------------------------------------


class Predictor:
    """Probability maps and instances at native resolution from a network and its spec.

    Args:
        spec: the model's :class:`~bloodseg.spec.ModelSpec`.
        net: the network with its weights (a list: an ensemble); None with ``graphs``.
        postprocess: overrides the spec's post-processing (a :class:`Postprocess`).
        mode: ``auto`` | ``whole`` | ``tile`` | ``resize`` (module docstring).
        scale: input px -> network px; None = as in training.
        overlap: tile overlap (fraction of the tile).
        batch_size: tiles per forward pass.
        tta: ``none`` | ``flips`` (``True``) | ``d4``: average the outputs over flips, or over
            the eight rotations and flips.
        device: ``auto`` (CUDA if present), ``cpu``, ``cuda``, ``cuda:1``...
        backend: where the network runs (:mod:`bloodseg.runtimes`): ``torch``, or
            ``onnxruntime`` / ``openvino`` / ``auto`` given ``keys``.
        keys: the model files' sha256, one per network: what an exported graph is cached by
            (without them, ``auto`` runs PyTorch).
        postprocess_at: ``native`` | ``network``: where :meth:`predict` finds the instances
            (module docstring).
        graphs: instead of ``net``, the sessions of exported graphs already cached (one per
            network; ``backend`` names their runtime): no torch is loaded (:meth:`load`).
    """

    def __init__(self, spec: ModelSpec, net: torch.nn.Module | Sequence[torch.nn.Module] | None,
                 postprocess: Postprocess | None = None, mode: str = "auto",
                 scale: float | Sequence[float] | None = None, overlap: float = 0.25,
                 batch_size: int = 8, tta: bool | str = False, device: str = "auto",
                 warn_tiles: int = WARN_TILES, backend: str = "torch",
                 keys: Sequence[str] | None = None, postprocess_at: str = "native",
                 graphs: Sequence[Callable[[np.ndarray], np.ndarray]] | None = None) -> None:
        check_predict({"mode": mode, "tta": tta, "device": device, "overlap": overlap,
                       "batch_size": batch_size, "backend": backend,
                       "postprocess_at": postprocess_at})
        self.postprocess_at = postprocess_at
        self.spec = spec.replace(postprocess=postprocess) if postprocess else spec
        if graphs is not None:  # exported graphs on the CPU: torch is never imported
            self.device, self.nets, self.net = "cpu", [], None
            self.backend = runtimes.resolve(backend, "cpu")
            self.runs = [(g, _identity) for g in graphs]
        else:
            self._load_networks(net, device, backend, keys)
        self.postprocess = self.spec.postprocess.build()
        pre = self.spec.preprocess
        self.tile_hw = pre.image_size
        source = pre.source_size or self.tile_hw
        if scale is None and pre.scale:
            self.scale = (pre.scale, pre.scale)  # trained on scaled crops
        elif scale is None:
            self.scale = (self.tile_hw[0] / source[0], self.tile_hw[1] / source[1])
        elif isinstance(scale, int | float):
            self.scale = (float(scale), float(scale))
        else:
            self.scale = tuple(float(s) for s in scale)
        if mode == "auto":
            mode = "whole" if pre.scale or scale is not None else "resize"
        self.mode, self.overlap, self.batch_size = mode, overlap, batch_size
        self.tta_mode = tta_mode(tta)
        self.tta = self.tta_mode != "none"  # what run records store (True/False)
        self.warn_tiles = warn_tiles

    def _load_networks(self, net: Any, device: str, backend: str,
                       keys: Sequence[str] | None) -> None:
        """The torch side of :meth:`__init__`: the device, the networks on it, and what runs
        them (the modules, or their exported graphs)."""
        import torch

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        elif device.startswith("cuda") and not torch.cuda.is_available():
            raise OptionError(f"predict.device={device}: this machine has no CUDA GPU (torch "
                              f"{torch.__version__}); use predict.device=cpu or auto")
        self.device = torch.device(device)
        nets = list(net) if isinstance(net, Sequence) else [net]
        self.nets = [n.to(self.device).eval() for n in nets]
        self.net = self.nets[0]  # what exports and single-model callers use
        if backend == "auto" and not keys:
            backend = "torch"  # weights in memory: nothing to cache an exported graph by
        elif backend not in ("auto", "torch") and not keys:
            raise OptionError(f"predict.backend={backend} needs the model's file (its graph "
                              "is cached by the file's sha256)")
        self.backend = runtimes.resolve(backend, self.device)
        if self.backend == "torch":
            self.runs = [(n, self.spec.target.decode) for n in self.nets]
            return
        from bloodseg.graph import runner

        self.runs = [(runner(self.backend, n, self.spec.target, self.spec.preprocess.channels,
                             k), _identity) for n, k in zip(self.nets, keys)]

    @classmethod
    def load(cls, path: str | Path | Sequence[str | Path],
             postprocess: Postprocess | None = None,
             postprocess_file: str | Path | None = None, device: str = "auto",
             backend: str = "torch", **options: Any) -> Predictor:
        """A predictor for a checkpoint or weights bundle, or an ensemble of several (a list);
        the post-processing is ``postprocess``, else the one tuned for exactly these weights
        (``postprocess.json``; for an ensemble, its first member's), else the spec's.
        ``backend``: where the network runs (:mod:`bloodseg.runtimes`; the library's callers
        score runs with ``torch``, the commands take ``predict.backend``)."""
        paths = [Path(p) for p in path] if _is_list(path) else [Path(path)]
        if not paths:
            raise CheckpointError("an empty list of model files")
        # a missing file or a folder: load_model says so in one line, as for torch
        keys = [file_sha256(p) for p in paths] \
            if backend != "torch" and all(p.is_file() for p in paths) else None
        cached = _cached_specs(paths, keys, backend, device)
        loaded = cached or [load_model(p) for p in paths]
        spec = loaded[0][0]
        for p, (other, _) in zip(paths[1:], loaded[1:]):
            check_ensemble(spec, other, paths[0], p)
        if postprocess is None:
            postprocess = read_tuned(paths[0], postprocess_file)
            if postprocess is not None:
                log.info("post-processing tuned for %s: %s", paths[0].name, postprocess.fields)
        if len(paths) > 1:
            log.info("ensemble of %d networks: %s", len(paths), ", ".join(str(p) for p in paths))
        if cached:
            return cls(spec, None, postprocess=postprocess, device="cpu", backend=backend,
                       graphs=[graph for _, graph in cached], **options)
        predictor = cls(spec, [net for _, net in loaded], postprocess=postprocess,
                        device=device, backend=backend, keys=keys, **options)
        if predictor.backend != "torch":  # the next load needs neither torch nor the file
            for k, (member, _) in zip(keys, loaded):
                runtimes.remember_spec(k, member.to_dict())
        return predictor

    def with_postprocess(self, postprocess: Postprocess) -> Predictor:
        """The same network and options with another post-processing (nothing reloaded)."""
        new = Predictor.__new__(Predictor)
        new.__dict__.update(self.__dict__)
        new.spec = self.spec.replace(postprocess=postprocess)
        new.postprocess = new.spec.postprocess.build()
        return new

    # -- pixels --------------------------------------------------------------------------

    @staticmethod
    def read(path: str | Path) -> np.ndarray:
        """The one image reader of inference: RGB uint8 from gray/RGB/RGBA, 8 or 16 bit."""
        return read_image(path, color="rgb", strict=False)

    def _normalize(self, image: np.ndarray) -> np.ndarray:
        return normalize(image, self.spec.preprocess.color)

    def _run(self, chunks: list[np.ndarray]) -> np.ndarray:
        if self.backend != "torch":  # exported graphs: arrays in, arrays out
            x = np.stack(chunks)
            return _mean([tta_outputs(run, x, decode, self.tta_mode)[1]
                          for run, decode in self.runs])
        import torch

        x = torch.from_numpy(np.stack(chunks)).to(self.device)
        with torch.inference_mode():
            out = torch.stack([tta_outputs(net, x, decode, self.tta_mode)[1]
                               for net, decode in self.runs]).mean(0)
        return out.float().cpu().numpy()

    def tile_plan(self, h: int, w: int) -> tuple[tuple[int, int], tuple[int, int],
                                                  list[tuple[int, int]]]:
        """Scaled size, tile size and tile origins for an ``h`` x ``w`` image (tile mode)."""
        sh, sw = max(1, round(h * self.scale[0])), max(1, round(w * self.scale[1]))
        th, tw = min(self.tile_hw[0], sh), min(self.tile_hw[1], sw)
        boxes = [(y, x) for y in tile_starts(sh, th, self.overlap)
                 for x in tile_starts(sw, tw, self.overlap)]
        return (sh, sw), (th, tw), boxes

    def network_size(self, h: int, w: int) -> tuple[int, int]:
        """The size the network sees an ``h`` x ``w`` image at."""
        if self.mode == "resize":
            return self.tile_hw
        if self.scale[0] == self.scale[1]:
            return scaled_hw((h, w), self.scale[0])  # as the training data was scaled
        return max(1, round(h * self.scale[0])), max(1, round(w * self.scale[1]))

    def network_input(self, image: np.ndarray) -> np.ndarray:
        """(C, h, w) float32: an RGB or gray uint8 image as the network sees it (the spec's
        color, contrast, size and normalisation; exports document the same steps)."""
        pre = self.spec.preprocess
        size = self.network_size(*image.shape[:2])
        return self._normalize(prepare_image(image, pre.color, pre.contrast, size))

    def network_outputs(self, image: np.ndarray, name: str = "image",
                        progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """(C, h, w) probability maps at the network's resolution (:meth:`network_size`) for
        an RGB or gray uint8 image of any size."""
        h, w = image.shape[:2]
        sh, sw = self.network_size(h, w)
        scaled = self.network_input(image)
        if self.mode == "resize" or (self.mode == "whole" and sh * sw <= MAX_WHOLE_PIXELS):
            return self._run([scaled])[0]
        (sh, sw), (th, tw), boxes = self.tile_plan(h, w)
        if len(boxes) > self.warn_tiles:
            log.warning(
                "%s: %dx%d px at predict.scale=%.3g is %d tiles of %dx%d px on %s; this can "
                "take a long time. To go faster, lower predict.scale (if the cells are larger "
                "than in training) or use predict.mode=resize (one coarse pass).",
                name, w, h, self.scale[0], len(boxes), tw, th, self.device)
        acc = np.zeros((self.spec.target.channels, sh, sw), np.float32)
        weight = np.zeros((sh, sw), np.float32)
        window = blend_window(th, tw)
        for i in range(0, len(boxes), self.batch_size):
            batch = boxes[i:i + self.batch_size]
            probs = self._run([scaled[:, y:y + th, x:x + tw] for y, x in batch])
            for (y, x), p in zip(batch, probs):
                acc[:, y:y + th, x:x + tw] += p * window
                weight[y:y + th, x:x + tw] += window
            if progress is not None:
                progress(i + len(batch), len(boxes))
        return acc / weight

    def outputs(self, image: np.ndarray, name: str = "image",
                progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """(C, H, W) probability maps of the network's target at the image's own size
        (binary: the foreground; contour: background/interior/border; distance: foreground,
        distance). ``progress(done, total)`` is called with the tile count in tile mode."""
        maps = self.network_outputs(image, name, progress)
        return upsample(maps, image.shape[:2])

    def labels(self, outputs: np.ndarray, network: np.ndarray | None = None) -> np.ndarray:
        """Counted instances (int32 0..N) of native-size ``outputs``; given ``network``, the
        network-resolution maps they were resized from, found on those where
        ``postprocess_at="network"`` (module docstring)."""
        if network is None or self.postprocess_at == "native" or \
                network.shape[1:] == outputs.shape[1:]:
            return self.postprocess(outputs)
        (h, w), (hh, ww) = network.shape[1:], outputs.shape[1:]
        small = self.postprocess.at_scale(float(np.sqrt(h * w / (hh * ww))))(network)
        labels = resize_labels(small, (hh, ww))
        labels[~self.mask(outputs)] = 0  # the outline of the full-resolution foreground
        return relabel_sequential(labels)  # a speck can vanish under the native mask

    def from_network(self, maps: np.ndarray, shape: tuple[int, int]
                     ) -> tuple[np.ndarray, np.ndarray]:
        """(outputs at ``shape``, counted instances) of :meth:`network_outputs`' maps."""
        outputs = upsample(maps, shape)
        return outputs, self.labels(outputs, maps)

    def predict(self, image: np.ndarray, name: str = "image",
                progress: Callable[[int, int], None] | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
        """(outputs at the image's own size (:meth:`outputs`), counted instances)."""
        return self.from_network(self.network_outputs(image, name, progress), image.shape[:2])

    def foreground(self, outputs: np.ndarray) -> np.ndarray:
        """HxW foreground probability of outputs (what the masks threshold)."""
        return self.postprocess.foreground(outputs)

    def mask(self, outputs: np.ndarray) -> np.ndarray:
        """HxW bool foreground, as the post-processing thresholds it."""
        return self.foreground(outputs) > self.postprocess.threshold

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Instances of an RGB or gray uint8 image."""
        return self.predict(image)[1]
