"""``refcut annotate`` (the annotation web app) and ``refcut export`` (project → dataset files)."""

from __future__ import annotations

import ipaddress
import socket
import sys
import webbrowser
from pathlib import Path
from typing import Optional

import typer

LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


def load_predictor_or_exit(model: Path | None, device: str = "cpu", hint: str = ""):
    """``RefCutPredictor.from_pretrained`` (the shipped default when ``model`` is None), or exit 2 with the reason."""
    from refcut import RefCutPredictor

    try:
        return RefCutPredictor.from_pretrained(str(model) if model is not None else None, device=device)
    except FileNotFoundError as error:
        typer.echo(f"error: no model to run: {error}\nPass a model folder with --model PATH{', ' + hint if hint else ''}.",
                   err=True)
        raise typer.Exit(2) from error
    except (ValueError, PermissionError) as error:
        typer.echo(f"error: cannot load model {model or '(the shipped default)'}: {error}", err=True)
        raise typer.Exit(2) from error


def _is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on (host, port); port 0 picks a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise typer.BadParameter(f"cannot listen on {host}:{port}: {error}") from error
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def annotate(
    project_dir: Optional[Path] = typer.Argument(
        None, help="Project folder (created if new). Omit to open the bundled demo project."),
    images: Optional[Path] = typer.Option(None, "--images", help="Folder of images to annotate (needed for a new project)."),
    model: Optional[Path] = typer.Option(None, "--model", help="Model folder (config.json + model.safetensors)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on. Anything but loopback exposes your data."),
    port: int = typer.Option(0, "--port", min=0, max=65535, help="Port (0 = a free one)."),
    demo_dir: Optional[Path] = typer.Option(None, "--demo-dir", help="Where the demo project lives (default ~/.cache/refcut/demo-project)."),
    max_side: int = typer.Option(1600, "--max-side", min=64, help="Images larger than this are downscaled for the model."),
    open_browser: bool = typer.Option(False, "--open/--no-open", help="Open the page in the default browser."),
) -> None:
    """Annotate a folder of images in the browser: clicks + a reference per label."""
    import uvicorn

    from refcut.app.project import open_demo_project, open_project
    from refcut.app.server import create_app
    from refcut.app.service import ModelSession

    try:
        if project_dir is None:
            if images is not None:
                raise typer.BadParameter("--images needs a PROJECT_DIR")
            project = open_demo_project(demo_dir)
            typer.echo(f"Demo project (Clothing Co-Parsing photos, Apache-2.0) in {project.project_dir}")
        else:
            project = open_project(project_dir, images)
    except (ValueError, FileNotFoundError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from error

    predictor = load_predictor_or_exit(
        model, hint="e.g. `refcut annotate PROJECT --images DIR --model my_model/`"
    )

    if not _is_loopback(host):
        typer.echo(f"WARNING: listening on {host}: anyone who can reach this machine can read and change this "
                   "project. There is no login. Use 127.0.0.1 unless you mean it. The page answers only to "
                   f"127.0.0.1, localhost and {host} as its address.", err=True)
    session = ModelSession(predictor, project, max_side=max_side)
    app = create_app(project, session, model_name=str(model) if model else "default", hosts=[host])
    sock = _bind(host, port)
    bound_port = sock.getsockname()[1]
    shown_host = f"[{host}]" if ":" in host else host
    url = f"http://{shown_host}:{bound_port}/"
    done, total = project.storage.progress()
    typer.echo(f"RefCut annotate: {project.project_dir} ({total} images, {done} done)")
    typer.echo(f"Open {url}  (Ctrl+C to stop; every accepted instance is already saved)")
    if open_browser:
        webbrowser.open(url)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    try:
        server.run(sockets=[sock])
    finally:
        session.close()
        sock.close()


def export(
    project_dir: Path = typer.Argument(..., help="Project folder (with project.sqlite)."),
    fmt: str = typer.Option(..., "--format", help="coco | coco-polygons | yolo-seg | png | labelme"),
    out: Path = typer.Option(..., "--out", help="Output folder."),
    copy_images: bool = typer.Option(True, "--images/--no-images", help="Copy the images into the export."),
    include_all: bool = typer.Option(False, "--all-images", help="Also list images not marked done (as having no instances)."),
) -> None:
    """Export a project's accepted instances to a dataset format."""
    from refcut.app.project import export_project, open_project
    from refcut.app.storage import DB_NAME
    from refcut.export import FORMATS

    if fmt not in FORMATS:
        raise typer.BadParameter(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}", param_hint="--format")
    if not (project_dir / DB_NAME).is_file():
        typer.echo(f"error: {project_dir} is not a RefCut project (no {DB_NAME})", err=True)
        raise typer.Exit(2)
    try:
        project = open_project(project_dir)
        summary = export_project(project, fmt, out, copy_images=copy_images, include_all=include_all)
    except (ValueError, FileNotFoundError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from error
    for warning in summary.warnings:
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(f"Exported {summary.num_instances} instances on {summary.num_images} images "
               f"({summary.num_skipped} skipped) as {fmt}: {summary.path}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("annotate")(annotate)
    app.command("export")(export)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(typer.run(annotate))
