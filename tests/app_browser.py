"""`refcut annotate` in a subprocess, driven by the system Chromium: shared by the browser test and the app benchmark.

``tests/test_e2e_app.py`` imports this module directly (pytest puts ``tests/`` on the path);
``benchmarks/bench_app_latency.py`` adds ``tests/`` to ``sys.path`` first. Nothing in the
``refcut`` package depends on it.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
REPO = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def annotate_server(demo_dir: Path, model: Path | None = None, env: dict[str, str] | None = None,
                    timeout: float = 180.0) -> Iterator[str]:
    """Run ``refcut annotate --demo-dir DEMO_DIR [--model MODEL] --port 0``; yield its URL, stop it on exit.

    Without ``model`` the app loads the shipped default model. ``env`` adds to this process's
    environment. Raises RuntimeError with the server's output if no URL is printed in ``timeout`` s.
    """
    command = [sys.executable, "-m", "refcut.cli.main", "annotate", "--demo-dir", str(demo_dir), "--port", "0"]
    if model is not None:
        command += ["--model", str(model)]
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO), **(env or {})}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=full_env)
    try:
        url, lines, deadline = None, [], time.monotonic() + timeout
        while url is None and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            match = re.search(r"Open (http://127\.0\.0\.1:\d+/)", line)
            url = match.group(1) if match else None
        if url is None:
            raise RuntimeError("refcut annotate did not start:\n" + "".join(lines))
        threading.Thread(target=process.stdout.read, daemon=True).start()  # keep the pipe drained
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def launch_chromium(playwright):
    """Headless system Chromium (no Playwright browser download)."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)


def mask_at(page, x: float, y: float, step: int = 0) -> dict:
    """Whether click ``step``'s mask covers the 3x3 image pixels under CSS position (x, y) of ``#canvas``.

    Returns ``{"inside": bool, "width": int, "height": int}`` (the mask's, i.e. the image's, size);
    reads the page's own state (``window.refcutViewer``, ``window.refcutState``).
    """
    return page.evaluate(
        """([x, y, n]) => { const v = window.refcutViewer; const r = v.canvas.getBoundingClientRect();
             const k = v.canvas.width / r.width; const m = window.refcutState.steps[n].canvas;
             const ix = Math.floor((x * k - v.ox) / v.scale), iy = Math.floor((y * k - v.oy) / v.scale);
             const alpha = Array.from(m.getContext('2d').getImageData(ix - 1, iy - 1, 3, 3).data).filter((_, i) => i % 4 === 3);
             return { inside: alpha.every((a) => a > 0), width: m.width, height: m.height }; }""",
        [x, y, step])
