"""The model spec: what a trained counter is, as typed, versioned plain data.

A checkpoint (or a shipped weights bundle) is data, never code. Next to the weights it holds a
:class:`ModelSpec`:

- ``network``: a registry name (``conf/model/<name>.yaml``) and plain kwargs, checked against
  the class's signature;
- ``target``: what the network learned, a registry name (``conf/target/<name>.yaml``, whose
  class is ``bloodseg/targets/<name>.py``) and its fields, type-checked; the class decodes
  logits into probability maps (:meth:`bloodseg.targets.base.Target.decode`);
- ``preprocess``: color, network input size, scale, contrast, normalisation, source size and
  the data's frame-cut rule;
- ``postprocess``: a registry name (``conf/postprocess/<name>.yaml``) and its dataclass fields,
  type-checked;
- ``provenance``: bloodseg version, config hash, data folder, epochs, metrics (shown, never
  interpreted);
- ``trust`` (optional): the calibrated count interval and review rule
  (:class:`bloodseg.trust.Trust`), bounded like every other number here.

:meth:`ModelSpec.from_dict` validates all of it. Names map to classes only through the
registries, whose files ship with bloodseg; nothing read from a file is ever passed to Hydra's
``instantiate``, ``get_class`` or ``locate``. A key that is not part of the spec, a Hydra key
(``_target_``, ``_args_``, ...) anywhere, or a value of the wrong type is refused with a
:class:`SpecError` naming the file and the key.

    >>> spec = ModelSpec.from_dict(ckpt["bloodseg_spec"], source="best.ckpt")
    >>> net = spec.network.build()                       # weights: load_state_dict
    >>> pp = spec.postprocess.build()                    # DistanceWatershed(...)
    >>> outputs = spec.target.decode(net(x))             # (B, C, H, W) probabilities
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from bloodseg import targets, trust
from bloodseg.config import group_config, group_names
from bloodseg.io import CheckpointError
from bloodseg.transforms import COLORS, CONTRAST, channels

if TYPE_CHECKING:  # torch loads only where a network runs (start-up)
    import torch

SPEC_VERSION = 1
SPEC_KEY = "bloodseg_spec"  # where a Lightning checkpoint keeps the spec
# Hydra's special keys: a stored config holding one of these is trying to build something
HYDRA_KEYS = ("_target_", "_args_", "_partial_", "_recursive_", "_convert_")
NORMALIZATIONS = ("imagenet",)  # transforms.normalize: ImageNet mean/std (VGG encoders)


class SpecError(CheckpointError):
    """A model spec that cannot be used; the message names the file and the key."""


# -- plain values ----------------------------------------------------------------------------

Plain = None | bool | int | float | str | list | dict


def _fail(source: str, key: str, why: str) -> SpecError:
    if source.endswith("config"):  # the user's own config, not a model file
        return SpecError(f"{source}: {key}: {why}")
    return SpecError(f"{source}: {key}: {why}. A bloodseg model file holds plain settings only; "
                     "retrain it, or get the file from its author again")


def check_plain(value: Any, source: str, key: str) -> Any:
    """``value`` as plain JSON-like data (tuples become lists), or a :class:`SpecError`.

    Refuses Hydra keys and any other ``_``-prefixed key at any depth: a spec never needs them,
    and a config holding them is trying to make Hydra build something.
    """
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [check_plain(v, source, f"{key}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise _fail(source, key, f"key {k!r} is not a string")
            if k.startswith("_"):
                raise _fail(source, f"{key}.{k}", "refused: a Hydra/private key has no place "
                            "in a model spec (nothing read from a model file is instantiated)")
            out[k] = check_plain(v, source, f"{key}.{k}")
        return out
    raise _fail(source, key, f"a {type(value).__name__} is not plain data")


def _short(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters: a refused payload is named, not echoed."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _type_ok(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(hint))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if hint is type(None) or hint is None:
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    return False  # containers, classes: no post-processor or target field needs them


def _mapping(value: Any, source: str, key: str) -> Mapping:
    if not isinstance(value, Mapping):
        raise _fail(source, key, f"expected a mapping, got {type(value).__name__}")
    return value


def _only(d: Mapping, allowed: set[str], source: str, key: str) -> None:
    extra = sorted(set(d) - allowed)
    if extra:
        raise _fail(source, f"{key}.{extra[0]}", f"unknown key; {key} takes "
                    f"{', '.join(sorted(allowed))}")


def _registry_name(value: Any, group: str, source: str, key: str) -> str:
    names = group_names(group)
    if not isinstance(value, str) or value not in names:
        raise _fail(source, key, f"{_short(value)} is not a registered {group}; valid: "
                    f"{', '.join(names)}")
    return value


def _checked_fields(cls: type, fields: Mapping, what: str, source: str, key: str) -> dict:
    """``fields`` of dataclass ``cls`` (a post-processor or a target), each a field of it
    whose value has the annotated type; as plain data."""
    hints = typing.get_type_hints(cls)
    known = sorted(f.name for f in dataclasses.fields(cls) if f.init)
    for k, v in fields.items():
        if k not in known:
            raise _fail(source, f"{key}.{k}", f"{what} has no such field; it has "
                        f"{', '.join(known) or 'none'}")
        if not _type_ok(v, hints[k]):
            raise _fail(source, f"{key}.{k}", f"{_short(v)} is not of type {_type_name(hints[k])}")
        why = _out_of_bounds(k, v)
        if why:
            raise _fail(source, f"{key}.{k}", why)
    return check_plain(dict(fields), source, key)


#: field names that are a fraction or a probability: values in [0, 1]
UNIT_FIELDS = ("threshold", "_frac", "_ratio")


def _out_of_bounds(name: str, value: Any) -> str | None:
    """Why a post-processor's or target's field value cannot be used, or None: every number
    is finite and non-negative (sizes, counts, weights, sigmas), and thresholds, fractions
    and ratios lie in [0, 1]. A model file saying NaN or 5.0 would silently count nothing."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return f"{value} is not a finite number"
    if value < 0:
        return f"{value} is negative"
    if name.endswith(UNIT_FIELDS) and value > 1:
        return f"{value} is not in [0, 1]"
    return None


def _registered_class(group: str, name: str) -> type:
    """The class of ``conf/<group>/<name>.yaml``: bloodseg's own files, never a model file's."""
    from hydra.utils import get_class

    return get_class(group_config(group, name)["_target_"])


def registry_name_of(group: str, target: str, source: str = "config", key: str = "_target_"
                     ) -> str:
    """The registry name whose ``_target_`` is ``target`` (configs and old checkpoints name
    classes; the spec names registry entries)."""
    names = {}
    for n in group_names(group):
        registered = group_config(group, n).get("_target_")
        if not registered:  # e.g. scheduler=none
            continue
        names[registered] = n
        cls = _registered_class(group, n)  # and where the class really lives
        names[f"{cls.__module__}.{cls.__qualname__}"] = n
    if target not in names:
        raise _fail(source, key, f"{_short(target)} is not a registered {group} class; register "
                    f"it as conf/{group}/<name>.yaml (known: "
                    f"{', '.join(sorted(set(names.values())))})")
    return names[target]


#: the largest network input a model file may ask for (height x width): what the predictor
#: runs whole (inference.MAX_WHOLE_PIXELS); a spec saying [100000, 100000] would need ~40 GB
#: for its input alone in predict.mode=resize
MAX_INPUT_PIXELS = 2048 * 2048
#: the largest image size a spec may record as its data's (source_size): a sanity bound
MAX_SOURCE_SIDE = 65536


def _size(value: Any, source: str, key: str, optional: bool = False,
          max_pixels: int | None = MAX_INPUT_PIXELS) -> tuple[int, int] | None:
    if value is None and optional:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value, value]
    if (not isinstance(value, list | tuple) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
        raise _fail(source, key, f"expected [height, width] of positive ints, got "
                    f"{_short(value)}")
    h, w = int(value[0]), int(value[1])
    if max_pixels is not None and h * w > max_pixels:
        raise _fail(source, key, f"{h}x{w} px is more than this bloodseg runs at once "
                    f"({max_pixels // 2048}x2048); re-export the model at a smaller size")
    if max(h, w) > MAX_SOURCE_SIDE:
        raise _fail(source, key, f"{h}x{w} px: a side over {MAX_SOURCE_SIDE} px")
    return h, w


def _entry(d: Any, group: str, values: str, source: str, key: str) -> tuple[str, dict]:
    """A registry entry ``{name: <a conf/<group> name>, <values>: {...}}``: the checked name
    and the (still unchecked) mapping of values."""
    d = _mapping(d, source, key)
    _only(d, {"name", values}, source, key)
    name = _registry_name(d.get("name"), group, source, f"{key}.name")
    return name, dict(_mapping(d.get(values, {}), source, f"{key}.{values}"))


def _config_entry(config: Mapping, group: str, source: str) -> tuple[str, dict]:
    """A Hydra config (``_target_`` + values, the user's own) as a registry name + values."""
    config = dict(config)
    target = config.pop("_target_", None)
    return registry_name_of(group, target, source, f"{group}._target_"), config


# -- the parts -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Network:
    """A registered network (``conf/model/<name>.yaml``) and its constructor kwargs."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Any, source: str, key: str = "network",
                  signature: bool = True) -> Network:
        """Checked: a registered name, plain kwargs in bounds, and (``signature``) kwargs the
        class takes; ``signature=False`` leaves the class unimported (torch), for a network
        that is never built (its exported graph runs)."""
        name, kwargs = _entry(d, "model", "kwargs", source, key)
        kwargs = check_plain(kwargs, source, f"{key}.kwargs")
        params = inspect.signature(_registered_class("model", name)).parameters if signature \
            else {}
        takes_any = not signature or any(p.kind is p.VAR_KEYWORD for p in params.values())
        for k in kwargs:
            if k not in params and not takes_any:
                raise _fail(source, f"{key}.kwargs.{k}", f"{name} takes no such argument; it "
                            f"takes {', '.join(p for p in params if p != 'self')}")
            why = _out_of_bounds(k, kwargs[k])  # channels, widths, depths: never negative
            if why:
                raise _fail(source, f"{key}.kwargs.{k}", why)
        return cls(name, kwargs)

    @classmethod
    def from_config(cls, config: Mapping, source: str = "model config") -> Network:
        """From a Hydra model config (``_target_`` + kwargs, the user's own ``conf/model``)."""
        name, kwargs = _config_entry(config, "model", source)
        return cls.from_dict({"name": name, "kwargs": kwargs}, source, "model")

    def build(self, pretrained: bool | None = None) -> torch.nn.Module:
        """The network, randomly initialised (weights: ``load_state_dict``). ``pretrained=False``
        skips ImageNet downloads when the weights come from a file anyway."""
        kwargs = dict(self.kwargs)
        if pretrained is not None and "pretrained" in kwargs:
            kwargs["pretrained"] = pretrained
        return _registered_class("model", self.name)(**kwargs)



def target_from_dict(d: Any, source: str, key: str = "target") -> targets.Target:
    """The target a model file names (``{"name": ..., "channels": ..., <field>: ...}``): a
    registered name (``conf/target``), its channel count and its fields type-checked against
    the class's annotations, then the target itself (``bloodseg/targets/<name>.py``)."""
    d = dict(_mapping(d, source, key))
    name = _registry_name(d.pop("name", "binary"), "target", source, f"{key}.name")
    target_cls = targets.target_class(name)  # bloodseg's own module of that name
    why = targets.channel_mismatch(target_cls, d.pop("channels", target_cls.channels))
    if why:
        raise _fail(source, f"{key}.channels", why)
    return target_cls(**_checked_fields(target_cls, d, f"target {name}", source, key))


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes the network's input (:func:`bloodseg.transforms.prepare_image`)."""

    color: str = "gray"
    image_size: tuple[int, int] = (256, 256)  # the network's input (crop) size
    scale: float | None = None                # keep the aspect, shrink by this; None: squash
    source_size: tuple[int, int] | None = None  # typical training image size (H, W)
    contrast: str = "none"
    normalization: str = "imagenet"
    cut_cell_frac: float = 0.0                # the data's frame-cut rule (labels.drop_cut_cells)

    @classmethod
    def from_dict(cls, d: Any, source: str, key: str = "preprocess") -> Preprocess:
        d = _mapping(d, source, key)
        _only(d, {f.name for f in dataclasses.fields(cls)}, source, key)
        color = d.get("color", "gray")
        if color not in COLORS:
            raise _fail(source, f"{key}.color", f"{_short(color)}; valid: {', '.join(COLORS)}")
        contrast = d.get("contrast") or "none"
        if contrast not in CONTRAST:
            raise _fail(source, f"{key}.contrast",
                        f"{_short(contrast)}; valid: {', '.join(CONTRAST)}")
        norm = d.get("normalization", "imagenet")
        if norm not in NORMALIZATIONS:
            raise _fail(source, f"{key}.normalization", f"{_short(norm)}; valid: "
                        f"{', '.join(NORMALIZATIONS)}")
        scale = d.get("scale")
        if scale is not None and not (_type_ok(scale, float) and 0 < scale <= 4):
            raise _fail(source, f"{key}.scale", f"expected a number in (0, 4] or null, got "
                        f"{_short(scale)}")
        cut = d.get("cut_cell_frac", 0.0)
        if not (_type_ok(cut, float) and 0 <= cut < 1):
            raise _fail(source, f"{key}.cut_cell_frac", f"expected a number in [0, 1), got "
                        f"{_short(cut)}")
        return cls(color=color,
                   image_size=_size(d.get("image_size", 256), source, f"{key}.image_size"),
                   scale=None if scale is None else float(scale),
                   source_size=_size(d.get("source_size"), source, f"{key}.source_size", True,
                                     max_pixels=None),
                   contrast=contrast, normalization=norm, cut_cell_frac=float(cut))

    @property
    def channels(self) -> int:
        return channels(self.color)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["image_size"] = list(self.image_size)
        d["source_size"] = list(self.source_size) if self.source_size else None
        return d


@dataclass(frozen=True)
class Postprocess:
    """A registered post-processor (``conf/postprocess/<name>.yaml``) and its fields."""

    name: str
    fields: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Any, source: str, key: str = "postprocess") -> Postprocess:
        name, fields = _entry(d, "postprocess", "fields", source, key)
        return cls(name, _checked_fields(_registered_class("postprocess", name), fields, name,
                                         source, f"{key}.fields"))

    @classmethod
    def from_config(cls, config: Mapping, source: str = "postprocess config") -> Postprocess:
        """From a Hydra post-processing config (the user's own ``conf/postprocess``)."""
        name, fields = _config_entry(config, "postprocess", source)
        return cls.from_dict({"name": name, "fields": fields}, source)

    @classmethod
    def of(cls, postprocess: Any) -> Postprocess:
        """The spec of a built post-processor (e.g. the one tuning chose)."""
        target = f"{type(postprocess).__module__}.{type(postprocess).__qualname__}"
        return cls.from_config({"_target_": target, **dataclasses.asdict(postprocess)})

    def build(self) -> Any:
        return _registered_class("postprocess", self.name)(**self.fields)

    def replace(self, **fields: Any) -> Postprocess:
        return Postprocess.from_dict({"name": self.name, "fields": {**self.fields, **fields}},
                                     "postprocess")


def _number(value: Any, source: str, key: str, lo: float = -math.inf, hi: float = math.inf,
            integer: bool = False) -> float:
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok:
        raise _fail(source, key, f"expected {'an integer' if integer else 'a number'}, got "
                    f"{_short(value)}")
    if not math.isfinite(value) or not lo <= value <= hi:
        raise _fail(source, key, f"{value} is not a finite number in [{lo}, {hi}]")
    return value


def trust_from_dict(d: Any, source: str, key: str = "trust") -> trust.Trust:
    """The ``trust`` section, every key known and every number finite and in range."""
    d = _mapping(d, source, key)
    _only(d, {"interval", "typical", "review", "provenance"}, source, key)
    iv = _mapping(d.get("interval"), source, f"{key}.interval")
    _only(iv, {"method", "level", "low", "high", "coverage", "mean_width", "images"}, source,
          f"{key}.interval")
    if iv.get("method") not in trust.METHODS:
        raise _fail(source, f"{key}.interval.method", f"{_short(iv.get('method'))} is not one "
                    f"of {', '.join(trust.METHODS)}")
    k = f"{key}.interval"
    low = _number(iv.get("low"), source, f"{k}.low", -1e4, 1e4)
    high = _number(iv.get("high"), source, f"{k}.high", low, 1e4)
    optional = {"coverage": (0, 1, False), "mean_width": (0, 1e6, False), "images": (0, 1e9, True)}
    scores = {name: None if iv.get(name) is None else
              _number(iv[name], source, f"{k}.{name}", lo, hi, integer)
              for name, (lo, hi, integer) in optional.items()}
    interval = trust.CountInterval(iv["method"], _number(iv.get("level"), source,
                                                         f"{k}.level", 0, 1), low, high, **scores)
    ty = _mapping(d.get("typical"), source, f"{key}.typical")
    _only(ty, {"centre", "covariance", "max_distance"}, source, f"{key}.typical")
    centre = _mapping(ty.get("centre"), source, f"{key}.typical.centre")
    if set(centre) != set(trust.FEATURES):
        raise _fail(source, f"{key}.typical.centre", "expected the features "
                    f"{', '.join(trust.FEATURES)}")
    n = len(trust.FEATURES)
    cov = ty.get("covariance")
    if not (isinstance(cov, list) and len(cov) == n
            and all(isinstance(r, list) and len(r) == n for r in cov)):
        raise _fail(source, f"{key}.typical.covariance", f"expected a {n}x{n} list of lists")
    cov = [[_number(v, source, f"{key}.typical.covariance[{i}][{j}]", -1e9, 1e9)
            for j, v in enumerate(r)] for i, r in enumerate(cov)]
    matrix = np.array(cov, float)
    if not np.allclose(matrix, matrix.T) or np.linalg.eigvalsh(matrix).min() <= 0:
        raise _fail(source, f"{key}.typical.covariance", "not a symmetric positive-definite "
                    "matrix")
    typical = trust.Typical(
        {f: _number(centre[f], source, f"{key}.typical.centre.{f}", -1e6, 1e6)
         for f in trust.FEATURES},
        cov, _number(ty.get("max_distance"), source, f"{key}.typical.max_distance", 0, 1e6))
    rv = _mapping(d.get("review"), source, f"{key}.review")
    _only(rv, {"relative_width", "clumps"}, source, f"{key}.review")
    review = trust.Review(_number(rv.get("relative_width"), source,
                                  f"{key}.review.relative_width", 0, 1e6),
                          _number(rv.get("clumps"), source, f"{key}.review.clumps", 0, 1))
    provenance = check_plain(_mapping(d.get("provenance", {}), source, f"{key}.provenance"),
                             source, f"{key}.provenance")
    return trust.Trust(interval, typical, review, provenance)


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to turn an image into counted cells with a network's weights."""

    network: Network
    target: targets.Target
    preprocess: Preprocess
    postprocess: Postprocess
    provenance: dict[str, Any] = field(default_factory=dict)
    version: int = SPEC_VERSION
    #: how far to trust a count (calibrated by ``benchmarks/count_intervals.py``), or None
    trust: trust.Trust | None = None

    @classmethod
    def from_dict(cls, d: Any, source: str = "model spec",
                  check_network: bool = True) -> ModelSpec:
        """A validated spec; ``check_network=False``: the network's kwargs are not checked
        against its class (:meth:`Network.from_dict`)."""
        d = _mapping(d, source, SPEC_KEY)
        version = d.get("version")
        if version != SPEC_VERSION:
            raise SpecError(f"{source}: model spec version {version!r}; this bloodseg reads "
                            f"version {SPEC_VERSION}. Upgrade bloodseg or re-export the model")
        _only(d, {"version", "network", "target", "preprocess", "postprocess", "provenance",
                  "trust"}, source, SPEC_KEY)
        spec = cls(network=Network.from_dict(d.get("network"), source,
                                             signature=check_network),
                   target=target_from_dict(d.get("target"), source),
                   preprocess=Preprocess.from_dict(d.get("preprocess"), source),
                   postprocess=Postprocess.from_dict(d.get("postprocess"), source),
                   provenance=check_plain(_mapping(d.get("provenance", {}), source,
                                                   "provenance"), source, "provenance"),
                   trust=None if d.get("trust") is None else trust_from_dict(d["trust"], source))
        spec.check(source)
        return spec

    def check(self, source: str = "model spec") -> None:
        """The parts agree: input channels follow the color, output channels the target."""
        kw = self.network.kwargs
        if "in_channels" in kw and kw["in_channels"] != self.preprocess.channels:
            raise _fail(source, "network.kwargs.in_channels", f"{kw['in_channels']} does not "
                        f"match preprocess.color={self.preprocess.color}")
        check_network_fits(self.network, self.target, source)
        check_postprocess_fits(self.postprocess, self.target, source)

    def to_dict(self) -> dict:
        return {"version": self.version,
                "network": {"name": self.network.name, "kwargs": dict(self.network.kwargs)},
                "target": self.target.to_dict(),
                "preprocess": self.preprocess.to_dict(),
                "postprocess": {"name": self.postprocess.name,
                                "fields": dict(self.postprocess.fields)},
                "provenance": dict(self.provenance),
                **({"trust": self.trust.to_dict()} if self.trust is not None else {})}

    def replace(self, **changes: Any) -> ModelSpec:
        spec = dataclasses.replace(self, **changes)
        spec.check()
        return spec


def check_network_fits(network: Network, target: targets.Target,
                       source: str = "model spec") -> None:
    """A network makes as many output channels (``classes``) as the target has, or is
    refused."""
    classes = network.kwargs.get("classes")
    if classes is not None and classes != target.channels:
        raise _fail(source, "network.kwargs.classes", f"{classes} does not match target "
                    f"{target.name} ({target.channels} channels)")


def check_postprocess_fits(postprocess: Postprocess, target: targets.Target,
                           source: str = "model spec") -> None:
    """A post-processor reads as many output channels as the target makes, or is refused
    (before training, not at test time)."""
    channels = getattr(_registered_class("postprocess", postprocess.name), "channels", None)
    if channels is not None and channels != target.channels:
        raise _fail(source, "postprocess.name", f"{postprocess.name} reads {channels}-channel "
                    f"outputs, but target {target.name} has {target.channels}; use postprocess="
                    f"{target.default_postprocess}")


# -- checkpoints -----------------------------------------------------------------------------


#: Lightning ``hyper_parameters`` of bloodseg checkpoints: key -> the registry its configs name
HPARAM_GROUPS = {"model": "model", "loss": "loss", "optimizer": "optimizer",
                 "scheduler": "scheduler", "postprocess": "postprocess"}
HPARAM_PLAIN = ("scheduler_monitor", "threshold", "channels_last", "data_info")


def _training_config(value: Any, group: str, source: str, key: str) -> Any:
    """A stored training config: a registered ``_target_`` (+ ``_partial_``) and plain values,
    or a registry name; anything else is refused, naming the key."""
    if value is None:
        return None
    if isinstance(value, str):
        return _registry_name(value, group, source, key)
    value = dict(_mapping(value, source, key))
    target = value.pop("_target_", None)
    if target is not None:
        registry_name_of(group, target, source, f"{key}._target_")
    partial = value.pop("_partial_", False)
    if not isinstance(partial, bool):
        raise _fail(source, f"{key}._partial_", f"expected true/false, got {partial!r}")
    return check_plain(value, source, key)


def check_hparams(hp: Any, source: str) -> None:
    """Refuse Lightning ``hyper_parameters`` that are not what bloodseg writes: every config in
    them names a registered class, every other value is plain data. Models are never built
    from them (the spec is), but a file holding a payload there is refused all the same."""
    hp = _mapping(hp, source, "hyper_parameters")
    _only(hp, {*HPARAM_GROUPS, *HPARAM_PLAIN, "target"}, source, "hyper_parameters")
    for key, group in HPARAM_GROUPS.items():
        _training_config(hp.get(key), group, source, f"hyper_parameters.{key}")
    for key in HPARAM_PLAIN:
        check_plain(hp.get(key), source, f"hyper_parameters.{key}")
    if hp.get("target") is not None:
        target_from_dict(hp["target"], source, "hyper_parameters.target")




def spec_of_checkpoint(ckpt: Mapping, source: str) -> ModelSpec:
    """The validated spec of a loaded checkpoint or bundle; a file without one gets one
    message naming it. Its ``hyper_parameters``, if any, are
    checked too (:func:`check_hparams`)."""
    hp = ckpt.get("hyper_parameters")
    if SPEC_KEY in ckpt:
        if hp is not None:
            check_hparams(hp, source)
        return ModelSpec.from_dict(ckpt[SPEC_KEY], source)
    raise SpecError(f"{source}: not a bloodseg model file (no model spec in it); pass "
                    "ckpt_path=<run>/checkpoints/best.ckpt or weights=<name>")
