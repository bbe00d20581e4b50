"""``refcut train`` end to end on a synthetic object-level dataset written by the test."""

from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from refcut.cli.main import app
from refcut.data.io import is_heldout_image
from refcut.training.config import TrainConfig
from refcut.training.trainer import build_pair_source, open_training_datasets, parse_data_spec


def _object_folder(root, count=12):
    (root / "img").mkdir(parents=True)
    (root / "gt").mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        category = "box" if i % 2 else "disc"
        stem = f"{category}{i:02d}_{1000 + i}"
        image = rng.integers(0, 60, size=(48, 56, 3), dtype=np.uint8)
        mask = np.zeros((48, 56), np.uint8)
        if category == "box":
            mask[8:30, 10:40] = 255
        else:
            cv2.circle(mask, (28, 24), 14, 255, -1)
        image[mask > 0] = (220, 180, 40)
        cv2.imwrite(str(root / "img" / f"{stem}.png"), image)
        cv2.imwrite(str(root / "gt" / f"{stem}.png"), mask)
    return root


def test_parse_data_spec():
    assert parse_data_spec("/data/x:ccp")[1] == "ccp"
    assert parse_data_spec("/data/x")[1] is None
    assert str(parse_data_spec("/data/a:b")[0]) == "/data/a:b"


def test_training_split_excludes_heldout(tmp_path):
    root = _object_folder(tmp_path / "objs", count=30)
    (dataset,) = open_training_datasets([str(root)])
    assert 0 < len(dataset) < 30
    assert not any(is_heldout_image(s.image_path) for s in dataset.samples)
    source = build_pair_source(TrainConfig().with_overrides({"data.datasets": [str(root)]}), [dataset])
    pair = source.sample(np.random.default_rng(0))
    assert not is_heldout_image(pair.target_id.split("#")[0])
    with pytest.raises(ValueError, match="no training data"):
        open_training_datasets([])


def test_cli_train_and_resume(tmp_path):
    root = _object_folder(tmp_path / "objs")
    run = tmp_path / "run"
    runner = CliRunner()
    args = ["train", "-o", str(run), "--data", f"{root}:object_folder", "--preset", "tiny_test", "--steps", "3",
            "--batch-size", "2", "--workers", "0", "--device", "cpu", "--set", "data.max_initial_points=3",
            "--set", "dump_every=0", "--set", "checkpoint_every=1", "--no-progress", "--stop-at", "2"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    saved = TrainConfig.load_yaml(run / "config.yaml")
    assert saved.steps == 3 and saved.model.preset == "tiny_test" and saved.data.max_initial_points == 3
    assert not (run / "final").exists()
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "already holds a run" in again.output
    resumed = runner.invoke(app, ["train", "--resume", str(run), "--no-progress"])
    assert resumed.exit_code == 0, resumed.output
    assert (run / "final" / "config.json").is_file()
    with open(run / "log.csv", newline="") as handle:
        assert [int(r["step"]) for r in csv.DictReader(handle)] == [1, 2, 3]


def test_cli_errors(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["train", "-o", str(tmp_path / "r"), "--set", "optim.nope=1"])
    assert result.exit_code == 2 and "unknown config key" in result.output
    result = runner.invoke(app, ["train"])
    assert result.exit_code == 2 and "--output" in result.output
    result = runner.invoke(app, ["train", "--resume", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "not found" in result.output
    result = runner.invoke(app, ["train", "-o", str(tmp_path / "r2"), "--preset", "tiny_test", "--device", "cpu",
                                 "--no-progress"])
    assert result.exit_code == 2 and "no training data" in result.output
