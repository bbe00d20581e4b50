"""Take the README screenshot of RefCut inside Label Studio (docs/screenshots/label-studio.png).

Starts a throwaway Label Studio (``scripts/install_label_studio.sh``'s venv, loopback, SQLite),
creates a project with the example labeling config and three of the bundled demo photos, submits
the demo's hair reference as the first "hair" annotation, connects the RefCut backend (in this
process), then, in headless Chromium, logs in, opens another photo, turns on Auto-Annotation and
places a smart "hair" keypoint: the brush mask in the picture is the backend's answer.

Uses the shipped default model, or ``--model PATH`` when given.

Usage: python scripts/label_studio_screenshot.py [--model DIR] [--out docs/screenshots]
Needs /usr/bin/chromium, the playwright package and Label Studio's venv.
"""

from __future__ import annotations

import argparse
import socket
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import uvicorn
from PIL import Image

from refcut.integrations.label_studio.backend import RefCutBackend
from refcut.integrations.label_studio.client import LabelStudioClient
from refcut.integrations.label_studio.local import local_label_studio
from refcut.integrations.label_studio.protocol import EXAMPLE_LABEL_CONFIG, LabelingConfig, brush_region
from refcut.integrations.label_studio.references import ReferenceStore
from refcut.integrations.label_studio.server import create_app

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "refcut" / "assets" / "demo"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
PHOTOS = ("ccp_0001.jpg", "ccp_0002.jpg", "ccp_0003.jpg")
# A point well inside the hair of demo photo ccp_0002 (pixels of its 398x600 version), from the
# Clothing Co-Parsing ground truth. Label Studio 1.23 shows one suggestion per smart keypoint (the
# next keypoint is taken once it is accepted or rejected), so the picture shows the first click.
HAIR_CLICK = (179, 122)


def serve(backend: RefCutBackend) -> tuple[uvicorn.Server, str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    server = uvicorn.Server(uvicorn.Config(create_app(backend), log_level="warning"))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server, f"http://127.0.0.1:{sock.getsockname()[1]}"


def make_predictor(model: Path | None):
    from refcut import RefCutPredictor

    if model is not None:
        return RefCutPredictor.from_pretrained(model), f"refcut-{model.name}"
    return RefCutPredictor.from_pretrained(), "refcut-default"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    from label_studio_sdk import LabelStudio
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp, local_label_studio(Path(tmp) / "label-studio") as studio:
        sdk = LabelStudio(base_url=studio.url, api_key=studio.token)
        headers = {"Authorization": f"Token {studio.token}"}
        project = sdk.projects.create(title="RefCut demo", label_config=EXAMPLE_LABEL_CONFIG)
        files = {f"file{i}": (name, (DEMO / "images" / name).read_bytes(), "image/jpeg") for i, name in enumerate(PHOTOS)}
        httpx.post(f"{studio.url}/api/projects/{project.id}/import", files=files, headers=headers,
                   timeout=120).raise_for_status()
        tasks = {task.data["image"].rsplit("-", 1)[1]: task.id for task in sdk.tasks.list(project=project.id)}
        reference = np.asarray(Image.open(DEMO / "reference_hair.png").convert("L")) > 127
        region = brush_region(reference, "hair", LabelingConfig.parse(EXAMPLE_LABEL_CONFIG), 1.0)
        region.pop("score")
        sdk.annotations.create(id=tasks["ccp_0001.jpg"], result=[region], was_cancelled=False)

        predictor, version = make_predictor(args.model)
        client = LabelStudioClient(studio.url, studio.token)
        backend = RefCutBackend(predictor, client, ReferenceStore(client), version)
        server, backend_url = serve(backend)
        sdk.ml.create(project=project.id, url=backend_url, title="RefCut", is_interactive=True)

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                                 args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1360, "height": 960})
            blocked: list[str] = []
            page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(
                (studio.url, "data:", "blob:")) else (blocked.append(route.request.url), route.abort()))  # loopback only
            page.goto(studio.url + "/user/login")
            page.fill("input[name=email]", studio.username)
            page.fill("input[name=password]", studio.password)
            page.click("button[type=submit]")
            page.wait_for_load_state("networkidle")
            page.goto(f"{studio.url}/projects/{project.id}/data?task={tasks['ccp_0002.jpg']}")
            click_hair(page, HAIR_CLICK)
            page.screenshot(path=str(args.out / "label-studio.png"))
            browser.close()
            if blocked:
                print("blocked (not loopback):", *sorted(set(blocked)), sep="\n  ")
        server.should_exit = True
        backend.close()
    print(args.out / "label-studio.png")


def click_hair(page, click: tuple[int, int]) -> None:
    """Turn on Auto-Annotation, pick the smart keypoint tool and the "hair" keypoint label, click, wait for the mask."""
    page.wait_for_selector(".konvajs-content", timeout=300_000)
    page.click(".lsf-dynamic-preannotations label:has-text('Auto-Annotation')")
    page.locator("button.lsf-tool_smart:not([aria-label])").hover()  # the smart tools' flyout
    page.locator(".lsf-toolbar__smart button[aria-label=key-point-tool]").click()
    labels = page.locator(".lsf-label")  # the BrushLabels bar, then the KeyPointLabels bar
    labels.nth(labels.count() - 2).click()
    image = page.locator("img[alt=image]").bounding_box()
    natural_width = page.evaluate("document.querySelector('img[alt=image]').naturalWidth")
    scale = image["width"] / natural_width
    with page.expect_response(lambda response: "/interactive-annotating" in response.url, timeout=300_000):
        page.mouse.click(image["x"] + click[0] * scale, image["y"] + click[1] * scale)
    page.wait_for_selector("text=suggestions", timeout=60_000)
    page.evaluate("document.querySelectorAll('*').forEach(e => { if (e.scrollTop) e.scrollTop = 0; })")
    page.mouse.move(1300, 940)
    page.wait_for_timeout(1500)  # let the mask layer draw


if __name__ == "__main__":
    main()
