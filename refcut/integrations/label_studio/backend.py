"""The backend's logic: Label Studio requests in, RefCut predictions out (no HTTP here; see ``server.py``).

One predictor serves every request, behind a lock (predictors are not thread-safe). It keeps the
image it was last given, so ``set_image`` (where an encode-once model encodes the image) runs only
when the annotator moves to another task; decoded task images sit in a small LRU keyed by task
and URL, and the probability map after each click is kept so the next click of the same label
refines it (``prev_mask``). Images are segmented at their full size, the size Label Studio's brush
masks have.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from refcut.app.images import ImageLoadError, load_rgb
from refcut.integrations.label_studio.client import LabelStudioClient, LabelStudioError
from refcut.integrations.label_studio.protocol import (
    ClickContext,
    Keypoint,
    LabelingConfig,
    ProtocolError,
    brush_region,
    parse_context,
    prediction,
)
from refcut.integrations.label_studio.references import Reference, ReferenceStore
from refcut.predictor.base import InteractivePredictor

logger = logging.getLogger("refcut.label_studio")


class BackendError(Exception):
    """A request the backend could not serve; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def as_backend_error(error: Exception) -> BackendError:
    """Map the errors of the layers below to an HTTP status (422 bad input, 502 Label Studio trouble)."""
    if isinstance(error, BackendError):
        return error
    if isinstance(error, LabelStudioError):
        return BackendError(str(error), 503 if error.unreachable else 502)
    if isinstance(error, (ProtocolError, ImageLoadError, ValueError)):
        return BackendError(str(error), 422)
    raise error


@dataclass
class Answer:
    """What ``/predict`` answers: a JSON body and its HTTP status."""

    body: dict
    status: int = 200


class RefCutBackend:
    """Interactive and batch pre-annotation for Label Studio projects with one RefCut predictor."""

    def __init__(self, predictor: InteractivePredictor, client: LabelStudioClient, references: ReferenceStore,
                 model_version: str, image_cache_size: int = 8, click_cache_size: int = 32) -> None:
        self.predictor = predictor
        self.client = client
        self.references = references
        self.model_version = model_version
        self.threshold = float(getattr(predictor, "threshold", 0.5))
        self._images: OrderedDict[tuple[int, str], np.ndarray] = OrderedDict()
        self._image_cache_size = image_cache_size
        self._images_lock = threading.Lock()
        self._model_lock = threading.Lock()
        self._current_image: tuple[int, str] | None = None
        self._current_reference: tuple | None = ("unset",)
        self._probs: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._click_cache_size = click_cache_size
        self._tmp = Path(tempfile.mkdtemp(prefix="refcut-ls-"))
        self.image_fetches = 0
        """How many images were fetched from Label Studio (cache misses)."""

    def close(self) -> None:
        """Drop the temporary folder and the HTTP connections."""
        shutil.rmtree(self._tmp, ignore_errors=True)
        self.client.close()

    # -- protocol entry points ------------------------------------------------------------------
    def setup(self, label_config: str | None) -> dict:
        """``/setup``: check the project's labeling config; answer the model version."""
        config = LabelingConfig.parse(label_config)
        if not config.keypoint_names:
            logger.warning("labeling config has no KeyPointLabels on <Image name=%r>: batch pre-annotation only, "
                           "no interactive clicks", config.image_name)
        return {"model_version": self.model_version}

    def predict(self, tasks: list[dict], project: str | int | None, label_config: str | None,
                context: dict | None) -> Answer:
        """``/predict``: one prediction per task, from the context's keypoints (interactive) or a proposal (batch)."""
        try:
            config = LabelingConfig.parse(label_config)
            project_id = _project_id(project, tasks)
            clicks = parse_context(context, config)
        except (ProtocolError, BackendError) as error:
            return self._error(as_backend_error(error), tasks)
        if clicks is not None:
            if len(tasks) != 1:
                return self._error(BackendError(f"an interactive request must carry one task, got {len(tasks)}", 422),
                                   tasks)
            try:
                return Answer({"results": [self._interactive(tasks[0], project_id, config, clicks)]})
            except (LabelStudioError, ProtocolError, ImageLoadError, ValueError, BackendError) as error:
                return self._error(as_backend_error(error), tasks)
        if context:  # interaction without keypoints (e.g. a rectangle): nothing for RefCut to do
            return Answer({"results": [prediction([], self.model_version)]})
        return self._batch(tasks, project_id, config)

    def _error(self, error: BackendError, tasks: list[dict]) -> Answer:
        ids = [task.get("id") for task in tasks if isinstance(task, dict)]
        logger.warning("predict failed (tasks %s): %s", ids, error)
        return Answer({"error": str(error), "status": "error", "results": []}, error.status)

    # -- interactive ----------------------------------------------------------------------------
    def _interactive(self, task: dict, project_id: int, config: LabelingConfig, clicks: ClickContext) -> dict:
        task_id, url = _task_image(task, config)
        reference = self.references.references(project_id, config).get(clicks.label)
        image = self._image(task_id, url)
        if reference is not None:
            self._image(reference.task_id, reference.image_url)  # fetched outside the model lock
        height, width = image.shape[:2]
        if (width, height) != (clicks.width, clicks.height):
            raise ProtocolError(f"Label Studio shows task {task_id}'s image at {clicks.width}x{clicks.height}, but it "
                                f"decodes to {width}x{height} (an EXIF rotation the browser ignores?)")
        coords = np.array([point.to_pixels(width, height) for point in clicks.keypoints], dtype=np.float64)
        labels = np.array([1 if point.positive else 0 for point in clicks.keypoints], dtype=np.int64)
        with self._model_lock:
            self._ensure_image((task_id, url), image)
            self._ensure_reference(reference)
            prev = self._probs.get(_click_key(task_id, url, clicks.label, clicks.keypoints[:-1]))
            result = self.predictor.predict(coords, labels, prev)
            self._remember(_click_key(task_id, url, clicks.label, clicks.keypoints), result.prob)
        mask = np.asarray(result.mask, dtype=bool)
        region = brush_region(mask, clicks.label, config, _score(result.prob, mask))
        info: dict = {"label": clicks.label, "clicks": len(clicks.keypoints),
                      "reference": None if reference is None else reference.describe()}
        if reference is None:
            info["message"] = (f"label {clicks.label!r} has no reference yet, so this mask is predicted without one; "
                               "the first submitted annotation with this label becomes its reference")
            logger.info("task %d: %s", task_id, info["message"])
        return prediction([region], self.model_version, refcut=info)

    # -- batch ----------------------------------------------------------------------------------
    def _batch(self, tasks: list[dict], project_id: int, config: LabelingConfig) -> Answer:
        results: list = []
        errors: list[dict] = []
        failures: list[BackendError] = []
        try:
            references = self.references.references(project_id, config)
        except LabelStudioError as error:
            return self._error(as_backend_error(error), tasks)
        for task in tasks:
            try:
                results.append(self._pre_annotate(task, config, references))
            except (LabelStudioError, ProtocolError, ImageLoadError, ValueError, BackendError) as error:
                failure = as_backend_error(error)
                logger.warning("no prediction for task %s: %s", task.get("id"), failure)
                errors.append({"task": task.get("id"), "error": str(failure)})
                failures.append(failure)
                results.append([])  # a list of no predictions: Label Studio stores nothing for this task
        status = failures[0].status if tasks and len(failures) == len(tasks) else 200
        body: dict = {"results": results}
        if errors:
            body["errors"] = errors
        return Answer(body, status)

    def _pre_annotate(self, task: dict, config: LabelingConfig, references: dict[str, Reference]) -> dict | list:
        task_id, url = _task_image(task, config)
        if task.get("annotations"):
            logger.info("task %d already has annotations: no pre-annotation", task_id)
            return []
        usable = [references[label] for label in config.labels if label in references
                  and references[label].task_id != task_id]
        if not usable:
            raise BackendError("no label has a reference yet: submit one annotation with a brush mask per label "
                               "(or start the backend with --reference LABEL=TASK_ID)", 422)
        propose = getattr(self.predictor, "propose_point", None)
        if not callable(propose):
            raise BackendError("the loaded model cannot propose points (no propose_point), so it cannot pre-annotate",
                               422)
        image = self._image(task_id, url)
        for reference in usable:
            self._image(reference.task_id, reference.image_url)  # fetched outside the model lock
        regions, used = [], []
        with self._model_lock:
            self._ensure_image((task_id, url), image)
            for reference in usable:
                self._ensure_reference(reference)
                point = propose()
                if point is None:
                    continue
                result = self.predictor.predict(np.array([point], dtype=np.float64), np.array([1]), None)
                mask = np.asarray(result.mask, dtype=bool)
                regions.append(brush_region(mask, reference.label, config, _score(result.prob, mask)))
                used.append({**reference.describe(), "point": [int(point[0]), int(point[1])]})
        if not regions:
            return []
        return prediction(regions, self.model_version, refcut={"proposals": used})

    # -- state ----------------------------------------------------------------------------------
    def _image(self, task_id: int, url: str) -> np.ndarray:
        """The task's image as HxWx3 uint8 RGB, fetched from Label Studio once and kept in the LRU."""
        key = (task_id, url)
        with self._images_lock:
            if key in self._images:
                self._images.move_to_end(key)
                return self._images[key]
        data, name = self.client.fetch_image(url)
        self.image_fetches += 1
        folder = Path(tempfile.mkdtemp(dir=self._tmp))
        try:  # refcut's loader works on files: same checks (size limit, EXIF orientation, any mode) as the app
            path = folder / name
            path.write_bytes(data)
            image = load_rgb(path)
        except ImageLoadError as error:
            raise ImageLoadError(f"task {task_id}: {error}") from error
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        with self._images_lock:
            self._images[key] = image
            while len(self._images) > self._image_cache_size:
                self._images.popitem(last=False)
        return image

    def _ensure_image(self, key: tuple[int, str], image: np.ndarray) -> None:
        if key != self._current_image:
            self.predictor.set_image(image)
            self._current_image = key

    def _ensure_reference(self, reference: Reference | None) -> None:
        key = None if reference is None else reference.key
        if key == self._current_reference:
            return
        if reference is None:
            self.predictor.clear_reference()
        else:
            image = self._image(reference.task_id, reference.image_url)
            if image.shape[:2] != reference.positive.shape:
                raise ProtocolError(
                    f"the {reference.label!r} reference (annotation {reference.annotation_id} of task "
                    f"{reference.task_id}) has a {reference.positive.shape[1]}x{reference.positive.shape[0]} mask, "
                    f"but its image is {image.shape[1]}x{image.shape[0]}")
            self.predictor.set_reference(image, reference.positive, reference.negative)
        self._current_reference = key

    def _remember(self, key: tuple, prob: np.ndarray) -> None:
        self._probs[key] = np.asarray(prob, dtype=np.float32)
        self._probs.move_to_end(key)
        while len(self._probs) > self._click_cache_size:
            self._probs.popitem(last=False)


def _click_key(task_id: int, url: str, label: str, keypoints: tuple[Keypoint, ...]) -> tuple:
    return task_id, url, label, keypoints


def _score(prob: np.ndarray, mask: np.ndarray) -> float:
    """Mean probability inside the mask (0 for an empty mask), the app's score."""
    return float(np.asarray(prob)[mask].mean()) if mask.any() else 0.0


def _task_image(task: dict, config: LabelingConfig) -> tuple[int, str]:
    if not isinstance(task, dict) or "id" not in task:
        raise ProtocolError("every task must be an object with an 'id'")
    url = (task.get("data") or {}).get(config.image_field)
    if not isinstance(url, str) or not url:
        raise ProtocolError(f"task {task['id']} has no image URL in data.{config.image_field} "
                            f"(the <Image value=\"${config.image_field}\"> of the labeling config)")
    return int(task["id"]), url


def _project_id(project: str | int | None, tasks: list[dict]) -> int:
    """Label Studio sends ``project`` as ``"<id>.<created timestamp>"``; fall back to the tasks' ``project``."""
    candidates = [str(project).split(".", 1)[0]] if project not in (None, "") else []
    candidates += [str(task.get("project")) for task in tasks if isinstance(task, dict) and task.get("project")]
    for candidate in candidates:
        if candidate.isdigit():
            return int(candidate)
    raise ProtocolError("the request names no project (neither 'project' nor tasks[].project)")
