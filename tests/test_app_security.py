"""Issue 11: the annotation app against hostile web pages and hostile input (one test or more per item)."""

from __future__ import annotations

import io
import json
import os
import sqlite3
import subprocess
import sys
import threading
import zipfile
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app_fakes import BASE_URL, HEIGHT, WIDTH, App, DiskPredictor, box_mask
from refcut.app.masks import encode_rle
from refcut.app.server import STATIC_DIR, create_app

EVIL = "http://evil.example:8765"


@pytest.fixture()
def app(tmp_path: Path) -> App:
    return App(tmp_path)


def _label_with_instance(app: App, name: str = "hair", image_id: int = 1) -> tuple[int, int]:
    label_id = app.label(name)
    annotation = app.accept(image_id, label_id, encode_rle(box_mask()))["annotation"]
    return label_id, annotation["id"]


# -- 1. DNS rebinding ---------------------------------------------------------------------------
def test_requests_for_another_host_are_refused(app: App, tmp_path: Path) -> None:
    label_id, _ = _label_with_instance(app)
    for method, url in (("get", "/api/project"), ("get", "/"), ("delete", f"/api/labels/{label_id}?force=true")):
        response = getattr(app.client, method)(url, headers={"host": "evil.example:8765"})
        assert response.status_code == 400 and "host" in response.text.lower(), (url, response.text)
    assert [label["id"] for label in app.client.get("/api/labels").json()] == [label_id]  # nothing deleted
    for host in ("127.0.0.1:8765", "localhost:8765", "[::1]:8765", "LOCALHOST"):
        assert app.client.get("/api/project", headers={"host": host}).status_code == 200, host
    # The address given with --host is accepted too (and only for that app).
    lan = TestClient(create_app(app.project, None, hosts=["192.168.1.4"]), base_url="http://192.168.1.4:8765")
    assert lan.get("/api/project").status_code == 200
    assert app.client.get("/api/project", headers={"host": "192.168.1.4:8765"}).status_code == 400


# -- 2. CSRF and the page's headers -------------------------------------------------------------
def test_cross_site_writes_are_refused(app: App) -> None:
    label_id, annotation_id = _label_with_instance(app)  # its first instance became its reference
    app.client.delete(f"/api/annotations/{annotation_id}")
    png = io.BytesIO()
    Image.fromarray(box_mask((0, 5, 0, 5)).astype(np.uint8) * 255).save(png, format="PNG")
    writes = [
        ("post", f"/api/labels/{label_id}/reference/undo", {}),
        ("post", f"/api/annotations/{annotation_id}/restore", {}),
        ("post", f"/api/annotations/{annotation_id}/promote", {}),
        ("post", "/api/images/rescan", {}),
        ("post", f"/api/labels/{label_id}/reference/upload",
         {"data": {"image_id": "2"}, "files": {"positive": ("p.png", png.getvalue(), "image/png")}}),
        ("delete", f"/api/labels/{label_id}?force=true", {}),
        ("post", "/api/labels", {"json": {"name": "planted"}}),
    ]
    before = app.client.get(f"/api/labels/{label_id}/reference").json()
    for foreign in ({"origin": EVIL}, {"origin": "null"}, {"origin": "http://127.0.0.1:9999"},
                    {"sec-fetch-site": "cross-site"}, {"sec-fetch-site": "same-site"}):
        for method, url, kwargs in writes:
            response = getattr(app.client, method)(url, headers=foreign, **kwargs)
            assert response.status_code == 403, (foreign, url, response.text)
            assert "cross-site" in response.json()["detail"]
    assert app.client.get(f"/api/labels/{label_id}/reference").json() == before
    assert [label["name"] for label in app.client.get("/api/labels").json()] == ["hair"]
    assert app.client.get("/api/images/1/annotations").json() == []  # the deleted instance stayed deleted
    # The page itself (same origin, as a browser sends it) and header-less clients keep working.
    own = {"origin": BASE_URL, "sec-fetch-site": "same-origin"}
    assert app.client.post(f"/api/annotations/{annotation_id}/restore", headers=own).status_code == 200
    assert app.client.post("/api/images/rescan").status_code == 200
    assert app.client.get("/api/project", headers={"origin": EVIL, "sec-fetch-site": "cross-site"}).status_code == 200


class _InlineFinder(HTMLParser):
    """Collects what a CSP without 'unsafe-inline' would block: inline scripts, handlers, styles."""

    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _ in attrs}
        if tag == "script":
            self._in_script = True
            if "src" not in names:
                self.problems.append("inline <script>")
        if tag == "style":
            self.problems.append("inline <style>")
        self.problems += [f"<{tag} {name}=...>" for name in names if name.startswith("on") or name == "style"]
        self.problems += [f"<{tag} {name}=javascript:>" for name, value in attrs if (value or "").startswith("javascript:")]

    def handle_endtag(self, tag: str) -> None:
        self._in_script = self._in_script and tag != "script"

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.problems.append("script body")


def test_the_page_has_a_strict_csp_and_cannot_be_framed(app: App) -> None:
    for url in ("/", "/static/app.js", "/api/project"):
        response = app.client.get(url)
        assert response.status_code == 200, url
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        policy = response.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in policy and "script-src 'self'" in policy
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    finder = _InlineFinder()
    finder.feed((STATIC_DIR / "index.html").read_text())
    assert finder.problems == []  # the page works under that policy (the browser test runs it)


# -- 3. RLE must cover the mask exactly ---------------------------------------------------------
@pytest.mark.parametrize("counts", ["", [], [5], [WIDTH * HEIGHT + 1], [WIDTH * HEIGHT - 1, 2, -1],
                                    encode_rle(np.ones((HEIGHT - 1, WIDTH), bool))["counts"]],
                         ids=["empty-string", "empty-list", "short-list", "long-list", "negative-run", "string-short"])
def test_rle_that_does_not_sum_to_the_image_is_refused(app: App, counts) -> None:
    label_id = app.label()
    rle = {"size": [HEIGHT, WIDTH], "counts": counts}
    accept = app.client.post("/api/annotations", json={"image_id": 1, "label_id": label_id, "mask": {"rle": rle}})
    reference = app.client.put(f"/api/labels/{label_id}/reference", json={"image_id": 1, "positive": {"rle": rle}})
    for response in (accept, reference):
        assert response.status_code == 422, response.text
        assert "RLE" in response.json()["detail"]
    assert app.client.get("/api/images/1/annotations").json() == []
    assert app.client.get(f"/api/labels/{label_id}/reference").json()["reference"] is None
    whole = {"size": [HEIGHT, WIDTH], "counts": [10, WIDTH * HEIGHT - 10]}  # the list form, exact: accepted
    assert app.accept(1, label_id, whole)["annotation"]["area"] == WIDTH * HEIGHT - 10


# -- 4. no silent loss on restore and export ----------------------------------------------------
def test_a_deleted_labels_instance_is_not_restored_alone_and_the_deletion_is_undoable(app: App) -> None:
    client = app.client
    hair, first = _label_with_instance(app, "hair", 1)
    second = app.accept(2, hair, encode_rle(box_mask((0, 8, 0, 8))))["annotation"]["id"]
    third = app.accept(3, hair, encode_rle(box_mask((0, 8, 0, 8))))["annotation"]["id"]
    client.delete(f"/api/annotations/{third}")  # deleted on its own, before the label
    assert client.delete(f"/api/labels/{hair}?force=true").status_code == 200
    assert client.get("/api/project").json()["progress"]["done"] == 0
    response = client.post(f"/api/annotations/{first}/restore")
    assert response.status_code == 409 and "'hair'" in response.json()["detail"]
    assert client.get("/api/project").json()["progress"]["done"] == 0  # nothing became live
    assert client.post("/api/export", json={"format": "coco", "copy_images": False}).json()["instances"] == 0
    # Undo the deletion: the label and exactly the instances deleted with it come back.
    app.label("Hair ")  # a new label now holds the name: the restore says so
    clash = client.post(f"/api/labels/{hair}/restore")
    assert clash.status_code == 409 and "Hair" in clash.json()["detail"]
    client.delete(f"/api/labels/{app.client.get('/api/labels').json()[0]['id']}")
    restored = client.post(f"/api/labels/{hair}/restore")
    assert restored.status_code == 200, restored.text
    assert restored.json()["label"]["instances"] == 2 and restored.json()["progress"]["done"] == 2
    assert [a["id"] for a in client.get("/api/images/2/annotations").json()] == [second]
    assert client.get("/api/images/3/annotations").json() == []
    assert client.post(f"/api/labels/{hair}/restore").status_code == 409  # not deleted any more


def test_export_lists_every_live_instance_it_leaves_out(app: App) -> None:
    hair, _ = _label_with_instance(app, "hair", 1)
    bag, orphan = _label_with_instance(app, "bag", 2)
    on_missing = app.accept(3, hair, encode_rle(box_mask()))["annotation"]["id"]
    app.client.delete(f"/api/labels/{bag}?force=true")
    with sqlite3.connect(app.project.storage.db_path) as conn:  # a live instance of a deleted label (old projects)
        conn.execute("UPDATE annotations SET deleted = 0 WHERE id = ?", (orphan,))
    (app.images_dir / "img_02.jpg").unlink()
    app.client.post("/api/images/rescan")
    summary = app.client.post("/api/export", json={"format": "coco", "copy_images": True}).json()
    assert summary["instances"] == 1 and summary["skipped"] == 2
    warnings = "\n".join(summary["warnings"])
    assert f"instance {orphan}" in warnings and "'bag'" in warnings and "deleted" in warnings
    assert "img_02.jpg" in warnings and str(on_missing) in warnings and "no longer" in warnings


# -- 5. export reads only files inside the image folder -----------------------------------------
def test_export_does_not_copy_a_file_from_outside_the_image_folder(app: App, tmp_path: Path) -> None:
    label_id, _ = _label_with_instance(app, "hair", 2)
    outside = tmp_path / "outside.jpg"  # same size as the image it replaces: only the path check can stop it
    Image.fromarray(np.zeros((HEIGHT, WIDTH, 3), np.uint8)).save(outside, comment=b"TOP-SECRET")
    (app.images_dir / "img_01.jpg").unlink()
    (app.images_dir / "img_01.jpg").symlink_to(outside)
    assert app.client.get("/api/images/2/file").status_code == 400  # serving already refused it
    summary = app.client.post("/api/export", json={"format": "coco"}).json()
    archive = zipfile.ZipFile(io.BytesIO(app.client.get(summary["download"]).content))
    assert not any(b"TOP-SECRET" in archive.read(name) for name in archive.namelist())
    assert "images/img_01.jpg" not in archive.namelist()
    assert summary["instances"] == 0 and summary["skipped"] == 1
    assert any("img_01.jpg" in w and "outside" in w for w in summary["warnings"]), summary["warnings"]


# -- 6. bounded memory on huge images, and a cap on heavy requests ------------------------------
MEMORY_BOUNDS_MB = {"file": 64, "preview": 64, "predict": 256, "accept": 256}
"""Peak RSS growth allowed per request on a 12000x9000 JPEG (one full-size RGB array is 324 MB). Serving
the file and the reference preview never build a full-size array; a prediction or an accept holds one
full-size mask (one byte per pixel, 108 MB) plus slack. Before the fix: about 1.8 GB (file), 3.2 GB
(preview) and 2.35 GB (predict)."""

_MEMORY_SCRIPT = r"""
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from PIL import Image, ImageDraw
from fastapi.testclient import TestClient
from app_fakes import BASE_URL, DiskPredictor
from refcut.app.project import open_project
from refcut.app.server import create_app
from refcut.app.service import ModelSession

W, H = 12000, 9000
root = Path(sys.argv[1])
(root / "images").mkdir(parents=True)
picture = Image.new("RGB", (W, H), (90, 120, 150))
ImageDraw.Draw(picture).ellipse((3000, 2000, 9000, 7000), fill=(200, 60, 40))
picture.save(root / "images" / "huge.jpg", quality=85)
del picture
project = open_project(root / "project", root / "images")
client = TestClient(create_app(project, ModelSession(DiskPredictor(), project)), base_url=BASE_URL)
label = client.post("/api/labels", json={"name": "thing"}).json()["id"]
x0, x1, y0, y1 = 4000, 8000, 3000, 6000  # a box as uncompressed column-major RLE, never built as a mask
counts = [x0 * H + y0]
for _ in range(x0, x1 - 1):
    counts += [y1 - y0, H - (y1 - y0)]
counts += [y1 - y0, (W - x1) * H + (H - y1)]
assert client.put(f"/api/labels/{label}/reference",
                  json={"image_id": 1, "positive": {"rle": {"size": [H, W], "counts": counts}}}).status_code == 200

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024

def peak(request):
    open("/proc/self/clear_refs", "w").write("5")  # reset the high-water mark to the current RSS
    before = status("VmRSS:")
    response = request()
    assert response.status_code in (200, 201), response.text
    return response, status("VmHWM:") - before

result = {}
_, result["file"] = peak(lambda: client.get("/api/images/1/file"))
_, result["preview"] = peak(lambda: client.get(f"/api/labels/{label}/reference/preview.png?max_side=480"))
predicted, result["predict"] = peak(lambda: client.post("/api/predict", json={
    "image_id": 1, "label_id": label, "clicks": [{"x": 6000, "y": 4500}]}))
_, result["accept"] = peak(lambda: client.post("/api/annotations", json={
    "image_id": 1, "label_id": label, "mask": {"rle": predicted.json()["mask"]}}))
print(json.dumps(result))
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="measures peak RSS through Linux /proc")
def test_requests_on_a_huge_image_stay_within_a_memory_bound(tmp_path: Path) -> None:
    """Peak RSS growth of each request, measured in a fresh process (VmHWM after resetting it)."""
    tests_dir = str(Path(__file__).resolve().parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(tests_dir).parent), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, str(tmp_path), tests_dir], capture_output=True,
                         text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    peaks = json.loads(run.stdout.strip().splitlines()[-1])
    print("peak RSS growth (MB) on a 12000x9000 JPEG:", {k: round(v) for k, v in peaks.items()})
    assert set(peaks) == set(MEMORY_BOUNDS_MB)
    for request, grown in peaks.items():
        assert grown < MEMORY_BOUNDS_MB[request], (request, peaks)


class GatedPredictor(DiskPredictor):
    """A fake predictor whose predict() waits until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.entered, self.gate = threading.Event(), threading.Event()

    def predict(self, point_coords, point_labels, prev_mask=None):
        self.entered.set()
        assert self.gate.wait(60), "the test never opened the gate"
        return super().predict(point_coords, point_labels, prev_mask)


def test_a_flood_of_heavy_requests_gets_503(tmp_path: Path) -> None:
    app = App(tmp_path, predictor=GatedPredictor(), heavy_slots=1, heavy_queue=0)
    label_id = app.label()
    app.client.put(f"/api/labels/{label_id}/reference", json={"image_id": 1, "positive": {"rle": encode_rle(box_mask())}})
    held: list[int] = []
    worker = threading.Thread(target=lambda: held.append(app.client.post(
        "/api/predict", json={"image_id": 1, "clicks": [{"x": 5, "y": 5}]}).status_code))
    worker.start()
    try:
        assert app.predictor.entered.wait(60)  # the one slot is taken
        for method, url, kwargs in (("get", "/api/images/2/file", {}),
                                    ("get", f"/api/labels/{label_id}/reference/preview.png", {}),
                                    ("post", "/api/predict", {"json": {"image_id": 2, "clicks": [{"x": 5, "y": 5}]}}),
                                    ("post", "/api/annotations", {"json": {"image_id": 2, "label_id": label_id,
                                                                           "mask": {"rle": encode_rle(box_mask())}}})):
            response = getattr(app.client, method)(url, **kwargs)
            assert response.status_code == 503, (url, response.text)
            assert "busy" in response.json()["detail"] and response.headers["retry-after"]
        assert app.client.get("/api/labels").status_code == 200  # light requests are not limited
    finally:
        app.predictor.gate.set()
        worker.join()
    assert held == [200]
    assert app.client.get("/api/images/2/file").status_code == 200
    assert app.client.get("/api/images/2/annotations").json() == []  # the refused accept stored nothing


# -- 7. smaller holes ---------------------------------------------------------------------------
def test_clicks_saved_with_an_instance_are_validated_like_predict(app: App) -> None:
    label_id = app.label()
    mask = {"rle": encode_rle(box_mask())}
    for raw in (b'{"x": NaN, "y": 1}', b'{"x": 1, "y": Infinity}', b'{"x": 1e300, "y": 1}', b'{"x": -1, "y": 1}',
                b'{"x": 64, "y": 1}'):
        body = (b'{"image_id": 1, "label_id": %d, "mask": %s, "clicks": [%s]}'
                % (label_id, json.dumps(mask).encode(), raw))
        response = app.client.post("/api/annotations", content=body, headers={"content-type": "application/json"})
        assert response.status_code == 400 and "outside" in response.json()["detail"], (raw, response.text)
    assert app.client.get("/api/images/1/annotations").json() == []
    saved = app.accept(1, label_id, mask["rle"], [{"x": 63, "y": 47, "positive": False}])
    assert saved["annotation"]["clicks"] == [{"x": 63.0, "y": 47.0, "positive": False}]


def test_label_names_are_normalised_and_look_alikes_refused(app: App) -> None:
    client = app.client
    hair = client.post("/api/labels", json={"name": "ha\u200bir\u202e"}).json()
    assert hair["name"] == "hair"
    for twin in ("Hair", "HAIR", "ha\u200dir", "\u2066hair\u2069", "hair\u00ad", "\uff48\uff41\uff49\uff52"):
        response = client.post("/api/labels", json={"name": twin})
        assert response.status_code == 409 and "'hair'" in response.json()["detail"], (twin, response.text)
    for invisible in ("\u200b\u200b", "\u202e", "\x00\x07"):
        response = client.post("/api/labels", json={"name": invisible})
        assert response.status_code == 400 and "visible" in response.json()["detail"], (invisible, response.text)
    cafe = client.post("/api/labels", json={"name": "cafe\u0301"}).json()  # decomposed e + accent
    assert cafe["name"] == "caf\u00e9"  # stored NFC
    assert client.post("/api/labels", json={"name": "caf\u00e9"}).status_code == 409
    assert client.patch(f"/api/labels/{cafe['id']}", json={"name": "H\u200bAIR"}).status_code == 409
    assert [label["name"] for label in client.get("/api/labels").json()] == ["hair", "caf\u00e9"]


def test_unreadable_images_are_caught_on_scan_and_cannot_be_marked_done(app: App) -> None:
    good = (app.images_dir / "img_00.jpg").read_bytes()
    (app.images_dir / "truncated.jpg").write_bytes(good[: len(good) * 2 // 3])  # header intact, data cut
    (app.images_dir / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    images = {im["path"]: im for im in app.client.post("/api/images/rescan").json()["images"]}
    truncated = images["truncated.jpg"]
    assert truncated["error"] and "truncated.jpg" in truncated["error"]
    label_id = app.label()
    assert truncated["id"] not in app.client.get(f"/api/queue?label_id={label_id}").json()["image_ids"]
    for name in ("truncated.jpg", "garbage.png"):
        response = app.client.put(f"/api/images/{images[name]['id']}/done", json={"done": True})
        assert response.status_code == 409 and name in response.json()["detail"], response.text
        assert app.client.put(f"/api/images/{images[name]['id']}/done", json={"done": False}).status_code == 200
    assert app.client.get("/api/project").json()["progress"]["done"] == 0
    response = app.client.post("/api/predict", json={"image_id": truncated["id"], "clicks": [{"x": 1, "y": 1}]})
    assert response.status_code == 422 and "truncated.jpg" in response.json()["detail"]


def test_batch_propose_reports_a_bad_image_and_goes_on(app: App, tmp_path: Path) -> None:
    label_id, _ = _label_with_instance(app)  # the instance on image 1 is the label's reference
    (tmp_path / "elsewhere.jpg").write_bytes((app.images_dir / "img_02.jpg").read_bytes())
    (app.images_dir / "img_02.jpg").unlink()
    (app.images_dir / "img_02.jpg").symlink_to(tmp_path / "elsewhere.jpg")  # image 3 now points outside
    response = app.client.post("/api/propose/batch", json={"label_id": label_id, "image_ids": [2**63, 999, 3, 2]})
    assert response.status_code == 200, response.text
    proposals = response.json()["proposals"]
    assert [p["image_id"] for p in proposals] == [2**63, 999, 3, 2]
    assert all(p["point"] is None and p["reason"] for p in proposals[:3])
    assert "out of range" in proposals[0]["reason"] or "too large" in proposals[0]["reason"]
    assert "999" in proposals[1]["reason"] and "outside" in proposals[2]["reason"]
    assert proposals[3]["point"] is not None and proposals[3]["prediction"]["area"] > 0


def test_error_messages_name_paths_relative_to_the_project(app: App, tmp_path: Path) -> None:
    (app.images_dir / "sub").mkdir()
    (app.images_dir / "sub" / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (app.images_dir / "sub" / "gone.jpg").write_bytes((app.images_dir / "img_00.jpg").read_bytes())
    images = {im["path"]: im for im in app.client.post("/api/images/rescan").json()["images"]}
    (app.images_dir / "sub" / "gone.jpg").unlink()
    garbage, gone = images["sub/garbage.png"]["id"], images["sub/gone.jpg"]["id"]
    texts = [images["sub/garbage.png"]["error"]]
    for response, status in ((app.client.get(f"/api/images/{garbage}/file"), 422),
                             (app.client.get(f"/api/images/{gone}/file"), 404),
                             (app.client.post("/api/predict", json={"image_id": gone, "clicks": [{"x": 1, "y": 1}]}), 404)):
        assert response.status_code == status, response.text
        texts.append(response.json()["detail"])
    assert "sub/garbage.png" in texts[0] and "sub/garbage.png" in texts[1] and "sub/gone.jpg" in texts[2]
    for text in texts:
        assert str(tmp_path) not in text and str(app.images_dir) not in text, text
