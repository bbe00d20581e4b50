"""One reference per label, read from the project's annotations in Label Studio.

Which annotation is a label's reference, in this order:

1. ``--reference LABEL=TASK_ID``: that task's annotation with a ``LABEL`` brush region (its
   ground-truth one if starred, else the most recently updated);
2. an annotation marked as ground truth (the star in Label Studio) with a ``LABEL`` brush region
   (the most recently updated one);
3. the first submitted annotation with a ``LABEL`` brush region.

Positive mask: the union of that annotation's ``LABEL`` brush regions; negative mask: the union
of its other labels' brush regions (none if there are none). Skipped (cancelled) annotations
never count. References are cached per project and reloaded when the project's annotation
counters change (checked with one API call per request), when Label Studio's webhook reports an
annotation event, and at the latest every ``refresh_seconds``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from refcut.integrations.label_studio.client import LabelStudioClient, ProjectState
from refcut.integrations.label_studio.protocol import LabelingConfig, ProtocolError, decode_brush, region_labels

logger = logging.getLogger("refcut.label_studio")


@dataclass(frozen=True)
class Reference:
    """A label's reference: the image of a task and masks from one of its annotations."""

    label: str
    task_id: int
    annotation_id: int
    updated_at: str
    image_url: str
    positive: np.ndarray = field(repr=False)
    negative: np.ndarray | None = field(repr=False)
    source: str
    """Why this one: ``--reference``, ``ground truth`` or ``first annotation``."""

    @property
    def key(self) -> tuple[int, int, str, str]:
        """Identifies the reference's content (changes when the annotation is edited)."""
        return self.task_id, self.annotation_id, self.updated_at, self.label

    def describe(self) -> dict:
        """What the prediction response says about the reference it used."""
        return {"label": self.label, "task": self.task_id, "annotation": self.annotation_id, "source": self.source}


def parse_overrides(values: list[str]) -> dict[str, int]:
    """``["hair=12", ...]`` -> ``{"hair": 12}``; raises ValueError naming the bad item."""
    overrides: dict[str, int] = {}
    for value in values:
        label, sep, task = value.rpartition("=")
        if not sep or not label or not task.strip().isdigit():
            raise ValueError(f"--reference must be LABEL=TASK_ID (e.g. hair=12), got {value!r}")
        overrides[label] = int(task)
    return overrides


@dataclass
class _Project:
    config: LabelingConfig
    state: ProjectState
    references: dict[str, Reference]
    loaded_at: float
    dirty: bool = False


class ReferenceStore:
    """Per-project cache of the references, refreshed when the project's annotations change."""

    def __init__(self, client: LabelStudioClient, overrides: dict[str, int] | None = None,
                 refresh_seconds: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.overrides = dict(overrides or {})
        self.refresh_seconds = refresh_seconds
        self._clock = clock
        self._projects: dict[int, _Project] = {}
        self._masks: dict[tuple, tuple[np.ndarray, np.ndarray | None]] = {}
        self._lock = threading.Lock()
        self.loads = 0
        """How many times references were read from Label Studio (for tests and the log)."""

    def invalidate(self, project_id: int | None = None) -> None:
        """Reload the project's references (all projects with None) at their next use."""
        with self._lock:
            for pid, project in self._projects.items():
                if project_id is None or pid == project_id:
                    project.dirty = True

    def references(self, project_id: int, config: LabelingConfig) -> dict[str, Reference]:
        """The current reference of each label that has one; raises LabelStudioError if LS cannot be asked."""
        with self._lock:
            project = self._projects.get(project_id)
            fresh = (project is not None and not project.dirty and project.config == config
                     and self._clock() - project.loaded_at < self.refresh_seconds)
            if fresh:
                state = self.client.project_state(project_id)
                if state == project.state:
                    return project.references
            project = self._load(project_id, config)
            self._projects[project_id] = project
            return project.references

    # -- loading --------------------------------------------------------------------------------
    def _load(self, project_id: int, config: LabelingConfig) -> _Project:
        started = self._clock()
        state = self.client.project_state(project_id)  # read first: a newer annotation triggers the next reload
        tasks = {int(task["id"]): task for task in self.client.annotated_tasks(project_id)}
        references: dict[str, Reference] = {}
        for label in config.labels:
            reference = None
            if label in self.overrides:
                reference = self._override(label, self.overrides[label], tasks, config)
            if reference is None:
                reference = self._pick(label, list(tasks.values()), config)
            if reference is not None:
                references[label] = reference
        unknown = sorted(set(self.overrides) - set(config.labels))
        if unknown:
            logger.warning("--reference names labels that project %d's BrushLabels lack: %s", project_id,
                           ", ".join(unknown))
        self.loads += 1
        summary = ", ".join(f"{label}: task {ref.task_id} ({ref.source})" for label, ref in references.items())
        logger.info("project %d references: %s (%d annotated tasks, %.0f ms)", project_id, summary or "none yet",
                    len(tasks), (self._clock() - started) * 1000)
        return _Project(config=config, state=state, references=references, loaded_at=self._clock())

    def _override(self, label: str, task_id: int, tasks: dict[int, dict], config: LabelingConfig) -> Reference | None:
        task = tasks.get(task_id) or self.client.task(task_id)
        candidates = _candidates(label, [task], config)
        starred = [item for item in candidates if item[1].get("ground_truth")]
        chosen = max(starred or candidates, key=lambda item: (item[1].get("updated_at") or "", item[1]["id"]),
                     default=None)
        reference = self._build(label, chosen, config, "--reference") if chosen else None
        if reference is None:
            logger.warning("--reference %s=%d: task %d has no usable annotation with a %r brush region; "
                           "using the default rule", label, task_id, task_id, label)
        return reference

    def _pick(self, label: str, tasks: list[dict], config: LabelingConfig) -> Reference | None:
        candidates = _candidates(label, tasks, config)
        starred = sorted((item for item in candidates if item[1].get("ground_truth")),
                         key=lambda item: (item[1].get("updated_at") or "", item[1]["id"]), reverse=True)
        ordered = sorted(candidates, key=lambda item: (item[1].get("created_at") or "", item[1]["id"]))
        for chosen, source in [(item, "ground truth") for item in starred] + [(item, "first annotation") for item in ordered]:
            reference = self._build(label, chosen, config, source)
            if reference is not None:
                return reference
        return None

    def _build(self, label: str, chosen: tuple[dict, dict], config: LabelingConfig, source: str) -> Reference | None:
        task, annotation = chosen
        image_url = (task.get("data") or {}).get(config.image_field)
        if not isinstance(image_url, str):
            logger.warning("task %s has no image URL in data.%s; it cannot be a reference", task.get("id"),
                           config.image_field)
            return None
        key = (annotation["id"], annotation.get("updated_at"), label)
        masks = self._masks.get(key)
        if masks is None:
            try:
                masks = _masks(label, annotation, config)
            except ProtocolError as error:
                logger.warning("annotation %s of task %s cannot be a reference for %r: %s", annotation["id"],
                               task.get("id"), label, error)
                return None
            self._masks[key] = masks
            while len(self._masks) > 256:
                self._masks.pop(next(iter(self._masks)))
        positive, negative = masks
        return Reference(label=label, task_id=int(task["id"]), annotation_id=int(annotation["id"]),
                         updated_at=str(annotation.get("updated_at") or ""), image_url=image_url,
                         positive=positive, negative=negative, source=source)


def _brush_regions(annotation: dict, config: LabelingConfig) -> list[dict]:
    return [region for region in annotation.get("result") or []
            if region.get("type") == "brushlabels" and region.get("from_name") == config.brush_name]


def _candidates(label: str, tasks: list[dict], config: LabelingConfig) -> list[tuple[dict, dict]]:
    """(task, annotation) pairs whose annotation is submitted and has a ``label`` brush region."""
    return [(task, annotation) for task in tasks for annotation in task.get("annotations") or []
            if not annotation.get("was_cancelled")
            and any(label in region_labels(region) for region in _brush_regions(annotation, config))]


def _masks(label: str, annotation: dict, config: LabelingConfig) -> tuple[np.ndarray, np.ndarray | None]:
    positive: np.ndarray | None = None
    negative: np.ndarray | None = None
    for region in _brush_regions(annotation, config):
        mask = decode_brush(region)
        if positive is not None and mask.shape != positive.shape or negative is not None and mask.shape != negative.shape:
            raise ProtocolError("its brush regions have different sizes")
        if label in region_labels(region):
            positive = mask if positive is None else positive | mask
        else:
            negative = mask if negative is None else negative | mask
    if positive is None or not positive.any():
        raise ProtocolError(f"its {label!r} brush mask is empty")
    return positive, negative
