"""The HTTP side: Label Studio's ML backend protocol on FastAPI. Build with :func:`create_app`.

Routes, as the ``label-studio-ml`` base class serves them: ``GET /health`` (and ``/``),
``POST /setup`` (``{"project", "schema", ...}`` -> ``{"model_version"}``), ``POST /predict``
(``{"tasks", "project", "label_config", "params": {"context"}}`` -> ``{"results": [...]}``) and
``POST /webhook`` (Label Studio's annotation events; they make the references reload). Errors
answer a 4xx/5xx status with ``{"error": reason}`` and go to the log; the server keeps running.
"""

from __future__ import annotations

import logging
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from refcut.integrations.label_studio.backend import RefCutBackend, as_backend_error
from refcut.integrations.label_studio.protocol import ProtocolError

logger = logging.getLogger("refcut.label_studio")
REFERENCE_EVENTS = frozenset({"ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED", "ANNOTATION_DELETED",
                              "ANNOTATIONS_CREATED", "TASKS_DELETED", "PROJECT_UPDATED"})


class Loose(BaseModel):
    """Label Studio adds fields over time: keep the ones we read, ignore the rest."""

    model_config = ConfigDict(extra="allow")


class SetupRequest(Loose):
    project: str | int | None = None
    label_config: str | None = Field(default=None, alias="schema")


class PredictRequest(Loose):
    tasks: list[dict]
    project: str | int | None = None
    label_config: str | None = None
    params: dict | None = None


def create_app(backend: RefCutBackend) -> FastAPI:
    """The FastAPI app serving ``backend``."""
    app = FastAPI(title="RefCut ML backend for Label Studio", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(RequestValidationError)
    def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        details = "; ".join(f"{'.'.join(str(part) for part in item['loc'][1:]) or 'body'}: {item['msg']}"
                            for item in error.errors())
        message = f"malformed {request.url.path} request: {details}"
        logger.warning(message)
        return JSONResponse({"error": message, "status": "error"}, status_code=422)

    @app.get("/")
    @app.get("/health")
    def health() -> dict:
        return {"status": "UP", "model_class": type(backend.predictor).__name__,
                "model_version": backend.model_version, "label_studio": backend.client.url}

    @app.post("/setup")
    def setup(body: SetupRequest) -> JSONResponse:
        try:
            return JSONResponse(backend.setup(body.label_config))
        except ProtocolError as error:
            failure = as_backend_error(error)
            logger.warning("setup for project %s refused: %s", body.project, failure)
            return JSONResponse({"error": str(failure), "status": "error"}, status_code=failure.status)

    @app.post("/predict")
    def predict(body: PredictRequest) -> JSONResponse:
        context = (body.params or {}).get("context")
        answer = backend.predict(body.tasks, body.project, body.label_config, context)
        return JSONResponse(answer.body, status_code=answer.status)

    @app.post("/webhook")
    async def webhook(request: Request) -> JSONResponse:
        try:
            payload = await request.json()
        except ValueError:
            return JSONResponse({"error": "webhook body is not JSON", "status": "error"}, status_code=422)
        action = payload.get("action") if isinstance(payload, dict) else None
        if action not in REFERENCE_EVENTS:
            return JSONResponse({"status": "ignored", "action": action})
        project = payload.get("project") if isinstance(payload.get("project"), dict) else {}
        project_id = project.get("id")
        backend.references.invalidate(int(project_id) if isinstance(project_id, int) else None)
        logger.info("%s for project %s: references reload at the next request", action, project_id or "?")
        return JSONResponse({"status": "ok", "action": action})

    return app
