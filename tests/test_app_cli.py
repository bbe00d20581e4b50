"""`refcut annotate` and `refcut export` from the command line (server start is stubbed out)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import typer
import uvicorn
from typer.testing import CliRunner

from app_fakes import DiskPredictor, write_images
from refcut.app.masks import encode_rle
from refcut.app.project import open_demo_project, open_project
from refcut.cli import annotate as annotate_cli
from refcut.export import read_yolo_seg

runner = CliRunner()


@pytest.fixture()
def cli() -> typer.Typer:
    app = typer.Typer()
    annotate_cli.register(app)
    return app


@pytest.fixture()
def no_serving(monkeypatch: pytest.MonkeyPatch) -> list:
    """Load a fake predictor and return from uvicorn at once; records the sockets it was given."""
    served: list = []
    monkeypatch.setattr("refcut.RefCutPredictor.from_pretrained", classmethod(lambda cls, path=None, **kw: DiskPredictor()))
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: served.append(sockets[0].getsockname()))
    return served


def _project_with_instance(root: Path) -> Path:
    write_images(root / "images", count=2)
    project = open_project(root / "project", root / "images")
    label = project.storage.create_label("thing")
    mask = np.zeros((48, 64), bool)
    mask[5:30, 10:40] = True
    project.storage.add_annotation(1, label.id, encode_rle(mask), [], int(mask.sum()), [10, 5, 30, 25])
    return root / "project"


def test_export_cli_writes_the_requested_format(cli: typer.Typer, tmp_path: Path) -> None:
    project_dir = _project_with_instance(tmp_path)
    result = runner.invoke(cli, ["export", str(project_dir), "--format", "coco", "--out", str(tmp_path / "coco")])
    assert result.exit_code == 0, result.output
    coco = json.loads((tmp_path / "coco" / "annotations.json").read_text())
    assert len(coco["annotations"]) == 1 and coco["annotations"][0]["area"] == 25 * 30
    result = runner.invoke(cli, ["export", str(project_dir), "--format", "yolo-seg", "--out", str(tmp_path / "yolo")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "yolo" / "data.yaml").exists()
    assert read_yolo_seg(tmp_path / "yolo")  # readable by the YOLO reader


def test_export_cli_rejects_bad_input(cli: typer.Typer, tmp_path: Path) -> None:
    project_dir = _project_with_instance(tmp_path)
    bad_format = runner.invoke(cli, ["export", str(project_dir), "--format", "voc", "--out", str(tmp_path / "o")])
    assert bad_format.exit_code == 2 and "coco" in bad_format.output
    not_project = runner.invoke(cli, ["export", str(tmp_path / "images"), "--format", "coco", "--out", str(tmp_path / "o")])
    assert not_project.exit_code == 2 and "not a RefCut project" in not_project.output


def test_annotate_without_a_model_tells_the_user_to_pass_one(cli: typer.Typer, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(cls, path=None, **kwargs):
        raise FileNotFoundError("this refcut install ships no default model yet")

    monkeypatch.setattr("refcut.RefCutPredictor.from_pretrained", classmethod(missing))
    write_images(tmp_path / "images", count=1)
    result = runner.invoke(cli, ["annotate", str(tmp_path / "p"), "--images", str(tmp_path / "images")])
    assert result.exit_code == 2 and "--model PATH" in result.output


def test_annotate_new_project_needs_images(cli: typer.Typer, tmp_path: Path, no_serving: list) -> None:
    result = runner.invoke(cli, ["annotate", str(tmp_path / "p")])
    assert result.exit_code == 2 and "--images" in result.output
    assert no_serving == []


def test_annotate_serves_on_loopback_and_warns_otherwise(cli: typer.Typer, tmp_path: Path, no_serving: list) -> None:
    write_images(tmp_path / "images", count=2)
    result = runner.invoke(cli, ["annotate", str(tmp_path / "p"), "--images", str(tmp_path / "images")])
    assert result.exit_code == 0, result.output
    assert "Open http://127.0.0.1:" in result.output and "WARNING" not in result.output
    assert no_serving[0][0] == "127.0.0.1" and no_serving[0][1] > 0
    reopened = runner.invoke(cli, ["annotate", str(tmp_path / "p"), "--host", "0.0.0.0"])  # images remembered
    assert reopened.exit_code == 0, reopened.output
    assert "WARNING" in reopened.output and "2 images" in reopened.output


def test_annotate_without_arguments_opens_the_demo(cli: typer.Typer, tmp_path: Path, no_serving: list) -> None:
    result = runner.invoke(cli, ["annotate", "--demo-dir", str(tmp_path / "demo")])
    assert result.exit_code == 0, result.output
    assert "Demo project" in result.output and (tmp_path / "demo" / "project.sqlite").exists()


def test_demo_project_has_images_a_label_with_reference_and_attribution(tmp_path: Path) -> None:
    project = open_demo_project(tmp_path / "demo")
    images = project.storage.list_images()
    assert 4 <= len(images) <= 6 and all(max(im.width, im.height) <= 600 and im.error is None for im in images)
    labels = {label.name: label for label in project.storage.list_labels()}
    assert labels["hair"].has_reference
    reference = project.storage.current_reference(labels["hair"].id)
    assert reference.positive_rle["size"] == [images[0].height, images[0].width]
    assert "Apache" in (tmp_path / "demo" / "ATTRIBUTION.md").read_text()
    assert open_demo_project(tmp_path / "demo").storage.list_labels() == project.storage.list_labels()  # idempotent
    demo_assets = Path(annotate_cli.__file__).resolve().parents[1] / "assets" / "demo"
    assert sum(path.stat().st_size for path in (demo_assets / "images").iterdir()) < 400_000


@pytest.mark.parametrize("host,loopback", [("127.0.0.1", True), ("localhost", True), ("::1", True),
                                           ("127.0.0.2", True), ("0.0.0.0", False), ("192.168.1.4", False)])
def test_is_loopback(host: str, loopback: bool) -> None:
    assert annotate_cli._is_loopback(host) is loopback
