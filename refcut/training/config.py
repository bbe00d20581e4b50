"""Training configuration: nested dataclasses, YAML round trip, ``key.sub=value`` overrides."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from refcut.data.pairs import combination_mixture

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
BASE_RESIZES = ("square", "short", "none")


@dataclass
class DataConfig:
    """Training data, pair sampling, click sampling and augmentation.

    ``datasets`` are ``PATH`` or ``PATH:format`` strings; only their ``train`` split is used.
    ``base_resize`` brings each target image to the input scale before the random resize:
    ``square`` squashes it to ``image_size x image_size`` (what the predictor does at the first
    click), ``short`` scales its shorter side to ``image_size``, ``none`` keeps raw pixels
    (SimpleClick).

    The encode-once family trains on cached views instead (no pixel augmentation: the encoders'
    output is cached): ``view_cache`` is their folder (default ``$REFCUT_CACHE/views-<size>px``),
    ``views`` the kinds cached per object (``full``, ``flip``, ``object``, ``part``; see
    :mod:`refcut.training.view_cache`), ``full_view_prob`` / ``reference_full_prob`` how often the
    target / reference is the full view rather than a crop.

    ``combination_weights`` mixes target kinds (``single``, ``pair`` of adjacent parts, ``whole``,
    ``random`` = the paper's k of N; empty = the paper's rule alone, see
    :mod:`refcut.data.pairs`). ``first_click_prob`` is the share of samples trained on their first
    click alone: one positive click, no negatives, no simulated clicks (the case the evaluation's
    IoU after one click measures, and where a reference has the most to decide).
    ``click_sequence_prob`` is the share of the other samples that also start from their first
    positive click alone but keep the step's simulated corrective clicks, so the network learns
    to correct its own first-click mask (with a reference: a negative click on a region the
    reference wrongly added) as the evaluation's clicker and an annotator do.
    ``hard_negative_prob`` (encode-once family, cached views) is the share of the samples that
    are not first-click samples which get one more negative click, on the outside token whose
    feature is closest to the target's mean feature (:func:`refcut.training.points.hard_negative_click`):
    a negative click whose click-affinity map also lights up the target, which the network must
    not cut away.
    ``reference_only_prob`` (encode-once family, cached views) is the share of the samples with a
    non-empty positive reference mask that get no click at all (and no simulated clicks): the
    network must find the target from the reference alone, which trains the reference pathway on
    the regions no click covers (e.g. the far pieces of a ``hair + skin`` target).
    """

    datasets: list[str] = field(default_factory=list)
    only_one_mask_prob: float = 0.25
    no_reference_prob: float = 0.1
    num_workers: int = 2
    max_initial_points: int = 24
    points_gamma: float = 0.8
    positive_erode_prob: float = 0.9
    positive_erode_iters: int = 3
    negative_border_prob: float = 0.5
    border_ratio: float = 0.1
    base_resize: str = "square"
    scale_range: list[float] = field(default_factory=lambda: [0.75, 1.4])
    flip_prob: float = 0.5
    color_jitter_prob: float = 0.75
    min_object_area: int = 16
    max_augment_tries: int = 10
    view_cache: str | None = None
    views: list[str] = field(default_factory=lambda: ["full", "flip", "object", "part"])
    full_view_prob: float = 0.5
    reference_full_prob: float = 0.7
    combination_weights: dict[str, float] = field(default_factory=dict)
    first_click_prob: float = 0.0
    click_sequence_prob: float = 0.0
    hard_negative_prob: float = 0.0
    reference_only_prob: float = 0.0

    def __post_init__(self) -> None:
        if self.base_resize not in BASE_RESIZES:
            raise ValueError(f"data.base_resize must be one of {BASE_RESIZES}, got {self.base_resize!r}")
        if len(self.scale_range) != 2 or not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise ValueError(f"data.scale_range must be [low, high] with 0 < low <= high, got {self.scale_range}")
        for name in ("only_one_mask_prob", "no_reference_prob", "positive_erode_prob", "negative_border_prob",
                     "flip_prob", "color_jitter_prob", "full_view_prob", "reference_full_prob", "first_click_prob",
                     "click_sequence_prob", "hard_negative_prob", "reference_only_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"data.{name} must be a probability, got {getattr(self, name)}")
        if self.max_initial_points < 1:
            raise ValueError("data.max_initial_points must be at least 1")
        combination_mixture(self.combination_weights)  # raises on unknown kinds or bad weights


@dataclass
class OptimConfig:
    """Adam + step decay (``MultiStepLR``), optional layer-wise lr decay and frozen early blocks.

    ``decay_at`` are fractions of ``steps`` where the lr is multiplied by ``decay_gamma``
    (SimpleClick: x0.1 at epoch 50 of 55, i.e. ~0.91). ``freeze_blocks = K`` freezes the
    first K backbone blocks and, when K > 0, the patch and position embeddings.
    ``layer_decay`` (e.g. 0.75) scales block ``i``'s lr by ``layer_decay ** (depth - i)``.
    ``lr_scales`` multiplies the lr of parameters whose name starts with a prefix, e.g.
    ``{"reference.": 10}`` for the reference prompt MLPs (the longest matching prefix wins).
    """

    lr: float = 5e-5
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.0
    decay_at: list[float] = field(default_factory=lambda: [0.9])
    decay_gamma: float = 0.1
    layer_decay: float | None = None
    lr_scales: dict[str, float] = field(default_factory=dict)
    freeze_blocks: int = 0
    grad_clip: float | None = None

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"optim.lr must be positive, got {self.lr}")
        if any(not 0.0 < f <= 1.0 for f in self.decay_at):
            raise ValueError(f"optim.decay_at must be fractions in (0, 1], got {self.decay_at}")
        if self.layer_decay is not None and not 0.0 < self.layer_decay <= 1.0:
            raise ValueError(f"optim.layer_decay must be in (0, 1], got {self.layer_decay}")
        if any(not isinstance(v, (int, float)) or v <= 0 for v in self.lr_scales.values()):
            raise ValueError(f"optim.lr_scales must map name prefixes to positive numbers, got {self.lr_scales}")
        if self.freeze_blocks < 0:
            raise ValueError("optim.freeze_blocks must be >= 0")


@dataclass
class ModelSetup:
    """Which network to train and where its weights start.

    ``preset`` names an early-fusion preset (:data:`refcut.model.config.PRESETS`) or an
    encode-once one (:data:`refcut.model.encode_once.ENCODE_ONCE_PRESETS`, e.g.
    ``encode_once_vits14``), which picks the family. ``init``: ``scratch`` (random; the
    encode-once family's frozen encoders always come from their packages), ``dinov2`` (the DINOv2
    ViT-S/14 import; preset ``vit_small_dinov2``) or a path to a native model directory / ``.safetensors`` file or a
    SimpleClick ``.pth`` checkpoint; with a path the architecture comes from the checkpoint
    and ``preset`` is ignored. ``image_size`` (a multiple of the patch size) overrides the
    preset's input size.
    """

    preset: str = "vit_small_dinov2"
    image_size: int | None = None
    init: str = "scratch"


@dataclass
class TrainConfig:
    """One training run. ``batch_size`` is per process; the effective batch is ``batch_size x world size``.

    ``threads`` sets torch's intra-op CPU threads per process (None: torch's default); on a
    busy CPU, 1 thread wastes less time in spin-waits than several. ``reference_grad=False``
    runs the reference image through the backbone without gradient (only the prompt MLPs
    learn from the reference; a step costs about one backward pass less).
    ``low_res_loss`` (encode-once family only) computes the loss on the decoder's native
    stride-4 logits against the area-downsampled (soft) target instead of on the bilinearly
    upsampled ones: the same function class, about a third less time per step.
    ``far_click_weight`` up-weights the loss on pixels far from every click (weight
    ``1 + far_click_weight * min(1, distance / (far_click_radius * side))``): there the clicks
    say little and the image and the reference must decide (default 0: plain NFL).
    ``metric_loss_weight`` (models with the decoder's ``reference_metric``) adds that times a
    per-token BCE between the learned metric's "wanted" logits and the target's token coverage,
    weighted 1 inside the target's box grown 2x and 0.3 elsewhere (samples with positive exemplars).
    """

    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    model: ModelSetup = field(default_factory=ModelSetup)
    steps: int = 1000
    batch_size: int = 8
    seed: int = 0
    no_reference: bool = False
    reference_grad: bool = True
    max_extra_clicks: int = 3
    click_threshold: float = 0.49
    loss_alpha: float = 0.5
    loss_gamma: float = 2.0
    low_res_loss: bool = True
    far_click_weight: float = 0.0
    far_click_radius: float = 0.25
    metric_loss_weight: float = 0.0
    precision: str = "auto"
    device: str = "auto"
    threads: int | None = None
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 10
    dump_every: int = 200
    save_fp16: bool = False

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        for name in ("steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_extra_clicks < 0:
            raise ValueError("max_extra_clicks must be >= 0")
        if self.metric_loss_weight < 0:
            raise ValueError(f"metric_loss_weight must be >= 0, got {self.metric_loss_weight}")
        if self.far_click_weight < 0 or self.far_click_radius <= 0:
            raise ValueError("far_click_weight must be >= 0 and far_click_radius > 0, got "
                             f"{self.far_click_weight} and {self.far_click_radius}")

    # -- serialisation -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML/JSON serialisable)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError`` naming them."""
        return _build(cls, data or {}, prefix="")

    def save_yaml(self, path: str | Path) -> Path:
        """Write the config as YAML."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        return path

    @classmethod
    def load_yaml(cls, path: str | Path) -> "TrainConfig":
        """Read a YAML config written by :meth:`save_yaml` (or by hand; missing keys take defaults)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"training config not found: {path}")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as error:
            raise ValueError(f"{path} is not valid YAML: {error}") from error
        if data is not None and not isinstance(data, dict):
            raise ValueError(f"{path} must hold a mapping of config fields")
        try:
            return cls.from_dict(data or {})
        except (TypeError, ValueError) as error:
            raise ValueError(f"{path}: {error}") from error

    def with_overrides(self, overrides: list[str] | dict[str, Any]) -> "TrainConfig":
        """A copy with ``["optim.lr=1e-4", "steps=2000"]`` (or ``{"optim.lr": 1e-4}``) applied."""
        data = self.to_dict()
        items = overrides.items() if isinstance(overrides, dict) else (_split_override(o) for o in overrides)
        for key, value in items:
            parts = key.split(".")
            node, hint_cls = data, TrainConfig
            for part in parts[:-1]:
                sub = node.get(part)
                if not isinstance(sub, dict):
                    raise ValueError(f"unknown config section {key!r}")
                hint_cls = typing.get_type_hints(hint_cls)[part]
                node = sub
            leaf = parts[-1]
            if leaf not in node:
                raise ValueError(f"unknown config key {key!r}; known: {sorted(_flat_keys(self.to_dict()))}")
            hint = typing.get_type_hints(hint_cls)[leaf]
            node[leaf] = _coerce(value, hint, key)
        return TrainConfig.from_dict(data)


def _split_override(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise ValueError(f"override {text!r} must look like key=value (e.g. optim.lr=1e-4)")
    key, value = text.split("=", 1)
    return key.strip(), value.strip()


def _flat_keys(data: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in data.items():
        if isinstance(value, dict):
            keys.extend(_flat_keys(value, f"{prefix}{key}."))
        else:
            keys.append(prefix + key)
    return keys


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Convert an override value (usually a string) to the field's type."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if isinstance(value, str) and value.lower() in ("none", "null", "~", ""):
            return None
        if value is None:
            return None
        return _coerce(value, args[0], key)
    if isinstance(value, str) and hint is not str:
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError as error:
            raise ValueError(f"cannot parse value for {key}: {error}") from error
    try:
        if hint is bool:
            if isinstance(value, str):
                lowered = value.lower()
                if lowered not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                return lowered in ("true", "1", "yes")
            return bool(value)
        if hint is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if hint is float:
            return float(value)
        if hint is str:
            return str(value)
        if origin is list:
            (item,) = typing.get_args(hint)
            if not isinstance(value, (list, tuple)):
                value = [value]
            return [_coerce(v, item, key) for v in value]
    except (TypeError, ValueError):
        raise ValueError(f"config key {key}: cannot use {value!r} as {getattr(hint, '__name__', hint)}") from None
    return value


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ValueError(f"config section {prefix.rstrip('.') or 'root'} must be a mapping")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"unknown config keys: {sorted(prefix + k for k in unknown)}")
    values = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = _build(hint, value or {}, prefix + name + ".")
        else:
            values[name] = _coerce(value, hint, prefix + name)
    return cls(**values)
