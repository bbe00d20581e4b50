"""The model session: one predictor driven from one worker thread, with image/reference caching.

The predictor is not thread-safe, so every model call runs on a single worker thread behind a
lock. The session keeps the current image set (``set_image`` only when the image changes) and the
current reference (``set_reference`` again only when the label's reference changes; the predictor
caches reference features itself). Large images are decoded for the model at reduced size (long
side at most ``max_side``, through the project's image cache, never at full size) and masks are
returned at the image's full size, built at one byte per pixel. Clicks and masks are always in
full-size pixel coordinates of the EXIF-oriented image.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from refcut.app.images import ImageLoadError, upscale_prob_mask
from refcut.app.masks import sample_rle
from refcut.app.project import Project
from refcut.app.storage import ReferenceRow
from refcut.predictor.base import InteractivePredictor

T = TypeVar("T")
DEFAULT_MAX_SIDE = 1600
MAX_CLICKS = 100


@dataclass
class Prediction:
    """A mask at the image's full size plus what the page shows about it."""

    token: str
    mask: np.ndarray
    score: float
    used_reference: bool
    elapsed_ms: float


@dataclass
class Proposal:
    """A proposed first click and its mask, or the reason there is none."""

    point: tuple[int, int] | None
    prediction: Prediction | None
    reason: str | None = None


class ModelSession:
    """Serialises all predictor calls and keeps the image and reference state in sync with requests."""

    def __init__(self, predictor: InteractivePredictor, project: Project, max_side: int = DEFAULT_MAX_SIDE,
                 token_cache_size: int = 32):
        self.predictor = predictor
        self.project = project
        self.max_side = max_side
        self.threshold = float(getattr(predictor, "threshold", 0.5))
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="refcut-model")
        # Encode-once models encode images ahead (the next image while the user works on this one)
        # on a second thread: preload() is safe beside predict() and only fills the predictor's cache.
        self._prefetch = ThreadPoolExecutor(max_workers=1, thread_name_prefix="refcut-prefetch")
        self._prefetched: OrderedDict[tuple, None] = OrderedDict()
        self._lock = threading.Lock()
        self._image_key: tuple | None = None
        self._image_shape: tuple[int, int] = (0, 0)  # full size (height, width)
        self._small_shape: tuple[int, int] = (0, 0)  # what the predictor sees
        self._scale = 1.0
        self._reference_key: tuple | None = ("unset",)
        self._tokens: OrderedDict[str, tuple[int, np.ndarray]] = OrderedDict()
        self._token_cache_size = token_cache_size

    @property
    def can_propose(self) -> bool:
        return callable(getattr(self.predictor, "propose_point", None))

    @property
    def can_prepare(self) -> bool:
        """Whether the predictor can encode images ahead of use (encode-once models)."""
        return callable(getattr(self.predictor, "preload", None)) and bool(getattr(self.predictor, "encode_once", False))

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._prefetch.shutdown(wait=False, cancel_futures=True)

    def prepare(self, image_ids: list[int]) -> list[int]:
        """Encode these images in the background (no-op for models without ``preload``); returns those scheduled."""
        if not self.can_prepare:
            return []
        scheduled = []
        for image_id in image_ids:
            image = self.project.storage.get_image(image_id)
            if image.error:
                continue
            try:
                key = (image_id, self.project.image_path(image).stat().st_mtime_ns)
            except OSError:
                continue
            if key in self._prefetched or key == self._image_key:
                continue
            self._prefetched[key] = None
            while len(self._prefetched) > 16:
                self._prefetched.popitem(last=False)

            def work(image=image) -> None:
                try:
                    scaled = self.project.load_scaled(image, self.max_side)
                    self.predictor.preload(np.array(scaled.rgb))  # type: ignore[attr-defined]
                except Exception:  # a background guess: errors surface when the image is really used
                    pass

            self._prefetch.submit(work)
            scheduled.append(image_id)
        return scheduled

    def _run(self, work: Callable[[], T]) -> T:
        def locked() -> T:
            with self._lock:
                return work()

        return self._executor.submit(locked).result()

    # -- state syncing (worker thread only) --------------------------------------------------
    def _ensure_image(self, image_id: int) -> None:
        image = self.project.storage.get_image(image_id)
        if image.error:
            raise ImageLoadError(image.error)
        path = self.project.image_path(image)
        key = (image_id, path.stat().st_mtime_ns)
        if key == self._image_key:
            return
        scaled = self.project.load_scaled(image, self.max_side)
        self.predictor.set_image(np.array(scaled.rgb))  # a writable copy: the cached array is shared, read-only
        self._image_key, self._scale = key, scaled.scale
        self._image_shape, self._small_shape = (scaled.height, scaled.width), scaled.rgb.shape[:2]

    def _ensure_reference(self, reference: ReferenceRow | None) -> None:
        key = None if reference is None else ("ref", reference.id)
        if key == self._reference_key:
            return
        if reference is None:
            self.predictor.clear_reference()
        else:
            scaled = self.project.load_scaled(self.project.storage.get_image(reference.image_id), self.max_side)
            height, width = scaled.rgb.shape[:2]
            if list(reference.positive_rle["size"]) != [scaled.height, scaled.width]:
                raise ValueError(f"reference mask is {reference.positive_rle['size']}, its image is "
                                 f"{[scaled.height, scaled.width]}")
            positive = sample_rle(reference.positive_rle, width, height)  # never built at full size
            negative = sample_rle(reference.negative_rle, width, height) if reference.negative_rle else None
            self.predictor.set_reference(np.array(scaled.rgb), positive, negative)
        self._reference_key = key

    def _reference_for(self, label_id: int | None, use_reference: bool) -> ReferenceRow | None:
        if label_id is None or not use_reference:
            return None
        return self.project.storage.current_reference(label_id)

    def _predict_locked(self, image_id: int, reference: ReferenceRow | None, clicks: list[tuple[float, float, bool]],
                        prev_token: str | None) -> Prediction:
        start = time.perf_counter()
        self._ensure_image(image_id)
        self._ensure_reference(reference)
        height, width = self._image_shape
        small_h, small_w = self._small_shape
        coords = np.array([[min(x * self._scale, small_w - 1), min(y * self._scale, small_h - 1)] for x, y, _ in clicks],
                          dtype=np.float64)
        labels = np.array([1 if positive else 0 for *_, positive in clicks], dtype=np.int64)
        prev = None
        if prev_token is not None:
            cached = self._tokens.get(prev_token)
            if cached is not None and cached[0] == image_id:
                prev = cached[1].astype(np.float32)
        result = self.predictor.predict(coords, labels, prev)
        prob_small = np.asarray(result.prob, dtype=np.float32)
        if self._scale < 1.0:
            mask = upscale_prob_mask(prob_small, width, height, self.threshold)
            inside = prob_small > self.threshold
        else:
            mask = inside = np.asarray(result.mask, dtype=bool)
        score = float(prob_small[inside].mean()) if inside.any() else 0.0
        token = uuid.uuid4().hex
        self._tokens[token] = (image_id, prob_small.astype(np.float16))
        while len(self._tokens) > self._token_cache_size:
            self._tokens.popitem(last=False)
        return Prediction(token=token, mask=mask, score=score, used_reference=reference is not None,
                          elapsed_ms=(time.perf_counter() - start) * 1000)

    # -- public API (any thread) -------------------------------------------------------------
    def predict(self, image_id: int, label_id: int | None, clicks: list[tuple[float, float, bool]],
                prev_token: str | None = None, use_reference: bool = True) -> Prediction:
        """Mask for ``clicks`` [(x, y, positive)] on an image, guided by the label's reference if it has one."""
        image = self.project.storage.get_image(image_id)
        if image.error:
            raise ImageLoadError(image.error)
        if not clicks or len(clicks) > MAX_CLICKS:
            raise ValueError(f"give 1 to {MAX_CLICKS} clicks per prediction")
        check_clicks([(x, y) for x, y, _ in clicks], image.width, image.height)
        reference = self._reference_for(label_id, use_reference)
        return self._run(lambda: self._predict_locked(image_id, reference, clicks, prev_token))

    def propose(self, image_id: int, label_id: int) -> Proposal:
        """Place the first click where the image best matches the label's reference, and predict from it."""
        reference = self.project.storage.current_reference(label_id)
        if reference is None:
            return Proposal(None, None, "this label has no reference yet: set one or accept a first instance")
        if not self.can_propose:
            return Proposal(None, None, "the loaded model cannot propose points (no propose_point method)")

        def work() -> Proposal:
            self._ensure_image(image_id)
            self._ensure_reference(reference)
            point = self.predictor.propose_point()  # type: ignore[attr-defined]
            if point is None:
                return Proposal(None, None, "the model found no match for the reference in this image")
            height, width = self._image_shape
            x = int(min(width - 1, max(0, round(point[0] / self._scale))))
            y = int(min(height - 1, max(0, round(point[1] / self._scale))))
            prediction = self._predict_locked(image_id, reference, [(x, y, True)], None)
            return Proposal((x, y), prediction)

        self.project.storage.get_image(image_id)
        return self._run(work)


def check_clicks(points: list[tuple[float, float]], width: int, height: int) -> None:
    """ValueError unless every (x, y) is a finite pixel position inside a width x height image."""
    if width <= 0 or height <= 0:
        raise ValueError("this image could not be read, so it cannot take clicks")
    for x, y in points:
        if not (math.isfinite(x) and math.isfinite(y)) or not (0 <= x <= width - 1 and 0 <= y <= height - 1):
            raise ValueError(f"click ({x}, {y}) lies outside the {width}x{height} image "
                             "(clicks are finite pixel coordinates)")
