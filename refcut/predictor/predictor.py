"""``RefCutPredictor``: numpy in, masks out; the reference is encoded once and cached.

One predictor drives both model families, chosen by the model: the early-fusion network runs
whole on every click; the encode-once network encodes each view (the whole image, or a zoom-in
crop) once, caches it per image, and runs only its decoder per click.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from refcut.model import RefCutModel
from refcut.model.click_decoder import ViewEncoding
from refcut.model.encode_once import EncodeOnceModel
from refcut.model.ensemble import EncodeOnceEnsemble
from refcut.predictor.base import PredictionResult
from refcut.predictor.baselines import GRABCUT_STEPS, grabcut_refine
from refcut.predictor.guided import GUIDED_STEPS, boundary_contrast, guided_step
from refcut.predictor.transforms import (
    OBJECT_CROP_MIN_SIZE,
    Box,
    ZoomInSettings,
    as_zoom_in_settings,
    crop_resize,
    expand_box,
    full_box,
    mask_box,
    paste_back,
    points_to_network,
    view_resize,
    zoom_in_box,
)
from refcut.weights.native import DEFAULT_MODEL_DIR, load_pretrained, save_pretrained

__all__ = ["RefCutPredictor", "PredictionResult", "as_rgb_uint8", "REFINEMENTS"]

REFINEMENTS = (None, *GRABCUT_STEPS, *GUIDED_STEPS)
"""Boundary steps after the network (``refine=``)."""

LOGIT_STRIDE = 4
"""The decoder's logits are this many view pixels apart (the guided step's window is measured in them)."""


def as_rgb_uint8(image: np.ndarray, what: str = "image") -> np.ndarray:
    """Validate an image and return it as ``H x W x 3`` uint8 RGB (grayscale expanded, alpha dropped)."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"{what} must be uint8 (0..255), got dtype {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    elif image.ndim == 3 and image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{what} must be HxW, HxWx3 or HxWx4, got shape {image.shape}")
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise ValueError(f"{what} is too small: {image.shape[0]}x{image.shape[1]}")
    return np.ascontiguousarray(image)


def _as_mask(mask: np.ndarray | None, shape: tuple[int, int], what: str) -> np.ndarray | None:
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.shape != shape:
        raise ValueError(f"{what} has shape {mask.shape}, expected {shape} (the image's height x width)")
    if mask.dtype != bool and not np.issubdtype(mask.dtype, np.number):
        raise ValueError(f"{what} must be bool or numeric, got dtype {mask.dtype}")
    return mask.astype(bool)


class RefCutPredictor:
    """Click segmentation guided by an optional reference (image + positive/negative masks).

    Inference follows SimpleClick: the first click (no previous mask) sees the whole
    image resized to the model's square input; later clicks zoom into the box around
    the previous prediction and the positive clicks (expanded 1.4x, at least 200 px a
    side) and paste the result back; logits are averaged with a horizontally flipped
    pass. Both are on by default (``zoom_in=False`` / ``flip=False`` to switch off).
    ``precision="bf16"`` runs the network under bfloat16 autocast (faster on CPUs with
    AVX-512 BF16).

    With an encode-once model, ``set_image`` encodes the whole image once (cached for the last
    ``image_cache_size`` images, so going back to one is free; :meth:`preload` encodes one ahead),
    a zoom-in crop is encoded once when the box changes and reused while it does not, and
    ``predict`` runs only the decoder. ``flip`` defaults to off for this family: with ``flip=True``
    each view is encoded a second time mirrored (cached beside it) and every click runs the decoder
    on both, averaging the logits. An :class:`~refcut.model.ensemble.EncodeOnceEnsemble` is driven
    the same way: one encoder pass per view, every member's decoder per click, probabilities averaged.

    ``refine="grabcut"`` (or another of ``GRABCUT_STEPS``) adds a boundary step: GrabCut initialised
    from the network's probability with the clicks as hard seeds
    (:func:`refcut.predictor.baselines.grabcut_refine`); ``refine="guided"`` (``GUIDED_STEPS``) an
    edge-aware guided filter of the probability with the image as guide, its window measured in
    decoder cells (:func:`refcut.predictor.guided.guided_refine`). When the caller passes the
    refined mask back as ``prev_mask``, the network is fed its own previous probability instead.

    ``reference_crop=r`` encodes the reference as a crop around its masks (the box of positive and
    negative together, scaled by ``r``, at least ``OBJECT_CROP_MIN_SIZE`` = 200 px a side) instead of the
    whole image, so its features have the scale of the zoomed-in target views (training draws
    references from such object crops too).

    ``reference_yield=r`` lets the clicks overrule the reference: when the network, with the reference,
    keeps the latest click's pixel on the wrong side and also an earlier click of the same label within
    ``r`` of the image's long side (the annotator clicking again where the reference draws the other
    way), that prediction and the later ones are made without the reference, until clicks are undone
    past that point or the image or reference changes.
    """

    def __init__(
        self,
        model: RefCutModel | EncodeOnceModel | EncodeOnceEnsemble,
        device: str | torch.device = "cpu",
        zoom_in: bool | ZoomInSettings | dict = True,
        flip: bool | None = None,
        threshold: float = 0.49,
        precision: str = "fp32",
        reference_cache_size: int = 8,
        image_cache_size: int = 4,
        refine: str | None = None,
        reference_crop: float | None = None,
        reference_yield: float | None = None,
    ) -> None:
        if reference_crop is not None and not reference_crop >= 1.0:
            raise ValueError(f"reference_crop must be None (the whole image) or an expansion ratio >= 1, got {reference_crop!r}")
        self.reference_crop = reference_crop
        if reference_yield is not None and not 0 < reference_yield <= 1:
            raise ValueError(f"reference_yield must be None (off) or a radius in (0, 1] of the image's long side, got {reference_yield!r}")
        self.reference_yield = reference_yield
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
        if refine not in REFINEMENTS:
            raise ValueError(f"refine must be one of {REFINEMENTS}, got {refine!r}")
        self.refine = refine
        self._image_np: np.ndarray | None = None
        self._last_refined: np.ndarray | None = None
        self._last_raw: np.ndarray | None = None
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.zoom_in = as_zoom_in_settings(zoom_in)
        self.encode_once = isinstance(model, (EncodeOnceModel, EncodeOnceEnsemble))
        self.flip = (not self.encode_once) if flip is None else flip
        self.threshold = threshold
        self.precision = precision
        self.reference_encodings = 0
        """How many times the backbone ran on a reference image (cache misses)."""
        self._feature_cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._cache_size = reference_cache_size
        self._prompt: torch.Tensor | None = None
        self._positive_prototype: torch.Tensor | None = None
        self._negative_prototype: torch.Tensor | None = None
        self._reference_contrast: float | None = None  # the reference boundary's colour contrast (adaptive steps)
        self._yield_from: int | None = None  # the click count from which the reference yields (reference_yield)
        self._image: torch.Tensor | None = None
        self._image_features: torch.Tensor | None = None
        self._box: Box | None = None
        self.encoder_calls = 0
        """How many views the encode-once family's encoders ran on (target images and crops)."""
        self._views: OrderedDict[str, dict[tuple[Box, bool], ViewEncoding]] = OrderedDict()
        self._image_cache_size = image_cache_size
        self._image_key: str | None = None
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, path: str | Path | None = None, device: str = "cpu", **kwargs) -> "RefCutPredictor":
        """Load a native model (directory with ``config.json`` + ``model.safetensors``).

        With no path, loads the default model shipped inside the package. Constructor options
        stored under ``"predictor"`` in ``config.json`` (e.g. ``{"refine": "grabcut"}``) are the
        defaults; keyword arguments override them.
        """
        if path is None:
            if not (DEFAULT_MODEL_DIR / "model.safetensors").exists():
                raise FileNotFoundError(
                    "this refcut install ships no default model yet; pass a model directory, e.g. "
                    "RefCutPredictor.from_pretrained('path/to/model_dir') (one written by save_pretrained, "
                    "`refcut import-weights` or `refcut train`)"
                )
            path = DEFAULT_MODEL_DIR
        model, meta = load_pretrained(path)
        options = {**meta.get("predictor", {}), **kwargs}  # a model folder may carry predictor defaults
        return cls(model, device=device, **options)

    def save_pretrained(self, directory: str | Path, **kwargs) -> Path:
        """Write the model in the native format (see :func:`refcut.weights.native.save_pretrained`)."""
        return save_pretrained(self.model, directory, **kwargs)

    @property
    def input_size(self) -> int:
        """The network's square input side in pixels."""
        return self.model.config.image_size

    def _autocast(self):
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _to_tensor(self, image: np.ndarray) -> torch.Tensor:
        image = image if image.flags.writeable else image.copy()  # torch warns on read-only arrays
        return torch.from_numpy(image).to(self.device).permute(2, 0, 1)[None].float() / 255.0

    def _resize_input(self, image: torch.Tensor) -> torch.Tensor:
        size = self.input_size
        return F.interpolate(image, size=(size, size), mode="bilinear", align_corners=False, antialias=True)

    # ---------------------------------------------------------------- reference
    @torch.inference_mode()
    def set_reference(
        self, image: np.ndarray, positive_mask: np.ndarray | None, negative_mask: np.ndarray | None = None
    ) -> None:
        """Set the reference: ``image`` HxWx3 uint8 RGB; masks HxW bool (either may be None or empty).

        The backbone features of the reference image are cached (keyed by the image's
        content and the encoded box), so switching between references or changing only the
        masks does not re-encode (with ``reference_crop``, masks with another box do). An empty
        or absent mask gives a zero prompt for its polarity.
        """
        image = as_rgb_uint8(image, "reference image")
        shape = image.shape[:2]
        positive = _as_mask(positive_mask, shape, "positive_mask")
        negative = _as_mask(negative_mask, shape, "negative_mask")
        box = self._reference_box(positive, negative, shape)
        y0, y1, x0, x1 = box
        crop = lambda m: None if m is None else m[y0 : y1 + 1, x0 : x1 + 1]  # noqa: E731
        positive, negative = crop(positive), crop(negative)
        key = f"{_image_key(image)}:{box}"
        features = self._feature_cache.get(key)
        if features is None:
            view = self._to_tensor(np.ascontiguousarray(image[y0 : y1 + 1, x0 : x1 + 1]))
            with self._autocast():
                features = self.model.encode_reference(self._resize_input(view)).float()
            self.reference_encodings += 1
            self._feature_cache[key] = features
            while len(self._feature_cache) > self._cache_size:
                self._feature_cache.popitem(last=False)
        else:
            self._feature_cache.move_to_end(key)
        as_tensor = lambda m: None if m is None else torch.from_numpy(m).to(self.device)[None, None].float()  # noqa: E731
        pos_t, neg_t = as_tensor(positive), as_tensor(negative)
        self._prompt = self.model.reference_prompt(features, pos_t, neg_t)
        from refcut.model.reference import masked_average_pool

        self._positive_prototype = masked_average_pool(features, pos_t)[0] if positive is not None and positive.any() else None
        self._negative_prototype = masked_average_pool(features, neg_t)[0] if negative is not None and negative.any() else None
        self._reference_contrast = None
        self._yield_from = None
        if positive is not None and self.refine in GUIDED_STEPS and "contrast_lo" in GUIDED_STEPS[self.refine]:
            self._reference_contrast = boundary_contrast(image[y0 : y1 + 1, x0 : x1 + 1], positive)

    def _reference_box(self, positive: np.ndarray | None, negative: np.ndarray | None, shape: tuple[int, int]) -> Box:
        """The part of the reference image that is encoded: the whole, or the crop ``reference_crop`` asks for."""
        masks = [m for m in (positive, negative) if m is not None and m.any()]
        if self.reference_crop is None or not masks:
            return full_box(*shape)
        box = mask_box(np.logical_or.reduce(masks))
        return expand_box(box, self.reference_crop, OBJECT_CROP_MIN_SIZE, *shape)

    def clear_reference(self) -> None:
        """Predict without a reference (zero prompts)."""
        self._prompt = None
        self._positive_prototype = None
        self._negative_prototype = None
        self._reference_contrast = None
        self._yield_from = None

    @property
    def has_reference(self) -> bool:
        """Whether a reference prompt is set."""
        return self._prompt is not None

    # -------------------------------------------------------------------- image
    def set_image(self, image: np.ndarray) -> None:
        """Set the target image (HxWx3 uint8 RGB; grayscale/RGBA converted). Resets the zoom-in state.

        An encode-once model encodes the whole image here (or finds it in its per-image cache).
        """
        image = as_rgb_uint8(image)
        self._image = self._to_tensor(image)
        self._image_np = image
        self._last_refined = self._last_raw = None
        self._image_features = None
        self._box = None
        self._yield_from = None
        if self.encode_once:
            self._image_key = _image_key(image)
            self._encode_views(self._image_key, self._image, full_box(*image.shape[:2]))

    def _encode_views(self, key: str, image: torch.Tensor, box: Box) -> list[ViewEncoding]:
        """The views a click on ``box`` decodes: the view itself, and its mirror image with ``flip``."""
        return [self._view(key, image, box, mirrored) for mirrored in ((False, True) if self.flip else (False,))]

    def preload(self, image: np.ndarray) -> None:
        """Encode an image's whole view into the cache without making it current (encode-once models).

        Safe to call from a background thread while another image is being segmented; a no-op
        for early-fusion models (they have nothing to precompute).
        """
        if not self.encode_once:
            return
        image = as_rgb_uint8(image)
        self._encode_views(_image_key(image), self._to_tensor(image), full_box(*image.shape[:2]))

    @torch.inference_mode()
    def _view(self, key: str, image: torch.Tensor, box: Box, mirrored: bool = False) -> ViewEncoding:
        """The encoded view of ``box`` of an image (left-right mirrored when asked), from the cache or encoded now."""
        with self._lock:
            views = self._views.get(key)
            if views is not None:
                self._views.move_to_end(key)
                if (box, mirrored) in views:
                    return views[(box, mirrored)]
        pixels = view_resize(image, box, self.input_size)
        if mirrored:
            pixels = pixels.flip(-1)
        with self._autocast():
            encoded = self.model.encode_view(self.model.encode(pixels), pixels)
        with self._lock:
            self.encoder_calls += 1
            views = self._views.setdefault(key, {})
            whole = full_box(*image.shape[-2:])
            if box != whole:  # one crop per image at a time: the zoom box (and its mirror image)
                for old in [k for k in views if k[0] not in (whole, box)]:
                    del views[old]
            views[(box, mirrored)] = encoded
            self._views.move_to_end(key)
            while len(self._views) > self._image_cache_size:
                self._views.popitem(last=False)
        return encoded

    @property
    def image_size(self) -> tuple[int, int]:
        """``(height, width)`` of the current image."""
        if self._image is None:
            raise RuntimeError("no image set: call set_image(image) first")
        return tuple(self._image.shape[-2:])  # type: ignore[return-value]

    def _validate_clicks(self, point_coords: np.ndarray, point_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        height, width = self.image_size
        coords = np.asarray(point_coords, dtype=np.float64)
        labels = np.asarray(point_labels)
        if coords.ndim != 2 or coords.shape[1] != 2:
            raise ValueError(f"point_coords must have shape (N, 2) as (x, y) pixels, got {coords.shape}")
        if len(coords) == 0:
            raise ValueError("point_coords is empty: give at least one click")
        if labels.shape != (len(coords),):
            raise ValueError(f"point_labels must have shape ({len(coords)},), got {labels.shape}")
        if not np.all(np.isin(labels, (0, 1))):
            raise ValueError(f"point_labels must be 1 (positive) or 0 (negative), got {np.unique(labels).tolist()}")
        if not np.all(np.isfinite(coords)):
            raise ValueError("point_coords contains NaN or infinite values")
        outside = (coords[:, 0] < 0) | (coords[:, 0] > width - 1) | (coords[:, 1] < 0) | (coords[:, 1] > height - 1)
        if outside.any():
            bad = coords[np.argmax(outside)].tolist()
            raise ValueError(f"click {bad} (x, y) lies outside the {width}x{height} image")
        return coords, labels.astype(np.int64)

    # ------------------------------------------------------------------ predict
    @torch.inference_mode()
    def predict(
        self, point_coords: np.ndarray, point_labels: np.ndarray, prev_mask: np.ndarray | None = None
    ) -> PredictionResult:
        """Segment from all clicks so far.

        ``point_coords`` (N, 2) pixel ``(x, y)`` in click order; ``point_labels`` (N,)
        1 positive / 0 negative; ``prev_mask`` the previous step's HxW probability (or
        bool mask), None at the first click.
        """
        height, width = self.image_size
        coords, labels = self._validate_clicks(point_coords, point_labels)
        if self.refine is not None and prev_mask is not None and prev_mask is self._last_refined:
            prev_mask = self._last_raw  # the network continues from its own probability
        prev = _as_prev(prev_mask, (height, width))
        points_yx = coords[:, ::-1].copy()
        if prev is None or not (prev > self.zoom_in.mask_threshold).any():
            self._box = None
        self._box = zoom_in_box(prev, points_yx[labels == 1], self._box, self.zoom_in)
        box = self._box or full_box(height, width)

        prev_t = torch.zeros(1, 1, height, width, device=self.device) if prev is None else torch.from_numpy(prev).to(self.device)[None, None]
        network = self._predict_encode_once if self.encode_once else self._predict_early_fusion
        return self._finish(self._network_prob(lambda prompt: network(box, prev_t, points_yx, labels, prompt), points_yx, labels),
                            coords, labels)

    def _network_prob(self, network, points_yx: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """The network's HxW probability (``network(prompt)``), with the reference, or without it where it yields.

        With ``reference_yield``, once the reference overrules the latest click and an earlier click of
        the same label nearby (the annotator insisting on a region the reference draws the other way),
        the clicks decide without the reference from that click on, until clicks are undone past it.
        """
        if self._yield_from is not None and len(labels) < self._yield_from:
            self._yield_from = None  # clicks were undone past the point where the reference yielded
        if self._prompt is None or self._yield_from is not None:
            return network(None)
        prob = network(self._prompt)
        if self._clicks_insist(prob, points_yx, labels):
            self._yield_from = len(labels)
            prob = network(None)
        return prob

    def _predict_early_fusion(self, box: Box, prev_t: torch.Tensor, points_yx: np.ndarray, labels: np.ndarray, prompt) -> np.ndarray:
        """The early-fusion network's HxW probability on the crop ``box`` (flip-averaged with ``flip``)."""
        height, width = self.image_size
        size = self.input_size
        net_image = crop_resize(self._image, box, size)
        net_prev = crop_resize(prev_t, box, size)
        net_points = points_to_network(points_yx, box, size)
        points = torch.from_numpy(np.concatenate([net_points, labels[:, None]], axis=1)).float()[None].to(self.device)
        if self.flip:
            net_image = torch.cat([net_image, net_image.flip(-1)])
            net_prev = torch.cat([net_prev, net_prev.flip(-1)])
            points = torch.cat([points, _mirror_points(points, size)])
        with self._autocast():
            logits = self.model(net_image, net_prev, points, prompt).float()
        if self.flip:
            logits = 0.5 * (logits[:1] + logits[1:].flip(-1))
        prob = paste_back(torch.sigmoid(logits[0, 0]), box, height, width).clamp(0, 1)
        return prob.cpu().numpy().astype(np.float32)

    def _finish(self, prob: np.ndarray, coords: np.ndarray, labels: np.ndarray) -> PredictionResult:
        """Threshold the network's probability, after the boundary step when one is set."""
        if self.refine is not None:
            assert self._image_np is not None
            self._last_raw = prob
            if self.refine in GUIDED_STEPS:
                box = self._box or full_box(*prob.shape)
                cell_px = max(box[1] - box[0] + 1, box[3] - box[2] + 1) / (self.input_size / LOGIT_STRIDE)
                prob = guided_step(self.refine, self._image_np, prob, coords, labels, cell_px, self._reference_contrast)
            else:
                prob = grabcut_refine(self._image_np, prob, coords, labels, **GRABCUT_STEPS[self.refine])
            self._last_refined = prob
        return PredictionResult(mask=prob > self.threshold, prob=prob)

    def _predict_encode_once(self, box: Box, prev_t: torch.Tensor, points_yx: np.ndarray, labels: np.ndarray, prompt) -> np.ndarray:
        """The decoder's HxW probability on the (cached) view of ``box``; see :meth:`predict`."""
        height, width = self.image_size
        size = self.input_size
        assert self._image_key is not None
        views = self._encode_views(self._image_key, self._image, box)
        net_prev = view_resize(prev_t, box, size)
        net_points = points_to_network(points_yx, box, size)
        points = torch.from_numpy(np.concatenate([net_points, labels[:, None]], axis=1)).float()[None].to(self.device)
        with self._autocast():
            logits = self.model.decode(views[0], net_prev, points, prompt).float()
            if len(views) == 2:  # flip averaging: the mirrored view with mirrored clicks, mapped back
                flipped = self.model.decode(views[1], net_prev.flip(-1), _mirror_points(points, size), prompt).float()
                logits = 0.5 * (logits + flipped.flip(-1))
        prob = paste_back(torch.sigmoid(logits[0, 0]), box, height, width).clamp(0, 1)
        return prob.cpu().numpy().astype(np.float32)

    def _clicks_insist(self, prob: np.ndarray, points_yx: np.ndarray, labels: np.ndarray) -> bool:
        """Whether ``prob`` overrules the latest click and an earlier click of its label within ``reference_yield``
        of the image's long side."""
        if self.reference_yield is None or len(labels) < 2:
            return False
        rows, cols = np.round(points_yx).astype(int).T
        overruled = (prob[rows, cols] > self.threshold) != labels.astype(bool)
        if not overruled[-1]:
            return False
        same = labels[:-1] == labels[-1]
        near = np.hypot(*(points_yx[:-1] - points_yx[-1]).T) <= self.reference_yield * max(prob.shape)
        return bool((same & near & overruled[:-1]).any())

    @torch.inference_mode()
    def propose_point(self) -> tuple[int, int] | None:
        """A first click ``(x, y)`` where the image best matches the reference's positive features.

        Scores every patch by cosine similarity to the positive prototype (minus the
        similarity to the negative prototype when one is set) and returns the centre of
        the best patch in image pixels; None without a positive reference.
        """
        height, width = self.image_size
        if self._positive_prototype is None:
            return None
        if self._image_features is None and self.encode_once:
            assert self._image_key is not None
            view = self._view(self._image_key, self._image, full_box(height, width))
            self._image_features = self.model.view_unit_features(view)
        elif self._image_features is None:
            with self._autocast():
                self._image_features = self.model.encode_reference(self._resize_input(self._image)).float()
        feats = F.normalize(self._image_features[0], dim=0)
        score = torch.einsum("dhw,d->hw", feats, F.normalize(self._positive_prototype[0], dim=0))
        if self._negative_prototype is not None:
            score = score - torch.einsum("dhw,d->hw", feats, F.normalize(self._negative_prototype[0], dim=0))
        grid_h, grid_w = score.shape
        row, col = divmod(int(torch.argmax(score)), grid_w)
        x = int(min(width - 1, (col + 0.5) * width / grid_w))
        y = int(min(height - 1, (row + 0.5) * height / grid_h))
        return x, y


def _mirror_points(points: torch.Tensor, size: int) -> torch.Tensor:
    """Click rows ``(y, x, label)`` in a ``size``-px view, mapped into its left-right mirror image."""
    mirrored = points.clone()
    mirrored[..., 1] = size - 1 - mirrored[..., 1]
    return mirrored


def _image_key(image: np.ndarray) -> str:
    return hashlib.sha1(image.tobytes()).hexdigest() + str(image.shape)


def _as_prev(prev_mask: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray | None:
    if prev_mask is None:
        return None
    prev = np.asarray(prev_mask)
    if prev.shape != shape:
        raise ValueError(f"prev_mask has shape {prev.shape}, expected {shape} (the image's height x width)")
    prev = prev.astype(np.float32)
    if not np.all(np.isfinite(prev)) or prev.min() < 0 or prev.max() > 1:
        raise ValueError("prev_mask must hold probabilities in [0, 1] (or be a bool mask)")
    return prev
