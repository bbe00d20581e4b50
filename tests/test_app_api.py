"""The app's HTTP API over the whole annotation flow, with a fake predictor (fast) via TestClient."""

from __future__ import annotations

import base64
import io
import json
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pycocotools.coco import COCO

from app_fakes import BASE_URL, HEIGHT, WIDTH, App, DiskPredictor, box_mask as _box_mask
from refcut.app.masks import decode_rle, encode_png, encode_rle

@pytest.fixture()
def app(tmp_path: Path) -> App:
    return App(tmp_path)


def test_full_flow_labels_reference_clicks_accept_undo_export(app: App, tmp_path: Path) -> None:
    client = app.client
    images = client.get("/api/images").json()
    assert images["progress"] == {"done": 0, "total": 3}
    assert [im["width"] for im in images["images"]] == [WIDTH] * 3
    label_id = app.label("hair")
    other = app.label("bag")
    assert client.patch(f"/api/labels/{other}", json={"name": "handbag", "colour": "#123456"}).json()["name"] == "handbag"
    assert [l["name"] for l in client.get("/api/labels").json()] == ["hair", "handbag"]

    # A reference set from a mask changes the predictor's behaviour (the fake's disk radius).
    reference_mask = _box_mask()
    response = client.put(f"/api/labels/{label_id}/reference",
                          json={"image_id": 1, "positive": {"rle": encode_rle(reference_mask)}})
    assert response.status_code == 200, response.text
    first = app.predict(2, label_id, [{"x": 30, "y": 20, "positive": True}])
    assert first["used_reference"] and app.predictor.radius == pytest.approx(np.sqrt(reference_mask.sum() / np.pi))
    no_ref = app.predict(2, other, [{"x": 30, "y": 20, "positive": True}])
    assert not no_ref["used_reference"] and app.predictor.radius == 20.0

    # Clicks: the second click carries the first mask as prev_mask; the mask comes back at full size.
    second = app.predict(2, label_id, [{"x": 30, "y": 20, "positive": True}, {"x": 31, "y": 21, "positive": False}],
                         prev_token=first["token"])
    assert app.predictor.last_prev is not None and app.predictor.last_prev.shape == (HEIGHT, WIDTH)
    assert decode_rle(second["mask"]).shape == (HEIGHT, WIDTH) and second["area"] < first["area"]

    saved = app.accept(2, label_id, second["mask"], [{"x": 30, "y": 20, "positive": True}])
    assert saved["reference_set"] is None  # the label already had a reference
    assert saved["progress"] == {"done": 1, "total": 3}
    listed = client.get("/api/images/2/annotations").json()
    assert len(listed) == 1 and np.array_equal(decode_rle(listed[0]["mask"]), decode_rle(second["mask"]))

    # The first accepted instance of a label without reference becomes its reference; undo it.
    bag = app.accept(3, other, encode_rle(_box_mask((0, 10, 0, 10))))
    assert bag["reference_set"]["source"] == "first-accept"
    assert client.post(f"/api/labels/{other}/reference/undo").json()["reference"] is None
    # Promote, then undo the promotion back to the drawn reference.
    promoted = client.post(f"/api/annotations/{saved['annotation']['id']}/promote").json()["reference"]
    assert client.get(f"/api/labels/{label_id}/reference").json()["reference"]["id"] == promoted["id"]
    restored = client.post(f"/api/labels/{label_id}/reference/undo").json()["reference"]
    assert restored["source"] == "manual"
    preview = client.get(f"/api/labels/{label_id}/reference/preview.png?max_side=32")
    assert preview.status_code == 200 and max(Image.open(io.BytesIO(preview.content)).size) == 32

    # Delete + restore an instance.
    bag_id = bag["annotation"]["id"]
    assert client.delete(f"/api/annotations/{bag_id}").json()["progress"]["done"] == 1
    assert client.get("/api/images/3/annotations").json() == []
    assert client.post(f"/api/annotations/{bag_id}/restore").status_code == 200

    # Export COCO from the API and check the masks with pycocotools.
    export = client.post("/api/export", json={"format": "coco"}).json()
    coco = COCO(export["path"])
    by_file = {img["file_name"]: img["id"] for img in coco.dataset["images"]}
    assert set(by_file) == {"img_01.jpg", "img_02.jpg"}
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[by_file["img_01.jpg"]]))
    assert len(anns) == 1 and np.array_equal(coco.annToMask(anns[0]).astype(bool), decode_rle(second["mask"]))
    download = client.get(export["download"])
    assert download.status_code == 200
    assert "annotations.json" in zipfile.ZipFile(io.BytesIO(download.content)).namelist()


@pytest.mark.parametrize("fmt", ["coco-polygons", "yolo-seg", "png", "labelme"])
def test_every_export_format_from_the_api(app: App, fmt: str) -> None:
    label_id = app.label()
    app.accept(1, label_id, encode_rle(_box_mask()))
    response = app.client.post("/api/export", json={"format": fmt, "copy_images": False})
    assert response.status_code == 200, response.text
    assert response.json()["instances"] == 1 and Path(response.json()["path"]).exists()


def test_reference_from_png_data_url_and_multipart_upload(app: App) -> None:
    label_id = app.label()
    positive, negative = _box_mask(), _box_mask((0, 5, 0, 5))
    data_url = "data:image/png;base64," + base64.b64encode(encode_png(positive)).decode()
    response = app.client.put(f"/api/labels/{label_id}/reference", json={
        "image_id": 1, "positive": {"png": data_url}, "negative": {"png": base64.b64encode(encode_png(negative)).decode()}})
    assert response.status_code == 200, response.text
    reference = response.json()["reference"]
    assert np.array_equal(decode_rle(reference["positive"]), positive)
    assert np.array_equal(decode_rle(reference["negative"]), negative)
    upload = app.client.post(f"/api/labels/{label_id}/reference/upload", data={"image_id": "2"},
                             files={"positive": ("p.png", encode_png(positive), "image/png")})
    assert upload.status_code == 200, upload.text
    assert upload.json()["reference"]["image_id"] == 2 and upload.json()["reference"]["negative"] is None
    assert app.client.get(f"/api/labels/{label_id}/reference").json()["history"] == 2


def test_propose_queue_and_batch(app: App) -> None:
    label_id = app.label()
    response = app.client.post("/api/propose", json={"image_id": 1, "label_id": label_id})
    assert response.status_code == 200 and response.json()["point"] is None
    assert "reference" in response.json()["reason"]
    app.accept(1, label_id, encode_rle(_box_mask()))  # becomes the reference
    proposal = app.client.post("/api/propose", json={"image_id": 2, "label_id": label_id}).json()
    assert proposal["point"] == {"x": WIDTH // 2, "y": HEIGHT // 2, "positive": True}
    assert proposal["prediction"]["used_reference"] and proposal["prediction"]["area"] > 0
    assert app.client.get(f"/api/queue?label_id={label_id}").json()["image_ids"] == [2, 3]
    batch = app.client.post("/api/propose/batch", json={"label_id": label_id, "limit": 1}).json()
    assert [p["image_id"] for p in batch["proposals"]] == [2] and batch["remaining"] == 1


def test_propose_falls_back_without_propose_point(tmp_path: Path) -> None:
    app = App(tmp_path, predictor=DiskPredictor(with_propose=False))
    label_id = app.label()
    app.accept(1, label_id, encode_rle(_box_mask()))
    assert app.client.get("/api/project").json()["can_propose"] is False
    response = app.client.post("/api/propose", json={"image_id": 2, "label_id": label_id})
    assert response.status_code == 200 and response.json()["point"] is None and "propose" in response.json()["reason"]


def test_large_images_are_downscaled_for_the_model_with_full_size_masks(tmp_path: Path) -> None:
    app = App(tmp_path, max_side=32)
    result = app.predict(1, None, [{"x": 63, "y": 47, "positive": True}])
    assert app.predictor.image.shape == (24, 32, 3)
    mask = decode_rle(result["mask"])
    assert mask.shape == (HEIGHT, WIDTH) and mask[47, 63]


def test_model_calls_never_overlap_and_images_are_cached(tmp_path: Path) -> None:
    app = App(tmp_path, predictor=DiskPredictor(delay=0.02))
    results: list[int] = []

    def worker(image_id: int) -> None:
        for _ in range(4):
            response = app.client.post("/api/predict", json={"image_id": image_id, "clicks": [{"x": 5, "y": 5}]})
            results.append(response.status_code)

    threads = [threading.Thread(target=worker, args=(image_id,)) for image_id in (1, 1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [200] * 12 and app.predictor.overlaps == 0
    single = App(tmp_path / "single")
    for _ in range(3):
        single.predict(1, None, [{"x": 5, "y": 5}])
    assert single.predictor.set_image_calls == 1


def test_two_tabs_accepting_at_once_keep_every_instance(app: App) -> None:
    label_id = app.label()
    second_tab = TestClient(app.client.app, base_url=BASE_URL)
    rle = encode_rle(_box_mask())

    def accept_many(client: TestClient, image_id: int) -> None:
        for _ in range(10):
            body = {"image_id": image_id, "label_id": label_id, "mask": {"rle": rle}}
            assert client.post("/api/annotations", json=body).status_code == 201

    threads = [threading.Thread(target=accept_many, args=(client, image_id))
               for client, image_id in ((app.client, 1), (second_tab, 2), (second_tab, 1))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(app.client.get("/api/images/1/annotations").json()) == 20
    assert len(second_tab.get("/api/images/2/annotations").json()) == 10


def test_only_registered_images_inside_the_folder_are_served(app: App, tmp_path: Path) -> None:
    client = app.client
    (tmp_path / "secret.txt").write_text("TOP-SECRET-CONTENT")
    (app.images_dir / "link.jpg").symlink_to(tmp_path / "secret.txt")
    assert client.get("/images/img_00.jpg").status_code == 200
    assert client.get("/api/images/1/file").headers["content-type"] == "image/jpeg"
    for url in ("/images/..%2fsecret.txt", "/images/%2e%2e/secret.txt", "/images/..%2f..%2fetc%2fpasswd",
                "/images/%2fetc%2fpasswd", "/images/link.jpg", "/images/..%2fproject%2fproject.sqlite",
                "/static/..%2fserver.py", "/api/exports/..%2f..%2fproject.sqlite"):
        response = client.get(url)
        assert response.status_code in (400, 404), url
        assert b"TOP-SECRET" not in response.content and b"SQLite" not in response.content and b"import" not in response.content
    assert client.get("/api/images/999/file").status_code == 404


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG claiming a huge size (a decompression bomb must be refused from the header)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_malformed_requests_get_4xx_with_a_reason(app: App) -> None:
    client = app.client
    label_id = app.label()
    app.accept(1, label_id, encode_rle(_box_mask()))
    cases = [
        ("post", "/api/predict", {"content": b"{not json", "headers": {"content-type": "application/json"}}, 422, "JSON"),
        ("post", "/api/predict", {"json": {"image_id": 1}}, 422, "clicks"),
        ("post", "/api/predict", {"json": {"image_id": 1, "clicks": []}}, 422, "clicks"),
        ("post", "/api/predict", {"json": {"image_id": "x", "clicks": [{"x": 1, "y": 1}]}}, 422, "image_id"),
        ("post", "/api/predict", {"json": {"image_id": 1, "clicks": [{"x": 1, "y": 1}], "bogus": 1}}, 422, "bogus"),
        ("post", "/api/predict", {"json": {"image_id": 1, "clicks": [{"x": 640, "y": 1}]}}, 400, "outside"),
        ("post", "/api/predict", {"json": {"image_id": 1, "clicks": [{"x": -1, "y": 1}]}}, 400, "outside"),
        ("post", "/api/predict", {"json": {"image_id": 77, "clicks": [{"x": 1, "y": 1}]}}, 404, "image 77"),
        ("post", "/api/predict", {"json": {"image_id": 1, "label_id": 99, "clicks": [{"x": 1, "y": 1}]}}, 404, "label 99"),
        ("post", "/api/predict", {"json": {"image_id": 1, "clicks": [{"x": 1, "y": 1}] * 101}}, 422, "clicks"),
        ("post", "/api/annotations", {"json": {"image_id": 1, "label_id": label_id, "mask": {"rle": {"size": [2, 2], "counts": [4]}}}}, 422, "image is"),
        ("post", "/api/annotations", {"json": {"image_id": 1, "label_id": label_id, "mask": {"rle": encode_rle(np.zeros((HEIGHT, WIDTH), bool))}}}, 400, "empty"),
        ("post", "/api/annotations", {"json": {"image_id": 1, "label_id": label_id, "mask": {"rle": {"size": [HEIGHT, WIDTH], "counts": "!!!"}}}}, 422, "RLE"),
        ("post", "/api/annotations", {"json": {"image_id": 1, "label_id": label_id, "mask": {}}}, 422, "exactly one"),
        ("post", "/api/annotations", {"json": {"image_id": 1, "label_id": label_id, "mask": {"png": "%%%"}}}, 422, "base64"),
        ("post", "/api/annotations", {"json": {"image_id": 1, "label_id": label_id, "mask": {"png": base64.b64encode(b"GIF89a").decode()}}}, 422, "PNG"),
        ("post", "/api/labels", {"json": {"name": "thing"}}, 409, "already exists"),
        ("post", "/api/labels", {"json": {"name": ""}}, 422, "name"),
        ("post", "/api/labels", {"json": {"name": "y", "colour": "red"}}, 422, "colour"),
        ("delete", f"/api/labels/{label_id}", {}, 409, "instances"),
        ("delete", "/api/annotations/12345", {}, 404, "annotation"),
        ("post", "/api/labels/99/reference/undo", {}, 404, "label 99"),
        ("put", f"/api/labels/{label_id}/reference", {"json": {"image_id": 1, "positive": {"rle": encode_rle(np.zeros((HEIGHT, WIDTH), bool))}}}, 400, "empty"),
        ("post", "/api/export", {"json": {"format": "voc"}}, 422, "format"),
        ("get", "/api/exports/nope.zip", {}, 404, "export"),
        ("get", "/api/queue", {}, 422, "label_id"),
        ("get", "/api/labels/1/reference/preview.png?max_side=1", {}, 422, "max_side"),
        ("get", f"/api/images/{2**70}/annotations", {}, 400, "out of range"),
        ("post", "/api/predict", {"json": {"image_id": 2**70, "clicks": [{"x": 1, "y": 1}]}}, 400, "out of range"),
        ("post", "/api/predict", {"content": b'{"image_id": 1, "clicks": [{"x": NaN, "y": 1}]}',
                                  "headers": {"content-type": "application/json"}}, 400, "outside"),
        ("post", "/api/annotations", {"json": {"image_id": 1, "label_id": label_id, "mask": {"rle": {"size": [40000, 40000], "counts": [1]}}}}, 422, "image is"),
        ("post", "/api/annotations", {"json": {"image_id": 1, "label_id": label_id, "mask": {"png": base64.b64encode(_png_header_only(10000, 10000)).decode()}}}, 422, "image is"),
        ("post", "/api/annotations", {"json": {"image_id": 1, "label_id": label_id, "mask": {"png": base64.b64encode(_png_header_only(100000, 100000)).decode()}}}, 422, "decompression bomb"),
    ]
    for method, url, kwargs, status, reason in cases:
        response = getattr(client, method)(url, **kwargs)
        assert response.status_code == status, (url, kwargs, response.text)
        assert reason.lower() in response.json()["detail"].lower(), (url, response.json())
    assert client.get("/api/images/1/annotations").status_code == 200  # still serving, nothing lost
    assert len(client.get("/api/images/1/annotations").json()) == 1


def test_oversized_bodies_are_refused(tmp_path: Path) -> None:
    app = App(tmp_path, max_body_bytes=10_000)
    response = app.client.post("/api/predict", content=b"x" * 20_000, headers={"content-type": "application/json"})
    assert response.status_code == 413 and "larger" in response.json()["detail"]

    def chunks():
        for _ in range(30):
            yield b"y" * 1000

    streamed = app.client.post("/api/labels", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    assert app.client.get("/api/labels").status_code == 200


def test_corrupt_and_odd_images_get_clear_messages(tmp_path: Path) -> None:
    app = App(tmp_path)
    good = (app.images_dir / "img_00.jpg").read_bytes()
    (app.images_dir / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (app.images_dir / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    Image.fromarray(np.zeros((HEIGHT, WIDTH, 3), np.uint8)).convert("CMYK").save(app.images_dir / "cmyk.jpg")
    Image.fromarray((np.arange(HEIGHT * WIDTH).reshape(HEIGHT, WIDTH) * 20).astype(np.uint16)).save(app.images_dir / "deep.png")
    images = {im["path"]: im for im in app.client.post("/api/images/rescan").json()["images"]}
    assert images["garbage.png"]["error"] and "garbage.png" in images["garbage.png"]["error"]
    response = app.client.get(f"/api/images/{images['garbage.png']['id']}/file")
    assert response.status_code == 422 and "garbage.png" in response.json()["detail"]
    truncated = images["truncated.jpg"]["id"]  # the header reads fine; decoding fails
    response = app.client.get(f"/api/images/{truncated}/file")
    assert response.status_code == 422 and "truncated" in response.json()["detail"].lower()
    response = app.client.post("/api/predict", json={"image_id": truncated, "clicks": [{"x": 1, "y": 1}]})
    assert response.status_code == 422
    for name in ("cmyk.jpg", "deep.png"):
        image_id = images[name]["id"]
        assert app.client.get(f"/api/images/{image_id}/file").headers["content-type"] == "image/png"
        assert app.predict(image_id, None, [{"x": 3, "y": 3}])["area"] > 0


def test_no_model_means_503_with_instructions(tmp_path: Path) -> None:
    app = App(tmp_path, with_model=False)
    response = app.client.post("/api/predict", json={"image_id": 1, "clicks": [{"x": 1, "y": 1}]})
    assert response.status_code == 503 and "--model" in response.json()["detail"]
    assert app.client.get("/api/project").json()["model_loaded"] is False


def test_page_and_static_files_are_served(app: App) -> None:
    page = app.client.get("/")
    assert page.status_code == 200 and "app.js" in page.text
    assert "http" not in page.text.replace("http-equiv", "")  # no CDN: the page works offline
    script = app.client.get("/static/app.js")
    assert script.status_code == 200 and "getBoundingClientRect" in script.text
    assert "http://" not in script.text and "https://" not in script.text
    assert app.client.get("/static/app.css").status_code == 200
    assert json.loads(app.client.get("/api/openapi.json").text)["info"]["title"] == "RefCut annotate"


def test_real_refcut_predictor_through_the_api(tmp_path: Path) -> None:
    """The session drives the actual RefCutPredictor (tiny random weights): clicks, prev mask, reference, propose."""
    import torch

    from refcut import RefCutPredictor
    from refcut.model import ModelConfig, build_model

    torch.manual_seed(0)
    RefCutPredictor(build_model(ModelConfig.from_preset("tiny_test"))).save_pretrained(tmp_path / "model")
    app = App(tmp_path, predictor=RefCutPredictor.from_pretrained(tmp_path / "model"), max_side=40)
    label_id = app.label()
    first = app.predict(1, label_id, [{"x": 30, "y": 20}])
    second = app.predict(1, label_id, [{"x": 30, "y": 20}, {"x": 5, "y": 5, "positive": False}], prev_token=first["token"])
    assert decode_rle(second["mask"]).shape == (HEIGHT, WIDTH) and not first["used_reference"]
    app.client.put(f"/api/labels/{label_id}/reference", json={"image_id": 1, "positive": {"rle": encode_rle(_box_mask())}})
    guided = app.predict(2, label_id, [{"x": 30, "y": 20}])
    assert guided["used_reference"]
    proposal = app.client.post("/api/propose", json={"image_id": 2, "label_id": label_id}).json()
    assert proposal["point"] is not None and 0 <= proposal["point"]["x"] < WIDTH and 0 <= proposal["point"]["y"] < HEIGHT
    assert decode_rle(proposal["prediction"]["mask"]).shape == (HEIGHT, WIDTH)


def test_encode_once_model_encodes_the_opened_and_next_image_ahead(tmp_path: Path) -> None:
    """``POST /api/images/{id}/prepare`` encodes that image and the next in the background; clicks then reuse them."""
    import torch

    from refcut import RefCutPredictor
    from refcut.model.encode_once import EncodeOnceConfig, EncodeOnceModel

    torch.manual_seed(0)
    predictor = RefCutPredictor(EncodeOnceModel(EncodeOnceConfig.from_preset("encode_once_tiny_test")))
    app = App(tmp_path, predictor=predictor)
    response = app.client.post("/api/images/1/prepare")
    assert response.status_code == 200 and response.json()["scheduled"] == [1, 2]
    app.session._prefetch.submit(lambda: None).result(timeout=60)  # the background queue has drained
    assert predictor.encoder_calls == 2
    label_id = app.label()
    app.predict(2, label_id, [{"x": 30, "y": 20}])
    app.predict(1, label_id, [{"x": 30, "y": 20}])
    assert predictor.encoder_calls == 2  # both were encoded ahead
    assert app.client.post("/api/images/1/prepare").json()["scheduled"] == []  # already done: not queued again
    assert App(tmp_path / "other").client.post("/api/images/1/prepare").json()["scheduled"] == []  # fake model: nothing to do
