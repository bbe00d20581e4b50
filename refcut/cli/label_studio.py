"""``refcut label-studio-backend``: RefCut as a Label Studio ML backend (see docs/label-studio.md)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import typer

from refcut.cli.annotate import _bind, _is_loopback, load_predictor_or_exit


def label_studio_backend(
    model: Optional[Path] = typer.Option(None, "--model", help="Model folder (config.json + model.safetensors); default: the shipped model."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on. Anything but loopback lets others use the model and your token."),
    port: int = typer.Option(9090, "--port", min=0, max=65535, help="Port (0 = a free one)."),
    label_studio_url: str = typer.Option("http://localhost:8080", "--label-studio-url", envvar="LABEL_STUDIO_URL",
                                         help="Label Studio's address, for images and annotations."),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="LABEL_STUDIO_API_KEY",
                                          help="Label Studio token (Account & Settings: personal access token or legacy token)."),
    reference: list[str] = typer.Option([], "--reference", metavar="LABEL=TASK_ID",
                                        help="Use that task's annotation as LABEL's reference (repeatable)."),
    refresh_seconds: float = typer.Option(30.0, "--refresh-seconds", min=0.0,
                                          help="Re-read the references at least this often (they also reload when annotations change)."),
    image_cache: int = typer.Option(8, "--image-cache", min=1, help="How many decoded task images to keep."),
    device: str = typer.Option("cpu", "--device", help="Torch device for the model."),
    log_level: str = typer.Option("info", "--log-level", help="debug | info | warning"),
) -> None:
    """Serve RefCut to Label Studio: smart keypoints -> brush masks, one reference per label from your annotations."""
    import uvicorn

    from refcut.integrations.label_studio.backend import RefCutBackend
    from refcut.integrations.label_studio.client import LabelStudioClient, LabelStudioError
    from refcut.integrations.label_studio.references import ReferenceStore, parse_overrides
    from refcut.integrations.label_studio.server import create_app

    level = getattr(logging, log_level.upper(), None)
    if not isinstance(level, int):
        raise typer.BadParameter(f"unknown log level {log_level!r}", param_hint="--log-level")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("refcut.label_studio").setLevel(level)
    try:
        overrides = parse_overrides(reference)
        client = LabelStudioClient(label_studio_url, api_key or "")
    except ValueError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from error
    predictor = load_predictor_or_exit(model, device=device)

    if not _is_loopback(host):
        typer.echo(f"WARNING: listening on {host}: anyone who can reach this machine can run the model and make it "
                   "read your Label Studio project with your token. Use 127.0.0.1 unless you mean it.", err=True)
    try:
        user = client.check()
    except LabelStudioError as error:  # not fatal: Label Studio may start later; requests say so until it does
        typer.echo(f"warning: {error}", err=True)
    else:
        typer.echo(f"Label Studio at {client.url}: token of {user}")
    model_version = f"refcut-{model.name if model is not None else 'default'}"
    backend = RefCutBackend(predictor, client, ReferenceStore(client, overrides, refresh_seconds), model_version,
                            image_cache_size=image_cache)
    sock = _bind(host, port)
    shown_host = f"[{host}]" if ":" in host else host
    typer.echo(f"RefCut Label Studio backend {model_version} on http://{shown_host}:{sock.getsockname()[1]} "
               f"(Label Studio: {client.url})")
    typer.echo("Add this URL in Label Studio: project Settings -> Model -> Connect Model (Ctrl+C to stop)")
    server = uvicorn.Server(uvicorn.Config(create_app(backend), log_level="warning", access_log=level <= logging.DEBUG))
    try:
        server.run(sockets=[sock])
    finally:
        backend.close()
        sock.close()


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("label-studio-backend")(label_studio_backend)
