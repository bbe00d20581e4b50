"""HTTP routes of the annotation app (FastAPI). Build with :func:`create_app`.

All coordinates are full-size pixels of the EXIF-oriented image; masks travel as COCO RLE
(``{"size": [h, w], "counts": str}``) or as base64 PNG. Errors are 4xx JSON ``{"detail": reason}``
(a malformed mask is 422); paths in them are relative to the project.

The app is meant for the user's own browser on the same machine, and guards against the web pages
that browser visits: requests whose ``Host`` is not one the server is bound to are refused
(DNS rebinding, :class:`~starlette.middleware.trustedhost.TrustedHostMiddleware`), state-changing
requests from another origin are refused (:class:`CrossSiteGuard`, CSRF), every response carries
a Content-Security-Policy that forbids inline script and framing (:class:`SecurityHeaders`), and
requests that decode images or full-size masks run a few at a time (:class:`WorkLimiter`; a flood
gets 503). There is no login: anyone who can reach the port can use it.
"""

from __future__ import annotations

import io
import logging
import re
import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.datastructures import Headers
from starlette.middleware.trustedhost import TrustedHostMiddleware

from refcut.app.images import ImageLoadError, browser_bytes, resolve_inside
from refcut.app.masks import MaskError, bbox_xywh, decode_data_url, decode_png, decode_rle, encode_rle, sample_rle
from refcut.app.project import Project, export_project
from refcut.app.service import MAX_CLICKS, ModelSession, Prediction, check_clicks
from refcut.app.storage import AnnotationRow, Conflict, ImageRow, LabelRow, NotFound, ReferenceRow

logger = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).resolve().parent / "static"
MAX_BODY_BYTES = 16 * 1024 * 1024
EXPORT_NAME = re.compile(r"^[a-z-]+-\d{8}-\d{6}(-\d+)?\.zip$")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
HEAVY_SLOTS = 2
"""Requests that decode images or full-size masks running at once (each is bounded in memory)."""
HEAVY_QUEUE = 16
"""Further heavy requests that may wait for a slot; beyond that they get 503 at once."""
HEAVY_WAIT_S = 60.0
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
                           "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
                           "frame-ancestors 'none'")
SECURITY_HEADERS = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-resource-policy", b"same-origin"),
)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


# -- request bodies ------------------------------------------------------------------------------
class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Click(Strict):
    x: float
    y: float
    positive: bool = True


class RLE(Strict):
    size: list[int] = Field(min_length=2, max_length=2)
    counts: str | list[int]


class MaskIn(Strict):
    """Exactly one of ``rle`` (COCO RLE) or ``png`` (base64 or data URL of a PNG)."""

    rle: RLE | None = None
    png: str | None = Field(default=None, max_length=12_000_000)

    @model_validator(mode="after")
    def one_encoding(self) -> "MaskIn":
        if (self.rle is None) == (self.png is None):
            raise ValueError("give exactly one of 'rle' or 'png'")
        return self


class LabelIn(Strict):
    name: str = Field(min_length=1, max_length=100)
    colour: str | None = Field(default=None, pattern=r"^#[0-9a-fA-F]{6}$")


class LabelPatch(Strict):
    name: str | None = Field(default=None, min_length=1, max_length=100)
    colour: str | None = Field(default=None, pattern=r"^#[0-9a-fA-F]{6}$")
    order: int | None = Field(default=None, ge=0, le=1_000_000)


class ReferenceIn(Strict):
    image_id: int
    positive: MaskIn
    negative: MaskIn | None = None


class PredictIn(Strict):
    image_id: int
    label_id: int | None = None
    clicks: list[Click] = Field(min_length=1, max_length=MAX_CLICKS)
    prev_token: str | None = Field(default=None, max_length=64)
    use_reference: bool = True


class AcceptIn(Strict):
    image_id: int
    label_id: int
    mask: MaskIn
    clicks: list[Click] = Field(default_factory=list, max_length=MAX_CLICKS)
    score: float | None = Field(default=None, ge=0, le=1)


class ProposeIn(Strict):
    image_id: int
    label_id: int


class BatchProposeIn(Strict):
    label_id: int
    image_ids: list[int] | None = Field(default=None, max_length=1000)
    limit: int = Field(default=10, ge=1, le=200)


class DoneIn(Strict):
    done: bool


class ExportIn(Strict):
    format: Literal["coco", "coco-polygons", "yolo-seg", "png", "labelme"]
    copy_images: bool = True


# -- body size limit -----------------------------------------------------------------------------
class BodySizeLimit:
    """ASGI middleware: 413 for request bodies above ``max_bytes`` (declared or streamed).

    The body is read (up to the limit) before the app sees the request, so an oversized chunked
    upload is refused as cleanly as one with a Content-Length.
    """

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_big = JSONResponse({"detail": f"request body larger than {self.max_bytes} bytes"}, status_code=413)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                if int(declared) > self.max_bytes:
                    return await too_big(scope, receive, send)
            except ValueError:
                return await _error(400, "invalid Content-Length header")(scope, receive, send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return await too_big(scope, receive, send)
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class CrossSiteGuard:
    """ASGI middleware: 403 for a state-changing request another site sends from the user's browser (CSRF).

    Any method but GET/HEAD/OPTIONS is refused when its ``Origin`` header is present and is not
    this server's own origin (scheme + the ``Host`` the request was sent to, checked against the
    allowed hosts before this runs), or when ``Sec-Fetch-Site`` says the request comes from another
    site (``cross-site``; also ``same-site``, which includes other ports on localhost). Browsers
    send these headers on every cross-origin write; clients that send neither (curl, scripts) pass.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS:
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        own = f"{scope.get('scheme', 'http')}://{headers.get('host', '')}".lower()
        fetch_site = headers.get("sec-fetch-site", "").lower()
        if origin is not None and origin.lower() != own:
            reason = f"cross-site request refused: Origin {origin!r} is not this app ({own})"
        elif fetch_site in ("cross-site", "same-site"):
            reason = f"cross-site request refused: Sec-Fetch-Site is {fetch_site!r}"
        else:
            return await self.app(scope, receive, send)
        logger.warning("%s %s: %s", scope["method"], scope.get("path"), reason)
        return await _error(403, reason)(scope, receive, send)


class SecurityHeaders:
    """ASGI middleware: the page's Content-Security-Policy (no inline script, no framing) and nosniff on every response."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(name, value) for name, value in SECURITY_HEADERS if name not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class Busy(Exception):
    """Too many heavy requests are running or waiting (answered 503 with Retry-After)."""


class WorkLimiter:
    """At most ``slots`` heavy requests run at once and ``queue`` more wait (up to ``wait_s``); the rest get :class:`Busy`."""

    def __init__(self, slots: int = HEAVY_SLOTS, queue: int = HEAVY_QUEUE, wait_s: float = HEAVY_WAIT_S):
        if slots < 1 or queue < 0:
            raise ValueError("a work limiter needs at least one slot and a non-negative queue")
        self.slots, self.queue, self.wait_s = slots, queue, wait_s
        self._running = threading.BoundedSemaphore(slots)
        self._admitted = threading.BoundedSemaphore(slots + queue)

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one of the slots for the block; raises :class:`Busy` when none frees up in time."""
        if not self._admitted.acquire(blocking=False):
            raise Busy(f"the server is busy: {self.slots} image requests are running and {self.queue} are waiting; "
                       "try again in a moment")
        try:
            if not self._running.acquire(timeout=self.wait_s):
                raise Busy(f"the server is busy: no image request finished within {self.wait_s:.0f} s; try again")
            try:
                yield
            finally:
                self._running.release()
        finally:
            self._admitted.release()


# -- helpers -------------------------------------------------------------------------------------
def _mask_from(payload: MaskIn, image: ImageRow, what: str) -> np.ndarray:
    if payload.rle is not None:
        if list(payload.rle.size) != [image.height, image.width]:
            raise MaskError(f"{what} is {payload.rle.size[1]}x{payload.rle.size[0]} but the image is {image.width}x{image.height}")
        mask = decode_rle(payload.rle.model_dump())
    else:
        mask = decode_png(decode_data_url(payload.png or ""), (image.height, image.width))
    if mask.shape != (image.height, image.width):
        raise MaskError(f"{what} is {mask.shape[1]}x{mask.shape[0]} but the image is {image.width}x{image.height}")
    return mask


def _image_json(image: ImageRow) -> dict:
    return {"id": image.id, "path": image.path, "width": image.width, "height": image.height, "done": image.done,
            "instances": image.instances, "error": image.error}


def _label_json(label: LabelRow) -> dict:
    return {"id": label.id, "name": label.name, "colour": label.colour, "order": label.order,
            "has_reference": label.has_reference, "reference_id": label.reference_id, "instances": label.instances}


def _reference_json(reference: ReferenceRow | None) -> dict | None:
    if reference is None:
        return None
    return {"id": reference.id, "label_id": reference.label_id, "image_id": reference.image_id,
            "positive": reference.positive_rle, "negative": reference.negative_rle, "source": reference.source,
            "annotation_id": reference.annotation_id, "created_at": reference.created_at}


def _annotation_json(annotation: AnnotationRow) -> dict:
    return {"id": annotation.id, "image_id": annotation.image_id, "label_id": annotation.label_id,
            "mask": annotation.rle, "clicks": annotation.clicks, "area": annotation.area, "bbox": annotation.bbox,
            "score": annotation.score, "created_at": annotation.created_at}


def _prediction_json(prediction: Prediction) -> dict:
    mask = prediction.mask
    return {"token": prediction.token, "mask": encode_rle(mask), "area": int(np.count_nonzero(mask)), "bbox": bbox_xywh(mask),
            "score": round(prediction.score, 4), "used_reference": prediction.used_reference,
            "elapsed_ms": round(prediction.elapsed_ms, 1)}


def _error(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


# -- the app -------------------------------------------------------------------------------------
def create_app(project: Project, session: ModelSession | None, model_name: str = "",
               max_body_bytes: int = MAX_BODY_BYTES, hosts: Sequence[str] = (),
               heavy_slots: int = HEAVY_SLOTS, heavy_queue: int = HEAVY_QUEUE) -> FastAPI:
    """The FastAPI app serving ``project``; ``session`` None means no model (clicks return 503).

    ``hosts`` are the names the page may be opened under besides 127.0.0.1, localhost and [::1]
    (``refcut annotate`` passes its ``--host``); a request for any other ``Host`` gets 400.
    ``heavy_slots`` / ``heavy_queue`` size the :class:`WorkLimiter` of image and mask requests.
    """
    # No /api/docs: FastAPI's docs page loads its script from a CDN, which the page's CSP forbids.
    app = FastAPI(title="RefCut annotate", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    storage = project.storage
    exports_dir = project.project_dir / "exports"
    heavy = WorkLimiter(heavy_slots, heavy_queue).slot

    def fail(status: int, error: BaseException | str) -> JSONResponse:
        return _error(status, project.hide_paths(str(error)))

    @app.exception_handler(NotFound)
    async def not_found(_: Request, error: NotFound):
        return fail(404, error)

    @app.exception_handler(FileNotFoundError)
    async def file_missing(_: Request, error: FileNotFoundError):
        return fail(404, error)

    @app.exception_handler(Conflict)
    async def conflict(_: Request, error: Conflict):
        return fail(409, error)

    @app.exception_handler(ImageLoadError)
    async def bad_image(_: Request, error: ImageLoadError):
        return fail(422, error)

    @app.exception_handler(MaskError)
    async def bad_mask(_: Request, error: MaskError):
        return fail(422, error)

    @app.exception_handler(ValueError)
    async def bad_value(_: Request, error: ValueError):
        return fail(400, error)

    @app.exception_handler(OverflowError)
    async def overflow(_: Request, error: OverflowError):
        return fail(400, f"a number in the request is out of range: {error}")

    @app.exception_handler(Busy)
    async def busy(_: Request, error: Busy):
        response = fail(503, error)
        response.headers["Retry-After"] = "2"
        return response

    @app.exception_handler(RequestValidationError)
    async def bad_request(_: Request, error: RequestValidationError):
        reasons = []
        for item in error.errors()[:5]:
            if item.get("type") == "json_invalid":
                reasons.append(f"the body is not valid JSON ({item.get('ctx', {}).get('error', 'parse error')})")
                continue
            where = ".".join(str(part) for part in item.get("loc", ()) if part != "body")
            reasons.append(f"{where}: {item.get('msg')}" if where else str(item.get("msg")))
        return fail(422, "invalid request: " + "; ".join(reasons))

    def require_session() -> ModelSession:
        if session is None:
            raise _NoModel()
        return session

    @app.exception_handler(_NoModel)
    async def no_model(_: Request, __: _NoModel):
        return _error(503, "no model is loaded: restart with `refcut annotate ... --model PATH`")

    # -- project, images --------------------------------------------------------------------
    @app.get("/api/project")
    def get_project() -> dict:
        done, total = storage.progress()
        return {"name": project.name, "images_dir": str(project.images_dir), "model": model_name,
                "model_loaded": session is not None, "can_propose": bool(session and session.can_propose),
                "progress": {"done": done, "total": total}}

    @app.get("/api/images")
    def list_images() -> dict:
        images = storage.list_images()
        done, total = storage.progress()
        return {"images": [_image_json(image) for image in images], "progress": {"done": done, "total": total}}

    @app.post("/api/images/rescan")
    def rescan() -> dict:
        with heavy():
            project.rescan()
        return list_images()

    @app.get("/api/images/{image_id}")
    def get_image(image_id: int) -> dict:
        return _image_json(storage.get_image(image_id))

    def send_image(image: ImageRow) -> Response:
        """The image as the browser shows it: the file itself when it can (judged from its header), else a PNG."""
        if image.error:
            raise ImageLoadError(image.error)
        path = project.image_path(image)
        headers = {"Cache-Control": "no-cache"}
        with heavy():
            data, media_type = browser_bytes(path, image.path)
        if data is None:
            return FileResponse(path, media_type=media_type, headers=headers)
        return Response(data, media_type=media_type, headers=headers)

    @app.get("/api/images/{image_id}/file")
    def image_file(image_id: int) -> Response:
        return send_image(storage.get_image(image_id))

    @app.get("/images/{relative_path:path}")
    def image_by_path(relative_path: str) -> Response:
        """Serve a registered image by its path relative to the image folder (never anything outside)."""
        path = resolve_inside(project.images_dir, relative_path)
        relative = path.relative_to(project.images_dir).as_posix()
        for image in storage.list_images():
            if image.path == relative:
                return send_image(image)
        raise NotFound(f"no image {relative_path!r} in this project")

    @app.put("/api/images/{image_id}/done")
    def set_done(image_id: int, body: DoneIn) -> dict:
        storage.set_done(image_id, body.done)
        return get_project()["progress"]

    # -- labels -----------------------------------------------------------------------------
    @app.get("/api/labels")
    def list_labels() -> list[dict]:
        return [_label_json(label) for label in storage.list_labels()]

    @app.post("/api/labels", status_code=201)
    def create_label(body: LabelIn) -> dict:
        return _label_json(storage.create_label(body.name, body.colour))

    @app.patch("/api/labels/{label_id}")
    def update_label(label_id: int, body: LabelPatch) -> dict:
        return _label_json(storage.update_label(label_id, body.name, body.colour, body.order))

    @app.delete("/api/labels/{label_id}")
    def delete_label(label_id: int, force: bool = False) -> dict:
        storage.delete_label(label_id, force)
        return {"deleted": label_id}

    @app.post("/api/labels/{label_id}/restore")
    def restore_label(label_id: int) -> dict:
        """Undo a label deletion: the label and the instances deleted with it come back."""
        label = storage.restore_label(label_id)
        done, total = storage.progress()
        return {"label": _label_json(label), "progress": {"done": done, "total": total}}

    # -- references -------------------------------------------------------------------------
    @app.get("/api/labels/{label_id}/reference")
    def get_reference(label_id: int) -> dict:
        storage.get_label(label_id)
        return {"reference": _reference_json(storage.current_reference(label_id)),
                "history": len(storage.reference_history(label_id))}

    def store_reference(label_id: int, image_id: int, positive: np.ndarray, negative: np.ndarray | None) -> dict:
        if not positive.any():
            raise ValueError("the positive reference mask is empty: mark the target first")
        if negative is not None and not negative.any():
            negative = None
        if negative is not None:
            negative = negative & ~positive
        reference = storage.set_reference(label_id, image_id, encode_rle(positive),
                                          encode_rle(negative) if negative is not None else None, "manual")
        return {"reference": _reference_json(reference)}

    @app.put("/api/labels/{label_id}/reference")
    def set_reference(label_id: int, body: ReferenceIn) -> dict:
        storage.get_label(label_id)
        image = storage.get_image(body.image_id)
        with heavy():
            positive = _mask_from(body.positive, image, "positive mask")
            negative = _mask_from(body.negative, image, "negative mask") if body.negative else None
            return store_reference(label_id, image.id, positive, negative)

    @app.post("/api/labels/{label_id}/reference/upload")
    def upload_reference(label_id: int, image_id: Annotated[int, Form()], positive: Annotated[UploadFile, File()],
                         negative: Annotated[UploadFile | None, File()] = None) -> dict:
        storage.get_label(label_id)
        image = storage.get_image(image_id)
        with heavy():
            masks = []
            for upload in (positive, negative):
                masks.append(None if upload is None else decode_png(upload.file.read(), (image.height, image.width)))
            return store_reference(label_id, image.id, masks[0], masks[1])

    @app.post("/api/labels/{label_id}/reference/undo")
    def undo_reference(label_id: int) -> dict:
        return {"reference": _reference_json(storage.undo_reference(label_id))}

    @app.get("/api/labels/{label_id}/reference/preview.png")
    def reference_preview(label_id: int, max_side: int = Query(default=240, ge=16, le=2048)) -> Response:
        """The reference image at most ``max_side`` a side with its masks drawn over it (never decoded at full size)."""
        reference = storage.current_reference(label_id)
        if reference is None:
            raise NotFound(f"label {label_id} has no reference")
        with heavy():
            small = project.load_scaled(storage.get_image(reference.image_id), max_side).rgb
            height, width = small.shape[:2]
            positive = sample_rle(reference.positive_rle, width, height)
            overlay = small.astype(np.float32)
            overlay[positive] = 0.45 * overlay[positive] + 0.55 * np.array([40, 220, 60])
            if reference.negative_rle:
                negative = sample_rle(reference.negative_rle, width, height)
                overlay[negative] = 0.45 * overlay[negative] + 0.55 * np.array([235, 40, 40])
            buffer = io.BytesIO()
            Image.fromarray(np.clip(overlay, 0, 255).astype(np.uint8)).save(buffer, format="PNG")
        return Response(buffer.getvalue(), media_type="image/png", headers={"Cache-Control": "no-cache"})

    # -- clicks, proposals ------------------------------------------------------------------
    @app.post("/api/predict")
    def predict(body: PredictIn) -> dict:
        model = require_session()
        if body.label_id is not None:
            storage.get_label(body.label_id)
        clicks = [(click.x, click.y, click.positive) for click in body.clicks]
        with heavy():
            prediction = model.predict(body.image_id, body.label_id, clicks, body.prev_token, body.use_reference)
            return _prediction_json(prediction)

    @app.post("/api/images/{image_id}/prepare")
    def prepare(image_id: int) -> dict:
        """Encode this image and the next one in the background (encode-once models); the page calls it on open."""
        storage.get_image(image_id)
        if session is None:
            return {"scheduled": []}
        ids = [im.id for im in storage.list_images()]
        following = ids[ids.index(image_id) + 1 : ids.index(image_id) + 2] if image_id in ids else []
        return {"scheduled": session.prepare([image_id, *following])}

    def proposal_json(model: ModelSession, image_id: int, label_id: int) -> dict:
        proposal = model.propose(image_id, label_id)
        result: dict = {"image_id": image_id, "point": None, "reason": proposal.reason, "prediction": None}
        if proposal.point is not None and proposal.prediction is not None:
            result["point"] = {"x": proposal.point[0], "y": proposal.point[1], "positive": True}
            result["prediction"] = _prediction_json(proposal.prediction)
        return result

    @app.post("/api/propose")
    def propose(body: ProposeIn) -> dict:
        model = require_session()
        storage.get_label(body.label_id)
        with heavy():
            return proposal_json(model, body.image_id, body.label_id)

    @app.get("/api/queue")
    def queue(label_id: int) -> dict:
        storage.get_label(label_id)
        return {"label_id": label_id, "image_ids": storage.images_without_label(label_id)}

    @app.post("/api/propose/batch")
    def propose_batch(body: BatchProposeIn) -> dict:
        """Proposals for unannotated images of a label (the review queue), one after another.

        An image that cannot be proposed on (unknown id, unreadable or missing file, ...) gets its
        reason in its entry and the batch goes on.
        """
        model = require_session()
        storage.get_label(body.label_id)
        image_ids = body.image_ids if body.image_ids is not None else storage.images_without_label(body.label_id)
        results = []
        with heavy():
            for image_id in image_ids[: body.limit]:
                try:
                    results.append(proposal_json(model, image_id, body.label_id))
                except (ValueError, LookupError, OSError, OverflowError) as error:
                    results.append({"image_id": image_id, "point": None, "reason": project.hide_paths(str(error)),
                                    "prediction": None})
        return {"label_id": body.label_id, "proposals": results, "remaining": max(0, len(image_ids) - body.limit)}

    # -- instances --------------------------------------------------------------------------
    @app.post("/api/annotations", status_code=201)
    def accept(body: AcceptIn) -> dict:
        image = storage.get_image(body.image_id)
        storage.get_label(body.label_id)
        if image.error:
            raise ImageLoadError(image.error)
        check_clicks([(click.x, click.y) for click in body.clicks], image.width, image.height)
        with heavy():
            mask = _mask_from(body.mask, image, "mask")
            area = int(np.count_nonzero(mask))
            if area == 0:
                raise ValueError("the mask is empty: nothing to save")
            clicks = [click.model_dump() for click in body.clicks]
            annotation, reference = storage.add_annotation(image.id, body.label_id, encode_rle(mask), clicks, area,
                                                           bbox_xywh(mask), body.score)
        done, total = storage.progress()
        return {"annotation": _annotation_json(annotation), "reference_set": _reference_json(reference),
                "progress": {"done": done, "total": total}}

    @app.get("/api/images/{image_id}/annotations")
    def list_annotations(image_id: int) -> list[dict]:
        storage.get_image(image_id)
        return [_annotation_json(annotation) for annotation in storage.list_annotations(image_id)]

    @app.delete("/api/annotations/{annotation_id}")
    def delete_annotation(annotation_id: int) -> dict:
        storage.delete_annotation(annotation_id)
        done, total = storage.progress()
        return {"deleted": annotation_id, "progress": {"done": done, "total": total}}

    @app.post("/api/annotations/{annotation_id}/restore")
    def restore_annotation(annotation_id: int) -> dict:
        return {"annotation": _annotation_json(storage.restore_annotation(annotation_id))}

    @app.post("/api/annotations/{annotation_id}/promote")
    def promote(annotation_id: int) -> dict:
        return {"reference": _reference_json(storage.promote(annotation_id))}

    # -- export -----------------------------------------------------------------------------
    @app.post("/api/export")
    def export(body: ExportIn) -> dict:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        name = f"{body.format}-{stamp}"
        suffix = 1
        while (exports_dir / name).exists():
            suffix += 1
            name = f"{body.format}-{stamp}-{suffix}"
        with heavy():
            summary = export_project(project, body.format, exports_dir / name, copy_images=body.copy_images)
            archive = shutil.make_archive(str(exports_dir / name), "zip", root_dir=exports_dir / name)
        return {"format": body.format, "path": str(summary.path), "out_dir": str(summary.out_dir),
                "images": summary.num_images, "instances": summary.num_instances, "skipped": summary.num_skipped,
                "warnings": [project.hide_paths(w) for w in summary.warnings[:20]],
                "download": f"/api/exports/{Path(archive).name}"}

    @app.get("/api/exports/{name}")
    def download_export(name: str) -> FileResponse:
        if not EXPORT_NAME.match(name) or not (exports_dir / name).is_file():
            raise NotFound(f"no export named {name!r}")
        return FileResponse(exports_dir / name, media_type="application/zip", filename=name)

    # -- page -------------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    # Added innermost first: a request meets the host check, then the origin check, then the body limit.
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)
    app.add_middleware(CrossSiteGuard)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts(hosts), www_redirect=False)
    return app


def allowed_hosts(hosts: Sequence[str] = ()) -> list[str]:
    """Host names the app answers to: the loopback names plus ``hosts`` (IPv6 literals bracketed, as in a Host header)."""
    names = list(LOOPBACK_HOSTS)
    for host in hosts:
        host = host.strip().lower()
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        if host and host not in names:
            names.append(host)
    return names


class _NoModel(Exception):
    pass
