"""The Label Studio backend without a Label Studio server: protocol, references, predictions, errors.

A fake client stands in for Label Studio's API (tasks, annotations, images as bytes); the
predictor is the app tests' DiskPredictor (disks around the clicks, radius from the reference).
The real server is driven in test_label_studio_server.py.
"""

from __future__ import annotations

import io
import logging

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

pytest.importorskip("label_studio_sdk", reason="needs label-studio-sdk (pip install 'refcut[label-studio]')")

from app_fakes import DiskPredictor  # noqa: E402
from label_studio_sdk.converter import brush  # noqa: E402

from refcut.integrations.label_studio.backend import RefCutBackend  # noqa: E402
from refcut.integrations.label_studio.client import LabelStudioClient, LabelStudioError, ProjectState, image_name  # noqa: E402
from refcut.integrations.label_studio.protocol import (  # noqa: E402
    EXAMPLE_LABEL_CONFIG,
    LabelingConfig,
    ProtocolError,
    brush_region,
    decode_brush,
    parse_context,
)
from refcut.integrations.label_studio.references import ReferenceStore, parse_overrides  # noqa: E402
from refcut.integrations.label_studio.server import create_app  # noqa: E402

WIDTH, HEIGHT = 80, 60
CONFIG = LabelingConfig.parse(EXAMPLE_LABEL_CONFIG)


def jpeg(seed: int, size: tuple[int, int] = (WIDTH, HEIGHT)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def box(x0: int, y0: int, x1: int, y1: int, shape: tuple[int, int] = (HEIGHT, WIDTH)) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[y0:y1, x0:x1] = True
    return mask


class FakeLabelStudio:
    """The parts of LabelStudioClient the backend uses, over in-memory tasks."""

    url = "http://127.0.0.1:1"

    def __init__(self) -> None:
        self.images: dict[str, bytes] = {}
        self.tasks: dict[int, dict] = {}
        self.down = False
        self.state_calls = 0
        self.list_calls = 0

    def add_task(self, task_id: int, image: bytes | None, url: str | None = None) -> dict:
        url = url or f"/data/upload/1/{task_id}.jpg"
        if image is not None:
            self.images[url] = image
        self.tasks[task_id] = {"id": task_id, "project": 1, "data": {"image": url}, "annotations": []}
        return self.tasks[task_id]

    def annotate(self, task_id: int, regions: list[dict], annotation_id: int, created_at: str,
                 ground_truth: bool = False, cancelled: bool = False) -> None:
        self.tasks[task_id]["annotations"].append({
            "id": annotation_id, "result": regions, "was_cancelled": cancelled, "ground_truth": ground_truth,
            "created_at": created_at, "updated_at": created_at})

    def _check(self) -> None:
        if self.down:
            raise LabelStudioError(f"cannot reach Label Studio at {self.url}: connection refused", unreachable=True)

    def project_state(self, project_id: int) -> ProjectState:
        self._check()
        self.state_calls += 1
        annotations = [a for t in self.tasks.values() for a in t["annotations"]]
        return ProjectState(len(annotations), sum(a["was_cancelled"] for a in annotations),
                            sum(a["ground_truth"] for a in annotations), sum(bool(t["annotations"]) for t in self.tasks.values()))

    def annotated_tasks(self, project_id: int) -> list[dict]:
        self._check()
        self.list_calls += 1
        return [task for task in self.tasks.values() if task["annotations"]]

    def task(self, task_id: int) -> dict:
        self._check()
        return self.tasks[task_id]

    def fetch_image(self, url: str) -> tuple[bytes, str]:
        self._check()
        if url not in self.images:
            raise LabelStudioError(f"Label Studio at {self.url} answered HTTP 404 for image {url}")
        return self.images[url], image_name(url)

    def close(self) -> None:
        pass


def keypoint(x: float, y: float, label: str = "hair", positive: bool = True, size=(WIDTH, HEIGHT)) -> dict:
    """A smart keypoint as the Label Studio frontend sends it: percent coordinates, is_positive."""
    return {"id": f"k{x}-{y}", "type": "keypointlabels", "from_name": "click", "to_name": "image",
            "original_width": size[0], "original_height": size[1], "image_rotation": 0, "origin": "manual",
            "is_positive": positive, "value": {"x": x, "y": y, "width": 0.5, "keypointlabels": [label]}}


def hair_region(mask: np.ndarray, label: str = "hair") -> dict:
    return brush_region(mask, label, CONFIG, 1.0)


@pytest.fixture
def studio() -> FakeLabelStudio:
    fake = FakeLabelStudio()
    fake.add_task(1, jpeg(1))
    fake.add_task(2, jpeg(2))
    fake.add_task(3, jpeg(3))
    return fake


def make_backend(studio: FakeLabelStudio, predictor=None, **store_kwargs) -> RefCutBackend:
    store = ReferenceStore(studio, **store_kwargs)  # type: ignore[arg-type]
    return RefCutBackend(predictor or DiskPredictor(), studio, store, "refcut-test")  # type: ignore[arg-type]


def interactive(backend: RefCutBackend, task_id: int, points: list[dict]):
    task = {"id": task_id, "project": 1, "data": {"image": f"/data/upload/1/{task_id}.jpg"}}
    return backend.predict([task], "1.1700000000", EXAMPLE_LABEL_CONFIG, {"result": points})


def decoded(answer) -> np.ndarray:
    region = answer.body["results"][0]["result"][0]
    flat = brush.decode_rle(region["value"]["rle"])  # Label Studio's own decoder
    return flat.reshape(region["original_height"], region["original_width"], 4)[:, :, 3] > 0


# -- protocol ---------------------------------------------------------------------------------
def test_labeling_config_parse_and_errors():
    assert CONFIG.brush_name == "mask" and CONFIG.image_name == "image" and CONFIG.image_field == "image"
    assert CONFIG.labels == ("hair", "skin") and CONFIG.keypoint_names == ("click",)
    with pytest.raises(ProtocolError, match="BrushLabels"):
        LabelingConfig.parse('<View><Image name="i" value="$img"/><Choices name="c" toName="i"><Choice value="a"/></Choices></View>')
    with pytest.raises(ProtocolError, match="not valid XML"):
        LabelingConfig.parse("<View><Image name='i' value='$img'>")
    with pytest.raises(ProtocolError, match="no labeling config"):
        LabelingConfig.parse("")


def test_brush_region_round_trips_through_label_studio_rle():
    mask = box(10, 5, 30, 40)
    mask[50:, 70:] = True
    region = brush_region(mask, "skin", CONFIG, 0.75)
    assert region["value"]["format"] == "rle" and region["value"]["brushlabels"] == ["skin"]
    assert (region["from_name"], region["to_name"], region["type"]) == ("mask", "image", "brushlabels")
    assert (region["original_width"], region["original_height"]) == (WIDTH, HEIGHT)
    assert region["value"]["rle"] == brush.mask2rle(mask.astype(np.uint8) * 255)
    assert np.array_equal(decode_brush(region), mask)
    with pytest.raises(ProtocolError, match="pixels"):
        decode_brush({**region, "original_width": WIDTH + 1})


def test_parse_context_groups_keypoints_of_the_newest_label():
    points = [keypoint(10, 10), keypoint(50, 50, "skin"), keypoint(20, 30, positive=False), keypoint(90, 80)]
    clicks = parse_context({"result": points}, CONFIG)
    assert clicks.label == "hair" and (clicks.width, clicks.height) == (WIDTH, HEIGHT)
    assert [(p.x, p.y, p.positive) for p in clicks.keypoints] == [(10, 10, True), (20, 30, False), (90, 80, True)]
    assert clicks.keypoints[2].to_pixels(WIDTH, HEIGHT) == (72.0, 48.0)
    assert clicks.keypoints[0].__class__(100, 100, True).to_pixels(WIDTH, HEIGHT) == (WIDTH - 1, HEIGHT - 1)
    assert parse_context(None, CONFIG) is None and parse_context({"result": []}, CONFIG) is None
    rectangle = {"type": "rectanglelabels", "value": {"x": 1, "y": 1, "width": 5, "height": 5, "rectanglelabels": ["hair"]}}
    assert parse_context({"result": [rectangle]}, CONFIG) is None


@pytest.mark.parametrize("point, message", [
    (keypoint(101, 10), "outside the image"),
    (keypoint(10, -0.5), "outside the image"),
    (keypoint(10, 10, "shoes"), "not a label of <BrushLabels"),
    ({**keypoint(10, 10), "value": {"x": 10, "keypointlabels": ["hair"]}}, "lacks x/y"),
    ({**keypoint(10, 10), "value": {"x": 10, "y": 10}}, "has no label"),
])
def test_parse_context_rejects_bad_keypoints(point, message):
    with pytest.raises(ProtocolError, match=message):
        parse_context({"result": [point]}, CONFIG)


def test_parse_overrides():
    assert parse_overrides(["hair=12", "a=b=3"]) == {"hair": 12, "a=b": 3}
    for bad in ("hair", "=3", "hair=x"):
        with pytest.raises(ValueError, match="LABEL=TASK_ID"):
            parse_overrides([bad])


def test_client_resolves_only_label_studio_urls():
    client = LabelStudioClient("http://127.0.0.1:8080/", "token")
    assert client.resolve_image_url("/data/upload/3/a.jpg") == "http://127.0.0.1:8080/data/upload/3/a.jpg"
    assert client.resolve_image_url("/data/local-files/?d=photos/a.jpg").endswith("/data/local-files/?d=photos/a.jpg")
    assert client.resolve_image_url("http://127.0.0.1:8080/data/x.png") == "http://127.0.0.1:8080/data/x.png"
    for url in ("http://other.host/a.jpg", "s3://bucket/a.jpg", ""):
        with pytest.raises(LabelStudioError, match="not served by Label Studio|non-empty"):
            client.resolve_image_url(url)
    assert image_name("/data/local-files/?d=photos/dir%20x/0001.jpg") == "0001.jpg"
    with pytest.raises(ValueError, match="API key"):
        LabelStudioClient("http://127.0.0.1:8080", "")
    with pytest.raises(ValueError, match="http://host:port"):
        LabelStudioClient("127.0.0.1:8080", "token")
    client.close()


# -- references -------------------------------------------------------------------------------
def test_first_submitted_annotation_is_the_reference_with_other_labels_negative(studio):
    store = ReferenceStore(studio)
    assert store.references(1, CONFIG) == {}
    studio.annotate(2, [hair_region(box(0, 0, 10, 10))], 7, "2026-01-01T10:00:00Z", cancelled=True)  # skipped
    studio.annotate(2, [hair_region(box(0, 0, 20, 20)), hair_region(box(40, 0, 60, 10), "skin")], 8, "2026-01-02T10:00:00Z")
    studio.annotate(1, [hair_region(box(0, 0, 30, 30))], 9, "2026-01-03T10:00:00Z")
    references = store.references(1, CONFIG)
    hair, skin = references["hair"], references["skin"]
    assert (hair.task_id, hair.annotation_id, hair.source) == (2, 8, "first annotation")
    assert np.array_equal(hair.positive, box(0, 0, 20, 20)) and np.array_equal(hair.negative, box(40, 0, 60, 10))
    assert np.array_equal(skin.positive, box(40, 0, 60, 10)) and np.array_equal(skin.negative, box(0, 0, 20, 20))
    assert hair.image_url == "/data/upload/1/2.jpg"


def test_ground_truth_and_command_line_override_win(studio):
    studio.annotate(1, [hair_region(box(0, 0, 10, 10))], 1, "2026-01-01T00:00:00Z")
    studio.annotate(2, [hair_region(box(0, 0, 20, 20))], 2, "2026-01-02T00:00:00Z", ground_truth=True)
    studio.annotate(3, [hair_region(box(0, 0, 30, 30))], 3, "2026-01-03T00:00:00Z")
    assert ReferenceStore(studio).references(1, CONFIG)["hair"].source == "ground truth"
    assert ReferenceStore(studio).references(1, CONFIG)["hair"].task_id == 2
    overridden = ReferenceStore(studio, overrides={"hair": 3}).references(1, CONFIG)["hair"]
    assert (overridden.task_id, overridden.source) == (3, "--reference")


def test_override_without_usable_annotation_falls_back(studio, caplog):
    studio.annotate(1, [hair_region(box(0, 0, 10, 10))], 1, "2026-01-01T00:00:00Z")
    with caplog.at_level(logging.WARNING, logger="refcut.label_studio"):
        reference = ReferenceStore(studio, overrides={"hair": 3, "shoes": 1}).references(1, CONFIG)["hair"]
    assert (reference.task_id, reference.source) == (1, "first annotation")
    assert "task 3 has no usable annotation" in caplog.text and "shoes" in caplog.text


def test_references_reload_when_annotations_change_or_a_webhook_says_so(studio):
    store = ReferenceStore(studio, refresh_seconds=1e9)
    studio.annotate(1, [hair_region(box(0, 0, 10, 10))], 1, "2026-01-01T00:00:00Z")
    assert store.references(1, CONFIG)["hair"].task_id == 1
    assert store.references(1, CONFIG)["hair"].task_id == 1
    assert store.loads == 1 and studio.list_calls == 1  # unchanged counters: no re-read
    studio.tasks[1]["annotations"][0]["result"] = [hair_region(box(0, 0, 30, 30))]  # edited: counters stay
    studio.tasks[1]["annotations"][0]["updated_at"] = "2026-01-05T00:00:00Z"
    assert store.references(1, CONFIG)["hair"].positive.sum() == 100
    store.invalidate(1)  # what /webhook does on ANNOTATION_UPDATED
    assert store.references(1, CONFIG)["hair"].positive.sum() == 900 and store.loads == 2
    studio.annotate(2, [hair_region(box(0, 0, 5, 5), "skin")], 2, "2026-01-06T00:00:00Z")  # new: counters change
    assert store.references(1, CONFIG)["skin"].task_id == 2 and store.loads == 3


def test_empty_or_broken_brush_is_skipped(studio, caplog):
    broken = hair_region(box(0, 0, 10, 10))
    broken["original_width"] = WIDTH * 2
    studio.annotate(1, [broken], 1, "2026-01-01T00:00:00Z")
    studio.annotate(2, [hair_region(np.zeros((HEIGHT, WIDTH), bool))], 2, "2026-01-02T00:00:00Z")
    studio.annotate(3, [hair_region(box(0, 0, 10, 10))], 3, "2026-01-03T00:00:00Z")
    with caplog.at_level(logging.WARNING, logger="refcut.label_studio"):
        assert ReferenceStore(studio).references(1, CONFIG)["hair"].task_id == 3
    assert "RLE holds" in caplog.text and "mask is empty" in caplog.text


# -- predictions ------------------------------------------------------------------------------
def test_interactive_mask_at_the_clicks_and_encodes_the_image_once(studio):
    predictor = DiskPredictor()
    backend = make_backend(studio, predictor)
    answer = interactive(backend, 1, [keypoint(25, 50)])
    assert answer.status == 200, answer.body
    prediction = answer.body["results"][0]
    mask = decoded(answer)
    assert mask.shape == (HEIGHT, WIDTH) and mask[30, 20] and not mask[5, 75]
    assert prediction["model_version"] == "refcut-test" and 0 < prediction["score"] <= 1
    assert prediction["refcut"]["reference"] is None and "no reference yet" in prediction["refcut"]["message"]
    second = interactive(backend, 1, [keypoint(25, 50), keypoint(75, 50, positive=False)])
    assert decoded(second)[30, 20] and not decoded(second)[30, 60]
    assert predictor.set_image_calls == 1 and backend.image_fetches == 1
    assert predictor.last_prev is not None  # the second click refines the first one's mask
    interactive(backend, 2, [keypoint(50, 50)])
    interactive(backend, 1, [keypoint(50, 50)])
    assert predictor.set_image_calls == 3 and backend.image_fetches == 2  # task 1 came from the LRU


def test_submitted_annotation_becomes_the_reference_for_the_next_task(studio):
    predictor = DiskPredictor()
    backend = make_backend(studio, predictor)
    before = decoded(interactive(backend, 2, [keypoint(50, 50)]))
    studio.annotate(1, [hair_region(box(0, 0, 80, 50)), hair_region(box(0, 50, 80, 60), "skin")], 1, "2026-01-01T00:00:00Z")
    answer = interactive(backend, 2, [keypoint(50, 50)])
    after = decoded(answer)
    assert answer.body["results"][0]["refcut"]["reference"] == {"label": "hair", "task": 1, "annotation": 1,
                                                                "source": "first annotation"}
    assert predictor.set_reference_calls == 1 and after.sum() > before.sum()
    interactive(backend, 2, [keypoint(50, 50), keypoint(20, 20)])
    assert predictor.set_reference_calls == 1  # same reference: not set again
    assert decoded(interactive(backend, 2, [keypoint(50, 50, "skin")])).sum() < after.sum()  # skin's reference is smaller


def test_batch_proposes_per_label_with_a_reference(studio):
    backend = make_backend(studio)
    answer = backend.predict(list(studio.tasks.values()), "1.17", EXAMPLE_LABEL_CONFIG, None)
    assert answer.status == 422 and len(answer.body["results"]) == 3
    assert all("no label has a reference yet" in item["error"] for item in answer.body["errors"])
    studio.annotate(1, [hair_region(box(0, 0, 40, 40))], 1, "2026-01-01T00:00:00Z")
    answer = backend.predict([dict(task) for task in studio.tasks.values()], "1.17", EXAMPLE_LABEL_CONFIG, None)
    assert answer.status == 200 and "errors" not in answer.body
    annotated, second, third = answer.body["results"]
    assert annotated == []  # task 1 has an annotation
    for item in (second, third):
        assert [region["value"]["brushlabels"] for region in item["result"]] == [["hair"]]
        assert item["model_version"] == "refcut-test" and item["score"] > 0
        assert item["refcut"]["proposals"][0]["point"] == [WIDTH // 2, HEIGHT // 2]


def test_batch_without_propose_point_says_so(studio):
    studio.annotate(1, [hair_region(box(0, 0, 40, 40))], 1, "2026-01-01T00:00:00Z")
    answer = make_backend(studio, DiskPredictor(with_propose=False)).predict([studio.tasks[2]], "1.1", EXAMPLE_LABEL_CONFIG, None)
    assert answer.status == 422 and "cannot propose points" in answer.body["errors"][0]["error"]


# -- bad input --------------------------------------------------------------------------------
def test_bad_images_fail_per_task_with_clear_errors(studio, caplog):
    studio.add_task(4, b"this is not a jpeg")
    studio.add_task(5, None)  # not in Label Studio
    backend = make_backend(studio)
    with caplog.at_level(logging.WARNING, logger="refcut.label_studio"):
        broken = interactive(backend, 4, [keypoint(50, 50)])
        missing = interactive(backend, 5, [keypoint(50, 50)])
    assert broken.status == 422 and "task 4: cannot read image 4.jpg" in broken.body["error"]
    assert missing.status == 502 and "HTTP 404 for image /data/upload/1/5.jpg" in missing.body["error"]
    assert "cannot read image 4.jpg" in caplog.text and "HTTP 404" in caplog.text
    studio.annotate(1, [hair_region(box(0, 0, 40, 40))], 1, "2026-01-01T00:00:00Z")
    answer = backend.predict([studio.tasks[2], studio.tasks[4], studio.tasks[5]], "1.1", EXAMPLE_LABEL_CONFIG, None)
    assert answer.status == 200 and answer.body["results"][0]["result"] and answer.body["results"][1:] == [[], []]
    assert [item["task"] for item in answer.body["errors"]] == [4, 5]
    assert interactive(backend, 2, [keypoint(50, 50)]).status == 200  # still serving


def test_image_size_mismatch_and_malformed_requests(studio):
    backend = make_backend(studio)
    answer = interactive(backend, 1, [keypoint(50, 50, size=(WIDTH * 2, HEIGHT))])
    assert answer.status == 422 and "decodes to 80x60" in answer.body["error"]
    assert backend.predict([{"id": 1, "data": {}}], "1.1", EXAMPLE_LABEL_CONFIG, {"result": [keypoint(5, 5)]}).status == 422
    answer = backend.predict([{"id": 1, "data": {"image": "/x.jpg"}}], None, EXAMPLE_LABEL_CONFIG, None)
    assert answer.status == 422 and "names no project" in answer.body["error"]
    answer = backend.predict([studio.tasks[1], studio.tasks[2]], "1.1", EXAMPLE_LABEL_CONFIG, {"result": [keypoint(5, 5)]})
    assert answer.status == 422 and "one task" in answer.body["error"]


def test_unreachable_label_studio(studio, caplog):
    backend = make_backend(studio)
    studio.down = True
    with caplog.at_level(logging.WARNING, logger="refcut.label_studio"):
        interactive_answer = interactive(backend, 1, [keypoint(50, 50)])
        batch_answer = backend.predict([studio.tasks[2]], "1.1", EXAMPLE_LABEL_CONFIG, None)
    for answer in (interactive_answer, batch_answer):
        assert answer.status == 503 and "cannot reach Label Studio at http://127.0.0.1:1" in answer.body["error"]
    assert "cannot reach Label Studio" in caplog.text
    studio.down = False
    assert interactive(backend, 1, [keypoint(50, 50)]).status == 200


# -- HTTP -------------------------------------------------------------------------------------
def test_http_routes(studio):
    backend = make_backend(studio, refresh_seconds=1e9)
    client = TestClient(create_app(backend))
    health = client.get("/health").json()
    assert health["status"] == "UP" and health["model_version"] == "refcut-test"
    assert client.get("/").json()["status"] == "UP"
    assert client.post("/setup", json={"project": "1.17", "schema": EXAMPLE_LABEL_CONFIG}).json() == {"model_version": "refcut-test"}
    refused = client.post("/setup", json={"project": "1.17", "schema": "<View><Image name='i' value='$i'/></View>"})
    assert refused.status_code == 422 and "BrushLabels" in refused.json()["error"]
    body = {"tasks": [studio.tasks[1]], "project": "1.17", "label_config": EXAMPLE_LABEL_CONFIG,
            "params": {"login": None, "password": None, "context": {"result": [keypoint(25, 50)]}}}
    response = client.post("/predict", json=body)
    assert response.status_code == 200 and response.json()["results"][0]["result"][0]["type"] == "brushlabels"
    body["params"]["context"]["result"] = [keypoint(250, 50)]
    response = client.post("/predict", json=body)
    assert response.status_code == 422 and "outside the image" in response.json()["error"]
    malformed = client.post("/predict", json={"project": "1.17"})
    assert malformed.status_code == 422 and "tasks" in malformed.json()["error"]
    backend.references.references(1, CONFIG)
    loads = backend.references.loads
    assert client.post("/webhook", json={"action": "ANNOTATION_UPDATED", "project": {"id": 1}}).json()["status"] == "ok"
    assert client.post("/webhook", json={"action": "TASK_VIEWED"}).json()["status"] == "ignored"
    backend.references.references(1, CONFIG)
    assert backend.references.loads == loads + 1
    assert client.get("/health").status_code == 200


# -- command line -----------------------------------------------------------------------------
def test_cli_refuses_clearly_without_token_model_or_valid_reference(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from refcut.cli.main import app

    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    runner = CliRunner()
    result = runner.invoke(app, ["label-studio-backend", "--model", str(tmp_path)])
    assert result.exit_code == 2 and "no Label Studio API key" in result.output
    result = runner.invoke(app, ["label-studio-backend", "--api-key", "t", "--reference", "hair"])
    assert result.exit_code == 2 and "LABEL=TASK_ID" in result.output
    result = runner.invoke(app, ["label-studio-backend", "--api-key", "t", "--model", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "no model to run" in result.output
