"""Talking to Label Studio: its REST API through ``label-studio-sdk``, and task images with the same token."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import unquote, urljoin, urlparse

import httpx

from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError

logger = logging.getLogger("refcut.label_studio")
MAX_IMAGE_BYTES = 256 * 1024 * 1024
ANNOTATED_TASKS = {"filters": {"conjunction": "and", "items": [
    {"filter": "filter:tasks:total_annotations", "operator": "greater", "type": "Number", "value": 0}]}}
"""Data Manager query: tasks that have at least one annotation."""


class LabelStudioError(RuntimeError):
    """Label Studio answered with an error, or could not be reached; the message names the URL and the reason."""

    def __init__(self, message: str, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable


@dataclass(frozen=True)
class ProjectState:
    """Counters of a project that change whenever an annotation is added, skipped, deleted or starred."""

    total_annotations: int
    skipped_annotations: int
    ground_truth: int
    tasks_with_annotations: int


class LabelStudioClient:
    """The Label Studio server at ``url``, used with ``api_key`` (a personal access token or a legacy token)."""

    def __init__(self, url: str, api_key: str, timeout: float = 30.0) -> None:
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"Label Studio URL must look like http://host:port, got {url!r}")
        if not api_key:
            raise ValueError("no Label Studio API key: pass --api-key or set LABEL_STUDIO_API_KEY "
                             "(Label Studio: Account & Settings -> Personal Access Token, or a legacy token)")
        self.url = url.rstrip("/")
        self._netloc = parsed.netloc
        self._sdk = LabelStudio(base_url=self.url, api_key=api_key, timeout=timeout)
        self._http = httpx.Client(timeout=timeout, follow_redirects=False)

    def close(self) -> None:
        """Close the HTTP connections."""
        self._http.close()

    # -- API ------------------------------------------------------------------------------------
    def _call(self, what: str, call: Any) -> Any:
        try:
            return call()
        except ApiError as error:
            raise LabelStudioError(f"Label Studio at {self.url} refused {what}: HTTP {error.status_code} "
                                   f"{_short(error.body)}") from error
        except httpx.TransportError as error:
            raise LabelStudioError(f"cannot reach Label Studio at {self.url} ({what}): {error}",
                                   unreachable=True) from error

    def check(self) -> str:
        """Who the token belongs to; raises :class:`LabelStudioError` if LS is down or refuses the token."""
        user = self._call("checking the token", lambda: self._sdk.users.whoami())
        return str(getattr(user, "email", None) or getattr(user, "username", None) or user.id)

    def project_state(self, project_id: int) -> ProjectState:
        """The project's annotation counters (one cheap API call)."""
        project = self._call(f"reading project {project_id}", lambda: self._sdk.projects.get(id=project_id))
        return ProjectState(
            total_annotations=int(project.total_annotations_number or 0),
            skipped_annotations=int(project.skipped_annotations_number or 0),
            ground_truth=int(project.ground_truth_number or 0),
            tasks_with_annotations=int(project.num_tasks_with_annotations or 0),
        )

    def annotated_tasks(self, project_id: int) -> list[dict]:
        """Every task of the project that has annotations, with its annotations, as plain dicts."""
        def fetch() -> list[dict]:
            pager = self._sdk.tasks.list(project=project_id, fields="all", query=json.dumps(ANNOTATED_TASKS))
            return [_as_dict(task) for task in pager]

        return self._call(f"listing the annotated tasks of project {project_id}", fetch)

    def task(self, task_id: int) -> dict:
        """One task with its annotations, as a plain dict."""
        return self._call(f"reading task {task_id}", lambda: _as_dict(self._sdk.tasks.get(id=str(task_id))))

    # -- files ----------------------------------------------------------------------------------
    def resolve_image_url(self, url: str) -> str:
        """Absolute URL for a task's image; only images that Label Studio itself serves are allowed.

        ``/data/upload/...`` and ``/data/local-files/?d=...`` are taken relative to the server; an
        absolute URL must point at the same server (the token is never sent anywhere else).
        """
        if not isinstance(url, str) or not url:
            raise LabelStudioError(f"task image URL must be a non-empty string, got {url!r}")
        parsed = urlparse(url)
        if not parsed.scheme:
            return urljoin(self.url + "/", url.lstrip("/"))
        if parsed.scheme in ("http", "https") and parsed.netloc == self._netloc:
            return url
        raise LabelStudioError(
            f"task image {url!r} is not served by Label Studio at {self.url}: RefCut fetches only images that "
            "Label Studio serves (uploads, local-files storage), so it never sends the token elsewhere")

    def fetch_image(self, url: str) -> tuple[bytes, str]:
        """The bytes of a task's image and a file name for messages; raises :class:`LabelStudioError`."""
        absolute = self.resolve_image_url(url)
        headers = {"Authorization": self._authorization()}
        try:
            with self._http.stream("GET", absolute, headers=headers) as response:
                if response.status_code != 200:
                    response.read()
                    raise LabelStudioError(f"Label Studio at {self.url} answered HTTP {response.status_code} for "
                                           f"image {url}: {_short(response.text)}")
                chunks, size = [], 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > MAX_IMAGE_BYTES:
                        raise LabelStudioError(f"image {url} is larger than {MAX_IMAGE_BYTES} bytes")
                    chunks.append(chunk)
        except httpx.TransportError as error:
            raise LabelStudioError(f"cannot reach Label Studio at {self.url} to fetch image {url}: {error}",
                                   unreachable=True) from error
        return b"".join(chunks), image_name(url)

    def _authorization(self) -> str:
        # The SDK knows whether the key is a legacy token ("Token ...") or a personal access token
        # (exchanged for a short-lived "Bearer ..." access token); use the header it would send.
        wrapper = self._sdk._client_wrapper
        return self._call("authenticating", lambda: wrapper.get_headers()["Authorization"])


def image_name(url: str) -> str:
    """A short file name for an image URL (the ``d=`` path of local files, else the URL's last segment)."""
    parsed = urlparse(url)
    if "d=" in parsed.query:
        path = unquote(parsed.query.split("d=", 1)[1].split("&", 1)[0])
    else:
        path = unquote(parsed.path)
    name = PurePosixPath(path).name
    return "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in name)[:120] or "image"


def _as_dict(model: Any) -> dict:
    if isinstance(model, dict):
        return model
    return model.model_dump(mode="json") if hasattr(model, "model_dump") else model.dict()


def _short(text: Any, limit: int = 300) -> str:
    text = text if isinstance(text, str) else json.dumps(text, default=str)
    return text if len(text) <= limit else text[:limit] + "..."
