"""Test doubles and fixtures shared by the app tests (not a test module)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from refcut.app.project import open_project
from refcut.app.server import create_app
from refcut.app.service import ModelSession
from refcut.predictor.base import PredictionResult


class DiskPredictor:
    """A fake InteractivePredictor: union of disks around positive clicks minus disks around negatives.

    The disk radius comes from the reference (radius of a disk with the reference's positive area),
    20 px without one, so tests can see that the reference is used. Detects overlapping calls.
    """

    threshold = 0.5

    def __init__(self, delay: float = 0.0, with_propose: bool = True):
        self.delay = delay
        self.image: np.ndarray | None = None
        self.radius = 20.0
        self.set_image_calls = 0
        self.set_reference_calls = 0
        self.clear_reference_calls = 0
        self.predict_calls = 0
        self.overlaps = 0
        self.last_prev: np.ndarray | None = None
        self._busy = False
        self._guard = threading.Lock()
        if not with_propose:
            self.propose_point = None  # type: ignore[assignment]

    def _enter(self) -> None:
        with self._guard:
            if self._busy:
                self.overlaps += 1
            self._busy = True

    def _leave(self) -> None:
        with self._guard:
            self._busy = False

    def set_reference(self, image, positive_mask, negative_mask=None) -> None:
        self._enter()
        try:
            assert image.dtype == np.uint8 and image.ndim == 3
            assert positive_mask.shape == image.shape[:2]
            self.set_reference_calls += 1
            self.radius = max(2.0, float(np.sqrt(positive_mask.sum() / np.pi)))
        finally:
            self._leave()

    def clear_reference(self) -> None:
        self.clear_reference_calls += 1
        self.radius = 20.0

    def set_image(self, image) -> None:
        self._enter()
        try:
            assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
            self.image = image
            self.set_image_calls += 1
        finally:
            self._leave()

    def predict(self, point_coords, point_labels, prev_mask=None) -> PredictionResult:
        self._enter()
        try:
            if self.delay:
                time.sleep(self.delay)
            assert self.image is not None
            self.predict_calls += 1
            self.last_prev = prev_mask
            height, width = self.image.shape[:2]
            assert np.all(point_coords[:, 0] <= width - 1) and np.all(point_coords[:, 1] <= height - 1)
            ys, xs = np.mgrid[0:height, 0:width]
            mask = np.zeros((height, width), bool)
            for (x, y), label in zip(point_coords, point_labels):
                disk = (xs - x) ** 2 + (ys - y) ** 2 <= self.radius**2
                mask = mask | disk if label == 1 else mask & ~disk
            return PredictionResult(mask=mask, prob=mask.astype(np.float32))
        finally:
            self._leave()

    def propose_point(self):
        height, width = self.image.shape[:2]
        return width // 2, height // 2


def write_images(folder: Path, count: int = 3, size: tuple[int, int] = (64, 48)) -> list[Path]:
    """Write ``count`` small RGB JPEGs (width, height = size) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        path = folder / f"img_{index:02d}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


WIDTH, HEIGHT = 64, 48
BASE_URL = "http://127.0.0.1:8765"  # the app answers only to the hosts it is bound to (not TestClient's "testserver")


class App:
    """A project + fake predictor + TestClient."""

    def __init__(self, root: Path, predictor=None, max_side: int = 1600, with_model: bool = True, **app_kwargs):
        self.images_dir = root / "images"
        write_images(self.images_dir, count=3, size=(WIDTH, HEIGHT))
        self.project = open_project(root / "project", self.images_dir)
        self.predictor = predictor or DiskPredictor()
        self.session = ModelSession(self.predictor, self.project, max_side=max_side) if with_model else None
        self.client = TestClient(create_app(self.project, self.session, **app_kwargs), base_url=BASE_URL)

    def label(self, name: str = "thing") -> int:
        response = self.client.post("/api/labels", json={"name": name})
        assert response.status_code == 201, response.text
        return response.json()["id"]

    def predict(self, image_id: int, label_id: int | None, clicks, **extra) -> dict:
        response = self.client.post("/api/predict", json={"image_id": image_id, "label_id": label_id, "clicks": clicks, **extra})
        assert response.status_code == 200, response.text
        return response.json()

    def accept(self, image_id: int, label_id: int, rle: dict, clicks=()) -> dict:
        response = self.client.post("/api/annotations", json={"image_id": image_id, "label_id": label_id,
                                                               "mask": {"rle": rle}, "clicks": list(clicks)})
        assert response.status_code == 201, response.text
        return response.json()


def box_mask(box=(10, 30, 20, 44)) -> np.ndarray:
    """A HEIGHT x WIDTH mask with the box [y0:y1, x0:x1] on."""
    mask = np.zeros((HEIGHT, WIDTH), bool)
    mask[box[0]:box[1], box[2]:box[3]] = True
    return mask
