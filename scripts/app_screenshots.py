"""Take the README screenshots of the annotation app (docs/screenshots/*.png) in headless Chromium.

Serves a fresh copy of the bundled demo project with the shipped default model
(``refcut/assets/models/default``, as ``refcut annotate`` without ``--model``), or with
``--model DIR`` when given, and drives the page with Playwright.

Usage: python scripts/app_screenshots.py [--model DIR] [--out docs/screenshots]
Needs /usr/bin/chromium and the playwright Python package (the browser launch is shared with
the browser test: ``tests/app_browser.py``).
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import uvicorn

from refcut import RefCutPredictor
from refcut.app.project import open_demo_project
from refcut.app.server import create_app
from refcut.app.service import ModelSession

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from app_browser import launch_chromium  # noqa: E402

# Clicks on demo photo ccp_0006 (image pixels of the 600 px version), placed by the field's automatic
# clicker against the Clothing Co-Parsing ground truth; (x, y, positive).
BAG_CLICKS = [(128, 433, True), (172, 373, False), (128, 353, False)]
BLAZER_CLICKS = [(194, 249, True), (222, 329, False), (249, 161, False)]
FACE_0001 = (229, 85)


def serve(project_dir: Path, model: Path | None):
    """The demo project in ``project_dir`` served in-process with ``model`` (None: the shipped default); (server, url)."""
    project = open_demo_project(project_dir)
    predictor = RefCutPredictor.from_pretrained(model)
    app = create_app(project, ModelSession(predictor, project), model_name=str(model) if model else "default")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server, f"http://127.0.0.1:{sock.getsockname()[1]}/"


def page_point(page, viewer: str, x: float, y: float) -> tuple[float, float]:
    """Page coordinates of image pixel (x, y) in the main or editor viewer."""
    return tuple(page.evaluate(
        """([name, x, y]) => { const v = window[name]; const r = v.canvas.getBoundingClientRect();
             const k = v.canvas.width / r.width;
             return [r.left + (v.ox + x * v.scale) / k, r.top + (v.oy + y * v.scale) / k]; }""", [viewer, x, y]))


def click_image(page, x: float, y: float, button: str = "left") -> None:
    px, py = page_point(page, "refcutViewer", x, y)
    page.mouse.click(px, py, button=button)
    page.wait_for_function("document.body.dataset.busy === '0' && !window.refcutState.predicting", timeout=60_000)


def add_label(page, name: str) -> None:
    page.fill("#label-name", name)
    page.press("#label-name", "Enter")
    page.wait_for_function(f"document.querySelector('#label-list li.active')?.textContent.includes({name!r})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="model folder (default: the shipped default model)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        server, url = serve(Path(tmp) / "demo", args.model)
        with sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            # bypass_csp: this script waits with wait_for_function (an eval the app's CSP forbids); the
            # browser test (tests/test_e2e_app.py) runs the page under the real policy.
            page = browser.new_page(viewport={"width": 1360, "height": 820}, bypass_csp=True)
            page.goto(url + "#image=5")
            page.wait_for_selector("body[data-image-loaded='1']", timeout=30_000)
            add_label(page, "bag")  # an accepted "bag" instance ...
            for x, y, positive in BAG_CLICKS:
                click_image(page, x, y, "left" if positive else "right")
            page.keyboard.press("Enter")
            page.wait_for_function("document.body.dataset.lastSaved")
            add_label(page, "top")  # ... and a "top" mask in progress
            for x, y, positive in BLAZER_CLICKS:
                click_image(page, x, y, "left" if positive else "right")
            page.wait_for_timeout(9500)  # let the "Saved" toast fade
            page.screenshot(path=str(args.out / "annotate.png"))

            page.keyboard.press("?")
            page.screenshot(path=str(args.out / "help.png"))
            page.keyboard.press("Escape")

            page.keyboard.press("Escape")
            page.keyboard.press("1")
            page.click("#btn-edit-ref")
            page.wait_for_function("Number(document.querySelector('#ed-canvas').dataset.posArea) > 0", timeout=30_000)
            page.check("input[name='ed-layer'][value='neg']")
            page.check("input[name='ed-tool'][value='brush']")
            page.fill("#ed-size", "40")
            fx, fy = FACE_0001
            page.mouse.move(*page_point(page, "refcutEditorViewer", fx - 12, fy - 10))
            page.mouse.down()
            for dx, dy in ((12, -10), (-12, 10), (12, 12), (-10, 22)):
                page.mouse.move(*page_point(page, "refcutEditorViewer", fx + dx, fy + dy), steps=4)
            page.mouse.up()
            page.screenshot(path=str(args.out / "reference-editor.png"))
            browser.close()
        server.should_exit = True
    for name in ("annotate", "help", "reference-editor"):
        print(args.out / f"{name}.png")


if __name__ == "__main__":
    main()
