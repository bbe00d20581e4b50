"""RefCut inside a real Label Studio: server from PyPI (own venv, SQLite, loopback, throwaway data dir).

Two projects with the example labeling config and the same Clothing Co-Parsing photos:

- "refcut": `refcut label-studio-backend --model <tiny random RefCut model>` as a subprocess, the
  way a team runs it (the reference MLP's last layers are non-zero, so a reference changes the
  prediction);
- "disk": the same backend in this process with the app tests' DiskPredictor (a disk around each
  click, its radius from the reference's area), so the test can check where the mask lands.

Requests go through Label Studio's own API exactly as its frontend sends them
(``/api/ml/<id>/interactive-annotating`` with keypoints in percent and ``is_positive``), batch
pre-annotation through the Data Manager's "retrieve predictions" action, and masks come back in
Label Studio's brush RLE, decoded with its converter. The first start of Label Studio creates its
database (a minute or two here), so the whole module shares one server.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("label_studio_sdk", reason="needs label-studio-sdk (pip install 'refcut[label-studio]')")

import httpx  # noqa: E402
from app_fakes import DiskPredictor  # noqa: E402
from conftest import SHARED_DATA  # noqa: E402
from label_studio_sdk import LabelStudio  # noqa: E402
from label_studio_sdk.converter import brush  # noqa: E402

from refcut.integrations.label_studio.local import free_port, label_studio_command, local_label_studio  # noqa: E402
from refcut.integrations.label_studio.protocol import EXAMPLE_LABEL_CONFIG, LabelingConfig, brush_region  # noqa: E402

pytestmark = pytest.mark.label_studio
REPO = Path(__file__).resolve().parents[1]
CCP = SHARED_DATA / "clothing-co-parsing"
STEMS = ("0001", "0002", "0003")
CONFIG = LabelingConfig.parse(EXAMPLE_LABEL_CONFIG)


# -- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def photos() -> dict[str, dict]:
    """The CCP photos with their hair and skin ground truth."""
    if not (CCP / "photos").is_dir():
        pytest.skip(f"needs the Clothing Co-Parsing photos in {CCP}")
    from refcut.data.loaders.ccp import read_ccp_label_map, read_label_list

    names = read_label_list(CCP / "label_list.mat")
    found = {}
    for stem in STEMS:
        labels = read_ccp_label_map(CCP / "annotations" / "pixel-level" / f"{stem}.mat")
        found[stem] = {"path": CCP / "photos" / f"{stem}.jpg", "hair": labels == names.index("hair"),
                       "skin": labels == names.index("skin")}
    return found


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory):
    """A fresh Label Studio server; fails (instead of skipping) under CI when it is not installed."""
    if label_studio_command() is None:
        message = "Label Studio is not installed: bash scripts/install_label_studio.sh (done by install.sh --dev)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with local_label_studio(tmp_path_factory.mktemp("label-studio")) as server:
        yield server


@pytest.fixture(scope="module")
def sdk(studio) -> LabelStudio:
    return LabelStudio(base_url=studio.url, api_key=studio.token)


def auth(studio) -> dict:
    return {"Authorization": f"Token {studio.token}"}


def make_project(studio, sdk: LabelStudio, photos: dict, title: str) -> dict:
    """A project with the example config and the photos uploaded as tasks; returns ids by stem."""
    project = sdk.projects.create(title=title, label_config=EXAMPLE_LABEL_CONFIG)
    files = {f"file{i}": (f"{stem}.jpg", photos[stem]["path"].read_bytes(), "image/jpeg")
             for i, stem in enumerate(STEMS)}
    response = httpx.post(f"{studio.url}/api/projects/{project.id}/import", files=files, headers=auth(studio),
                          timeout=120)
    assert response.status_code == 201, response.text
    tasks = {Path(task.data["image"]).name.split("-", 1)[1].split(".")[0]: task.id
             for task in sdk.tasks.list(project=project.id)}
    assert sorted(tasks) == sorted(STEMS)
    return {"id": project.id, "tasks": tasks}


def start_refcut_cli(studio, model_dir: Path, log_path: Path) -> tuple[subprocess.Popen, str]:
    """`refcut label-studio-backend` on a free port; returns the process and its URL."""
    command = [sys.executable, "-m", "refcut.cli.main", "label-studio-backend", "--model", str(model_dir),
               "--port", "0", "--refresh-seconds", "100000"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO), "LABEL_STUDIO_URL": studio.url,
           "LABEL_STUDIO_API_KEY": studio.token}
    log = open(log_path, "w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        match = re.search(r"on (http://127\.0\.0\.1:\d+)", log_path.read_text())
        if match:
            return process, match.group(1)
        time.sleep(0.2)
    process.kill()
    pytest.fail("refcut label-studio-backend did not start:\n" + log_path.read_text())


def serve_in_thread(backend) -> tuple[object, str]:
    import socket

    import uvicorn

    from refcut.integrations.label_studio.server import create_app

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    server = uvicorn.Server(uvicorn.Config(create_app(backend), log_level="warning"))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    return server, f"http://127.0.0.1:{sock.getsockname()[1]}"


def in_process_backend(url: str, token: str, predictor):
    from refcut.integrations.label_studio.backend import RefCutBackend
    from refcut.integrations.label_studio.client import LabelStudioClient
    from refcut.integrations.label_studio.references import ReferenceStore

    client = LabelStudioClient(url, token)
    return RefCutBackend(predictor, client, ReferenceStore(client, refresh_seconds=100000), "refcut-disk")


@pytest.fixture(scope="module")
def refcut_setup(studio, sdk, photos, tmp_path_factory):
    """The "refcut" project with the CLI backend connected; yields (project, ml backend id, url, log, process)."""
    import torch

    from refcut import RefCutPredictor
    from refcut.model import ModelConfig, build_model

    root = tmp_path_factory.mktemp("refcut-backend")
    torch.manual_seed(0)
    model = build_model(ModelConfig.from_preset("tiny_test"))
    torch.nn.init.normal_(model.reference.positive_mlp.fc2.weight, std=0.5)
    torch.nn.init.normal_(model.reference.negative_mlp.fc2.weight, std=0.5)
    RefCutPredictor(model).save_pretrained(root / "model")
    project = make_project(studio, sdk, photos, "refcut")
    process, url = start_refcut_cli(studio, root / "model", root / "backend.log")
    ml = sdk.ml.create(project=project["id"], url=url, title="RefCut", is_interactive=True)
    yield {"project": project, "ml": ml.id, "url": url, "log": root / "backend.log", "process": process}
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="module")
def disk_setup(studio, sdk, photos):
    """The "disk" project with the in-process DiskPredictor backend connected."""
    predictor = DiskPredictor()
    backend = in_process_backend(studio.url, studio.token, predictor)
    server, url = serve_in_thread(backend)
    project = make_project(studio, sdk, photos, "disk")
    ml = sdk.ml.create(project=project["id"], url=url, title="RefCut (disk)", is_interactive=True)
    yield {"project": project, "ml": ml.id, "url": url, "predictor": predictor}
    server.should_exit = True
    backend.close()


# -- helpers ----------------------------------------------------------------------------------
def keypoints(points: list[tuple[int, int]], shape: tuple[int, int], label: str = "hair") -> list[dict]:
    """Smart keypoints as the Label Studio frontend puts them in context.result (percent, is_positive)."""
    height, width = shape
    return [{"id": f"kp{index}", "type": "keypointlabels", "from_name": "click", "to_name": "image",
             "origin": "manual", "original_width": width, "original_height": height, "image_rotation": 0,
             "is_positive": True, "value": {"x": 100.0 * x / width, "y": 100.0 * y / height, "width": 0.6,
                                            "keypointlabels": [label]}}
            for index, (x, y) in enumerate(points)]


def interactive(studio, ml_id: int, task_id: int, context_result: list[dict]) -> dict:
    """POST /api/ml/<id>/interactive-annotating, the frontend's request; returns Label Studio's answer."""
    response = httpx.post(f"{studio.url}/api/ml/{ml_id}/interactive-annotating",
                          json={"task": task_id, "context": {"result": context_result}}, headers=auth(studio),
                          timeout=300)
    assert response.status_code == 200, response.text
    return response.json()


def decode(region: dict) -> np.ndarray:
    """A brush region's mask, decoded with Label Studio's converter."""
    flat = brush.decode_rle(region["value"]["rle"])
    return flat.reshape(region["original_height"], region["original_width"], 4)[:, :, 3] > 0


def inside_points(mask: np.ndarray) -> list[tuple[int, int]]:
    """Two (x, y) pixels well inside a ground-truth region (its two most interior pixels, far apart)."""
    import cv2

    distance = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
    y0, x0 = np.unravel_index(int(np.argmax(distance)), mask.shape)
    far = distance * (np.hypot(*np.mgrid[:mask.shape[0], :mask.shape[1]] - np.array([y0, x0])[:, None, None]) > 20)
    y1, x1 = np.unravel_index(int(np.argmax(far)), mask.shape)
    return [(int(x0), int(y0)), (int(x1), int(y1))]


def submit_annotation(sdk: LabelStudio, task_id: int, photo: dict) -> int:
    """An annotation as an annotator would submit it: a hair brush and a skin brush."""
    regions = [brush_region(photo["hair"], "hair", CONFIG, 1.0), brush_region(photo["skin"], "skin", CONFIG, 1.0)]
    for region in regions:
        region.pop("score")
    return sdk.annotations.create(id=task_id, result=regions, was_cancelled=False).id


def direct_predict(url: str, studio, project_id: int, task: dict, context: dict | None) -> httpx.Response:
    """POST the backend's /predict with the body Label Studio builds."""
    body = {"tasks": [task], "project": f"{project_id}.1700000000", "label_config": EXAMPLE_LABEL_CONFIG,
            "params": {"login": None, "password": None, "context": context}}
    return httpx.post(url + "/predict", json=body, timeout=300)


# -- tests ------------------------------------------------------------------------------------
def test_interactive_mask_overlaps_the_clicked_target(studio, disk_setup, photos):
    photo = photos["0001"]
    points = inside_points(photo["hair"])
    answer = interactive(studio, disk_setup["ml"], disk_setup["project"]["tasks"]["0001"],
                         keypoints(points, photo["hair"].shape))
    data = answer["data"]
    assert data["model_version"] == "refcut-disk" and 0 < data["score"] <= 1
    region = data["result"][0]
    assert region["type"] == "brushlabels" and region["value"]["brushlabels"] == ["hair"]
    mask = decode(region)
    assert mask.shape == photo["hair"].shape
    assert all(mask[y, x] for x, y in points)
    assert (mask & photo["hair"]).sum() > 0.9 * mask.sum() and mask.mean() < 0.05


def test_refcut_model_answers_and_a_submitted_annotation_becomes_the_reference(studio, sdk, refcut_setup, disk_setup,
                                                                                photos):
    target = photos["0002"]
    points = inside_points(target["hair"])
    predictions = {}
    for name, setup in (("refcut", refcut_setup), ("disk", disk_setup)):
        task_id = setup["project"]["tasks"]["0002"]
        before = interactive(studio, setup["ml"], task_id, keypoints(points, target["hair"].shape))["data"]
        assert before["refcut"]["reference"] is None and "no reference yet" in before["refcut"]["message"]
        assert decode(before["result"][0]).shape == target["hair"].shape
        annotation = submit_annotation(sdk, setup["project"]["tasks"]["0001"], photos["0001"])
        after = interactive(studio, setup["ml"], task_id, keypoints(points, target["hair"].shape))["data"]
        assert after["refcut"]["reference"] == {"label": "hair", "task": setup["project"]["tasks"]["0001"],
                                                "annotation": annotation, "source": "first annotation"}
        predictions[name] = (before, after)
    before, after = predictions["refcut"]
    mask_before, mask_after = decode(before["result"][0]), decode(after["result"][0])
    assert mask_after.shape == target["hair"].shape
    assert not np.array_equal(mask_before, mask_after) or abs(before["score"] - after["score"]) > 1e-6
    before, after = predictions["disk"]  # the disk's radius follows the reference's hair area
    assert decode(after["result"][0]).sum() != decode(before["result"][0]).sum()
    assert disk_setup["predictor"].set_reference_calls == 1


def test_batch_pre_annotation_proposes_from_the_reference(studio, sdk, refcut_setup, photos):
    project = refcut_setup["project"]
    if not sdk.tasks.get(id=str(project["tasks"]["0001"])).annotations:  # run alone: make the references
        submit_annotation(sdk, project["tasks"]["0001"], photos["0001"])
    response = httpx.post(f"{studio.url}/api/dm/actions", params={"id": "retrieve_tasks_predictions",
                                                                 "project": project["id"]},
                          json={"selectedItems": {"all": True, "excluded": []}}, headers=auth(studio), timeout=600)
    assert response.status_code == 200, response.text
    by_task = {task.id: task for task in sdk.tasks.list(project=project["id"], fields="all")}
    annotated = by_task[project["tasks"]["0001"]]
    assert not annotated.predictions  # has an annotation: nothing proposed
    for stem in ("0002", "0003"):
        (prediction,) = by_task[project["tasks"][stem]].predictions
        prediction = prediction if isinstance(prediction, dict) else prediction.model_dump()
        assert prediction["model_version"] == "refcut-model" and prediction["score"] is not None
        regions = prediction["result"]
        assert [region["value"]["brushlabels"] for region in regions] == [["hair"], ["skin"]]  # one per reference
        for region in regions:
            assert decode(region).shape == photos[stem]["hair"].shape


def test_bad_input_gives_clear_errors_and_the_backend_stays_up(studio, sdk, refcut_setup, photos):
    project, url, log = refcut_setup["project"], refcut_setup["url"], refcut_setup["log"]
    photo = photos["0003"]
    task_id = project["tasks"]["0003"]
    task = sdk.tasks.get(id=str(task_id)).model_dump(mode="json")

    # A keypoint outside the image: Label Studio relays the failure, the backend says why.
    outside = keypoints([(10, 10)], photo["hair"].shape)
    outside[0]["value"]["x"] = 130.0
    assert "422" in interactive(studio, refcut_setup["ml"], task_id, outside)["errors"][0]
    response = direct_predict(url, studio, project["id"], task, {"result": outside})
    assert response.status_code == 422 and "lies outside the image" in response.json()["error"]

    # A label without a reference yet: a mask all the same, and the answer says so.
    fresh = sdk.projects.create(title="no references", label_config=EXAMPLE_LABEL_CONFIG)
    upload = httpx.post(f"{studio.url}/api/projects/{fresh.id}/import", headers=auth(studio), timeout=120,
                        files={"file": ("0003.jpg", photo["path"].read_bytes(), "image/jpeg")})
    assert upload.status_code == 201, upload.text
    (fresh_task,) = [t.model_dump(mode="json") for t in sdk.tasks.list(project=fresh.id, fields="all")]
    answer = direct_predict(url, studio, fresh.id, fresh_task, {"result": keypoints([(200, 300)], photo["hair"].shape, "skin")})
    assert answer.status_code == 200 and "'skin' has no reference yet" in answer.json()["results"][0]["refcut"]["message"]
    batch = direct_predict(url, studio, fresh.id, fresh_task, None)
    assert batch.status_code == 422 and "no label has a reference yet" in batch.json()["errors"][0]["error"]

    # An image Label Studio cannot serve, and one that is not an image.
    missing = sdk.projects.import_tasks(id=project["id"], request=[{"image": f"/data/upload/{project['id']}/gone.jpg"}],
                                        return_task_ids=True).task_ids[0]
    broken = httpx.post(f"{studio.url}/api/projects/{project['id']}/import", headers=auth(studio), timeout=120,
                        files={"file": ("broken.jpg", b"these bytes are not a JPEG", "image/jpeg")})
    assert broken.status_code == 201, broken.text
    tasks = {t.id: t.model_dump(mode="json") for t in sdk.tasks.list(project=project["id"], fields="all")}
    broken_task = next(t for t in tasks.values() if t["data"]["image"].endswith("broken.jpg"))
    clicks = {"result": keypoints([(10, 10)], photo["hair"].shape)}
    response = direct_predict(url, studio, project["id"], tasks[missing], clicks)
    assert response.status_code == 502 and "for image /data/upload/" in response.json()["error"]
    response = direct_predict(url, studio, project["id"], broken_task, clicks)
    assert response.status_code == 422 and "cannot read image" in response.json()["error"]

    # Label Studio unreachable: a backend pointed at a closed port.
    from refcut.predictor.baselines import EmptyPredictor

    lost = in_process_backend(f"http://127.0.0.1:{free_port()}", studio.token, EmptyPredictor())
    lost_server, lost_url = serve_in_thread(lost)
    try:
        response = direct_predict(lost_url, studio, project["id"], task, {"result": keypoints([(10, 10)], photo["hair"].shape)})
        assert response.status_code == 503 and "cannot reach Label Studio at http://127.0.0.1:" in response.json()["error"]
        assert httpx.get(lost_url + "/health").json()["status"] == "UP"
    finally:
        lost_server.should_exit = True
        lost.close()

    text = log.read_text()
    for needle in ("lies outside the image", "no label has a reference yet", "for image /data/upload/",
                   "cannot read image"):
        assert needle in text, f"{needle!r} not in the backend log:\n{text[-3000:]}"
    assert refcut_setup["process"].poll() is None
    assert httpx.get(url + "/health").json()["status"] == "UP"
    good = interactive(studio, refcut_setup["ml"], task_id, keypoints(inside_points(photo["hair"]), photo["hair"].shape))
    assert decode(good["data"]["result"][0]).shape == photo["hair"].shape
