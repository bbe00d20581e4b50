"""End-to-end: `refcut annotate` (demo project, the shipped default model) driven by a real headless Chromium.

Needs Debian's ``chromium`` at /usr/bin/chromium and the ``playwright`` Python package (no browser
download: Playwright drives the system Chromium). The page runs under the app's real
Content-Security-Policy (no eval, no inline script), so the test waits on DOM attributes with
selectors rather than with ``wait_for_function`` (which evaluates a string in the page), and any
CSP violation the browser reports fails it. The app runs the real default model (no --model), so
the first click's mask is checked for sense: it covers the clicked pixels and under half the image.
"""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools.coco import COCO

from app_browser import CHROMIUM, annotate_server, launch_chromium, mask_at

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian chromium at /usr/bin/chromium (apt-get install chromium chromium-driver)"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """`refcut annotate --demo-dir ...` (shipped default model) in a subprocess; yields (url, demo_dir)."""
    demo_dir = tmp_path_factory.mktemp("e2e") / "demo"
    with annotate_server(demo_dir) as url:
        yield url, demo_dir


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright Python package")
    with sync_api.sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()


def _canvas_pixels(page, x: float, y: float) -> list[int]:
    """RGBA of a 9x9 patch of the main canvas around CSS position (x, y) inside it."""
    return page.evaluate(
        """([x, y]) => { const c = document.querySelector('#canvas'); const r = c.getBoundingClientRect();
             const k = c.width / r.width; const ctx = c.getContext('2d');
             return Array.from(ctx.getImageData(Math.round(x * k) - 4, Math.round(y * k) - 4, 9, 9).data); }""",
        [x, y])


def test_click_accept_reload_export(server, browser) -> None:
    url, demo_dir = server
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if "Content Security Policy" in message.text else None)
    outside_requests: list[str] = []
    page.on("request", lambda request: outside_requests.append(request.url)
            if not request.url.startswith(("http://127.0.0.1", "data:", "blob:")) else None)
    page.goto(url)
    page.wait_for_selector("body[data-image-loaded='1']", timeout=30_000)
    assert page.locator("#progress").get_attribute("data-total") == "6"
    assert "hair" in page.locator("#label-list").inner_text()

    canvas = page.locator("#canvas")
    box = canvas.bounding_box()
    point = {"x": box["width"] * 0.5, "y": box["height"] * 0.25}
    before = _canvas_pixels(page, point["x"], point["y"])
    canvas.click(position=point)  # the first click also encodes the image
    page.wait_for_selector("#canvas:not([data-mask-area='0'])", state="attached", timeout=60_000)
    page.wait_for_selector("body[data-busy='0']")
    after = _canvas_pixels(page, point["x"], point["y"])
    assert np.abs(np.array(after) - np.array(before)).sum() > 0, "the overlay did not change the canvas"
    area_one_click = int(canvas.get_attribute("data-mask-area"))
    mask = mask_at(page, point["x"], point["y"])
    assert (mask["width"], mask["height"]) == (397, 600)  # ccp_0001.jpg
    assert mask["inside"], "the first mask does not cover the clicked pixels"
    assert area_one_click < 0.5 * 397 * 600, f"the first mask covers {area_one_click} px, over half the image"

    canvas.click(position={"x": box["width"] * 0.5, "y": box["height"] * 0.8}, button="right")
    page.wait_for_selector("body[data-busy='0'] #canvas[data-clicks='2']:not([data-mask-area=''])", state="attached",
                           timeout=60_000)
    server_ms, shown_ms = page.evaluate("() => [window.refcutState.steps[1].elapsedMs, window.refcutState.steps[1].shownMs]")
    assert 0 < server_ms <= shown_ms < 60_000  # click-to-mask in the page covers the server's time
    page.keyboard.press("Control+z")
    page.wait_for_selector("#canvas[data-clicks='1']", state="attached")
    assert int(canvas.get_attribute("data-mask-area")) == area_one_click  # undo restores the one-click mask

    page.keyboard.press("Enter")
    page.wait_for_selector("body[data-last-saved]", state="attached", timeout=30_000)
    assert canvas.get_attribute("data-instances") == "1"
    assert page.locator("#progress").get_attribute("data-done") == "1"
    saved_id = page.evaluate("document.body.dataset.lastSaved")

    page.keyboard.press("?")
    assert page.locator("#help").is_visible()
    page.keyboard.press("Escape")
    assert not page.locator("#help").is_visible()

    page.reload()
    page.wait_for_selector("body[data-image-loaded='1']", timeout=30_000)
    assert canvas.get_attribute("data-instances") == "1"
    assert page.locator(f"#instance-list li[data-annotation-id='{saved_id}']").count() == 1

    page.select_option("#export-format", "coco")
    page.click("#btn-export")
    page.wait_for_selector("body[data-last-export]", state="attached", timeout=60_000)
    coco = COCO(page.evaluate("document.body.dataset.lastExport"))
    annotations = coco.loadAnns(coco.getAnnIds())
    assert len(annotations) == 1
    assert coco.annToMask(annotations[0]).sum() == area_one_click
    assert coco.loadImgs(annotations[0]["image_id"])[0]["file_name"] == "ccp_0001.jpg"
    assert errors == [] and outside_requests == []
    page.close()


def test_reference_editor_brush_saves_a_reference(server, browser) -> None:
    url, _ = server
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(url)
    page.wait_for_selector("body[data-image-loaded='1']", timeout=30_000)
    page.locator("#label-list li", has_text="shoes").click()
    page.click("#btn-edit-ref")
    page.wait_for_selector("#ed-canvas[data-loaded='1'][data-pos-area='0']", state="attached", timeout=30_000)
    page.check("input[name='ed-tool'][value='brush']")
    editor = page.locator("#ed-canvas")
    box = editor.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2  # the fitted image's centre, whatever its shape
    page.mouse.move(cx - 20, cy)
    page.mouse.down()
    page.mouse.move(cx + 20, cy, steps=5)
    page.mouse.up()
    assert int(editor.get_attribute("data-pos-area")) > 0
    page.click("#ed-save")
    page.wait_for_selector("#ref-editor", state="hidden")
    page.wait_for_selector("#label-list li.active .ref-thumb", timeout=10_000)
    assert page.locator("#ref-preview").is_visible()
    page.close()
