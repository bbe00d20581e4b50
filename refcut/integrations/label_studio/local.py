"""A throwaway Label Studio server on loopback (SQLite, its own data folder), for tests and screenshots.

It runs the ``label-studio`` command from the virtual environment that
``scripts/install_label_studio.sh`` makes (Label Studio lives apart from RefCut's environment),
with a known user, password and legacy API token, telemetry and version checks off, and the two
switches a backend on the same machine needs (``ML_BLOCK_LOCAL_IP=false`` so Label Studio accepts
an ML backend on 127.0.0.1, ``SSRF_PROTECTION_ENABLED=false`` so its webhooks may reach it).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

DEFAULT_VENV = Path(os.environ.get("REFCUT_CACHE", Path.home() / ".cache" / "refcut")) / "label-studio-venv"
OFFLINE_ENV = {
    "COLLECT_ANALYTICS": "false",
    "LATEST_VERSION_CHECK": "false",
    "SENTRY_DSN": "",
    "FRONTEND_SENTRY_DSN": "",
    "ML_BLOCK_LOCAL_IP": "false",
    "SSRF_PROTECTION_ENABLED": "false",
}
"""Environment for a Label Studio that talks to nothing but loopback and accepts a local backend."""


@dataclass(frozen=True)
class LocalLabelStudio:
    """A running local server: where it is and how to log in."""

    url: str
    token: str
    username: str
    password: str
    data_dir: Path
    log_path: Path


def label_studio_command() -> Path | None:
    """The ``label-studio`` executable: ``$REFCUT_LABEL_STUDIO``, else the one in the default venv, else None."""
    configured = os.environ.get("REFCUT_LABEL_STUDIO")
    if configured:
        return Path(configured)
    venv = Path(os.environ.get("REFCUT_LABEL_STUDIO_VENV", DEFAULT_VENV))
    candidate = venv / "bin" / "label-studio"
    return candidate if candidate.exists() else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def local_label_studio(data_dir: Path, command: Path | None = None, port: int = 0, startup_timeout: float = 900.0,
                       token: str = "refcut0local0test0token0000000000000000", username: str = "refcut@example.com",
                       password: str = "refcut-local-password") -> Iterator[LocalLabelStudio]:
    """Start Label Studio on 127.0.0.1 with its data in ``data_dir``; stop it (and its children) on exit.

    Raises RuntimeError with the end of its log if it exits or does not answer ``/health`` in time
    (the first start creates the SQLite database, a minute or two on a small machine).
    """
    command = command or label_studio_command()
    if command is None or not command.exists():
        raise RuntimeError("Label Studio is not installed: run `bash scripts/install_label_studio.sh`")
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    env = {key: value for key, value in os.environ.items() if not key.startswith(("LABEL_STUDIO_", "HEARTEX_"))}
    env.update(OFFLINE_ENV, LABEL_STUDIO_BASE_DATA_DIR=str(data_dir), PYTHONUNBUFFERED="1")
    log_path = data_dir / "label-studio.log"
    arguments = [str(command), "start", "--no-browser", "--data-dir", str(data_dir),
                 "--database", str(data_dir / "label_studio.sqlite3"), "--internal-host", "127.0.0.1",
                 "--port", str(port), "--username", username, "--password", password, "--user-token", token,
                 "--enable-legacy-api-token"]
    with open(log_path, "ab") as log:
        process = subprocess.Popen(arguments, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=env, start_new_session=True)
    try:
        _wait_until_up(url, process, log_path, startup_timeout)
        yield LocalLabelStudio(url=url, token=token, username=username, password=password, data_dir=data_dir,
                               log_path=log_path)
    finally:
        _stop(process)


def _wait_until_up(url: str, process: subprocess.Popen, log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Label Studio exited with code {process.returncode}:\n{_tail(log_path)}")
        try:
            if httpx.get(url + "/health", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(1.0)
    raise RuntimeError(f"Label Studio did not answer {url}/health within {timeout:.0f} s:\n{_tail(log_path)}")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)  # its own session: the server and whatever it started
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
