"""HTTP routes of the annotation app (FastAPI). Build with :func:`create_app`.

All coordinates are full-size pixels of the EXIF-oriented image; masks travel as COCO RLE
(``{"size": [h, w], "counts": str}``) or as base64 PNG. Errors are 4xx JSON ``{"detail": reason}``.
"""

from __future__ import annotations

import io
import logging
import re
import shutil
import time
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, model_validator

from refcut.app.images import ImageLoadError, downscale_for_model, load_rgb, resolve_inside
from refcut.app.masks import bbox_xywh, decode_data_url, decode_png, decode_rle, encode_rle
from refcut.app.project import Project, export_project
from refcut.app.service import MAX_CLICKS, ModelSession, Prediction
from refcut.app.storage import AnnotationRow, Conflict, ImageRow, LabelRow, NotFound, ReferenceRow

logger = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).resolve().parent / "static"
MAX_BODY_BYTES = 16 * 1024 * 1024
EXPORT_NAME = re.compile(r"^[a-z-]+-\d{8}-\d{6}(-\d+)?\.zip$")


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


# -- helpers -------------------------------------------------------------------------------------
def _mask_from(payload: MaskIn, image: ImageRow, what: str) -> np.ndarray:
    if payload.rle is not None:
        if list(payload.rle.size) != [image.height, image.width]:
            raise ValueError(f"{what} is {payload.rle.size[1]}x{payload.rle.size[0]} but the image is {image.width}x{image.height}")
        mask = decode_rle(payload.rle.model_dump())
    else:
        mask = decode_png(decode_data_url(payload.png or ""), (image.height, image.width))
    if mask.shape != (image.height, image.width):
        raise ValueError(f"{what} is {mask.shape[1]}x{mask.shape[0]} but the image is {image.width}x{image.height}")
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
    return {"token": prediction.token, "mask": encode_rle(mask), "area": int(mask.sum()), "bbox": bbox_xywh(mask),
            "score": round(prediction.score, 4), "used_reference": prediction.used_reference,
            "elapsed_ms": round(prediction.elapsed_ms, 1)}


def _error(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


# -- the app -------------------------------------------------------------------------------------
def create_app(project: Project, session: ModelSession | None, model_name: str = "",
               max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    """The FastAPI app serving ``project``; ``session`` None means no model (clicks return 503)."""
    app = FastAPI(title="RefCut annotate", docs_url="/api/docs", redoc_url=None, openapi_url="/api/openapi.json")
    storage = project.storage
    exports_dir = project.project_dir / "exports"

    @app.exception_handler(NotFound)
    async def not_found(_: Request, error: NotFound):
        return _error(404, str(error))

    @app.exception_handler(FileNotFoundError)
    async def file_missing(_: Request, error: FileNotFoundError):
        return _error(404, str(error))

    @app.exception_handler(Conflict)
    async def conflict(_: Request, error: Conflict):
        return _error(409, str(error))

    @app.exception_handler(ImageLoadError)
    async def bad_image(_: Request, error: ImageLoadError):
        return _error(422, str(error))

    @app.exception_handler(ValueError)
    async def bad_value(_: Request, error: ValueError):
        return _error(400, str(error))

    @app.exception_handler(OverflowError)
    async def overflow(_: Request, error: OverflowError):
        return _error(400, f"a number in the request is out of range: {error}")

    @app.exception_handler(RequestValidationError)
    async def bad_request(_: Request, error: RequestValidationError):
        reasons = []
        for item in error.errors()[:5]:
            if item.get("type") == "json_invalid":
                reasons.append(f"the body is not valid JSON ({item.get('ctx', {}).get('error', 'parse error')})")
                continue
            where = ".".join(str(part) for part in item.get("loc", ()) if part != "body")
            reasons.append(f"{where}: {item.get('msg')}" if where else str(item.get("msg")))
        return _error(422, "invalid request: " + "; ".join(reasons))

    def require_session() -> ModelSession:
        if session is None:
            raise _NoModel()

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
        project.rescan()
        return list_images()

    @app.get("/api/images/{image_id}")
    def get_image(image_id: int) -> dict:
        return _image_json(storage.get_image(image_id))

    def send_image(image: ImageRow) -> Response:
        if image.error:
            raise ImageLoadError(image.error)
        path = project.image_path(image)
        from refcut.app.images import browser_bytes

        data, media_type = browser_bytes(path)
        headers = {"Cache-Control": "no-cache"}
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
        positive = _mask_from(body.positive, image, "positive mask")
        negative = _mask_from(body.negative, image, "negative mask") if body.negative else None
        return store_reference(label_id, image.id, positive, negative)

    @app.post("/api/labels/{label_id}/reference/upload")
    def upload_reference(label_id: int, image_id: Annotated[int, Form()], positive: Annotated[UploadFile, File()],
                         negative: Annotated[UploadFile | None, File()] = None) -> dict:
        storage.get_label(label_id)
        image = storage.get_image(image_id)
        masks = []
        for name, upload in (("positive", positive), ("negative", negative)):
            if upload is None:
                masks.append(None)
                continue
            masks.append(decode_png(upload.file.read(), (image.height, image.width)))
        return store_reference(label_id, image.id, masks[0], masks[1])

    @app.post("/api/labels/{label_id}/reference/undo")
    def undo_reference(label_id: int) -> dict:
        return {"reference": _reference_json(storage.undo_reference(label_id))}

    @app.get("/api/labels/{label_id}/reference/preview.png")
    def reference_preview(label_id: int, max_side: int = Query(default=240, ge=16, le=2048)) -> Response:
        reference = storage.current_reference(label_id)
        if reference is None:
            raise NotFound(f"label {label_id} has no reference")
        rgb = load_rgb(project.image_path(storage.get_image(reference.image_id)))
        positive = decode_rle(reference.positive_rle)
        negative = decode_rle(reference.negative_rle) if reference.negative_rle else np.zeros_like(positive)
        overlay = rgb.astype(np.float32)
        overlay[positive] = 0.45 * overlay[positive] + 0.55 * np.array([40, 220, 60])
        overlay[negative] = 0.45 * overlay[negative] + 0.55 * np.array([235, 40, 40])
        small, _ = downscale_for_model(np.clip(overlay, 0, 255).astype(np.uint8), max_side)
        buffer = io.BytesIO()
        Image.fromarray(small).save(buffer, format="PNG")
        return Response(buffer.getvalue(), media_type="image/png", headers={"Cache-Control": "no-cache"})

    # -- clicks, proposals ------------------------------------------------------------------
    @app.post("/api/predict")
    def predict(body: PredictIn) -> dict:
        require_session()
        if body.label_id is not None:
            storage.get_label(body.label_id)
        clicks = [(click.x, click.y, click.positive) for click in body.clicks]
        prediction = session.predict(body.image_id, body.label_id, clicks, body.prev_token, body.use_reference)
        return _prediction_json(prediction)

    @app.post("/api/propose")
    def propose(body: ProposeIn) -> dict:
        require_session()
        storage.get_label(body.label_id)
        proposal = session.propose(body.image_id, body.label_id)
        result: dict = {"image_id": body.image_id, "point": None, "reason": proposal.reason, "prediction": None}
        if proposal.point is not None and proposal.prediction is not None:
            result["point"] = {"x": proposal.point[0], "y": proposal.point[1], "positive": True}
            result["prediction"] = _prediction_json(proposal.prediction)
        return result

    @app.get("/api/queue")
    def queue(label_id: int) -> dict:
        storage.get_label(label_id)
        return {"label_id": label_id, "image_ids": storage.images_without_label(label_id)}

    @app.post("/api/propose/batch")
    def propose_batch(body: BatchProposeIn) -> dict:
        """Proposals for unannotated images of a label (the review queue), computed one after another."""
        require_session()
        storage.get_label(body.label_id)
        image_ids = body.image_ids if body.image_ids is not None else storage.images_without_label(body.label_id)
        results = []
        for image_id in image_ids[: body.limit]:
            try:
                results.append(propose(ProposeIn(image_id=image_id, label_id=body.label_id)))
            except (ImageLoadError, NotFound, FileNotFoundError) as error:
                results.append({"image_id": image_id, "point": None, "reason": str(error), "prediction": None})
        return {"label_id": body.label_id, "proposals": results, "remaining": max(0, len(image_ids) - body.limit)}

    # -- instances --------------------------------------------------------------------------
    @app.post("/api/annotations", status_code=201)
    def accept(body: AcceptIn) -> dict:
        image = storage.get_image(body.image_id)
        storage.get_label(body.label_id)
        mask = _mask_from(body.mask, image, "mask")
        area = int(mask.sum())
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
        summary = export_project(project, body.format, exports_dir / name, copy_images=body.copy_images)
        archive = shutil.make_archive(str(exports_dir / name), "zip", root_dir=exports_dir / name)
        return {"format": body.format, "path": str(summary.path), "out_dir": str(summary.out_dir),
                "images": summary.num_images, "instances": summary.num_instances, "skipped": summary.num_skipped,
                "warnings": summary.warnings[:20], "download": f"/api/exports/{Path(archive).name}"}

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
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)
    return app


class _NoModel(Exception):
    pass
