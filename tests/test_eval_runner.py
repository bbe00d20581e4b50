"""Runs over a small synthetic parts dataset: baselines, report files, shard + merge, resume, workers, CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from refcut.evaluation.baselines import MethodSpec, is_model_method, load_predictor, method_label, method_source
from refcut.evaluation.protocol import REFERENCE_MODES
from refcut.evaluation.runner import (
    EPISODES_FILE,
    build_configs,
    merge_runs,
    parse_shard,
    read_records,
    run_evaluation,
    select_indices,
)

PART_LABELS = {1: "left", 2: "right", 3: "roof"}


def make_parts_folder(root: Path, n_images: int = 4) -> Path:
    """A parts-folder dataset: each image holds one object = left + right halves and a roof on top."""
    rng = np.random.default_rng(7)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    samples = []
    for i in range(n_images):
        height, width = 80, 100 + 4 * i
        labels = np.zeros((height, width), np.uint8)
        top, bottom, left, right = 30 + i, 70, 10 + i, 90
        middle = (left + right) // 2 + (i % 3) * 3
        labels[top:bottom, left:middle] = 1
        labels[top:bottom, middle:right] = 2
        labels[top - 15 : top, left + 15 : right - 15] = 3
        palette = np.array([[90, 90, 90], [200, 60, 50], [210, 70, 60], [60, 60, 180]], np.float64)
        image = palette[labels] + rng.normal(0, 8, (height, width, 3))
        Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(root / "images" / f"img{i}.png")
        Image.fromarray(labels).save(root / "labels" / f"img{i}.png")
        samples.append({"image": f"img{i}.png", "category": "thing"})
    spec = {"format": "refcut_parts", "version": 1, "kind": "parts",
            "labels": {str(k): v for k, v in PART_LABELS.items()}, "samples": samples}
    (root / "refcut_parts.json").write_text(json.dumps(spec))
    return root


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> Path:
    return make_parts_folder(tmp_path_factory.mktemp("data") / "shapes")


def without_timing(results: dict) -> list[dict]:
    """The results entries with wall-time figures removed (they differ between runs)."""
    entries = json.loads(json.dumps(results["results"]))
    for entry in entries:
        for summary in [entry["all"], *entry["by_kind"].values()]:
            summary.pop("seconds_per_click", None)
    return entries


def test_parse_shard_and_select_indices():
    assert parse_shard("1/4") == (1, 4) and parse_shard(None) is None
    for bad in ("4/4", "x", "1/0", "-1/2"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)
    assert select_indices(10, None) == list(range(10))
    assert select_indices(10, 3) == [0, 4, 9]  # evenly spaced, first and last included
    assert select_indices(3, 10) == [0, 1, 2]


def test_build_configs_baselines_once_models_per_mode(tmp_path):
    configs = build_configs(["grabcut", str(tmp_path)], ["none", "both"], polygon_steps=[0, 16],
                            reference_scales=[1, 0.5])
    assert [(c.method, c.mode, c.study) for c in configs] == [
        ("grabcut", "none", "main"), (str(tmp_path), "none", "main"), (str(tmp_path), "both", "main"),
        (str(tmp_path), "both", "polygon_step"), (str(tmp_path), "both", "polygon_step"),
        (str(tmp_path), "both", "reference_scale"), (str(tmp_path), "both", "reference_scale"),
    ]
    assert all(c.max_clicks == 1 for c in configs if c.study != "main")
    with pytest.raises(ValueError, match="reference mode"):
        build_configs(["grabcut"], ["everything"])


def test_method_specs_name_and_restrict_modes(tmp_path):
    assert MethodSpec.parse("ours=/runs/a/final@none+both", REFERENCE_MODES) == MethodSpec(
        "/runs/a/final", "ours", ("none", "both"))
    # '=' inside a path and '@' not followed by modes are part of the path
    assert MethodSpec.parse("/runs/lr=1e-4/final", REFERENCE_MODES) == MethodSpec("/runs/lr=1e-4/final")
    assert MethodSpec.parse("/runs/v@2", REFERENCE_MODES) == MethodSpec("/runs/v@2")
    a, b = tmp_path / "a" / "final", tmp_path / "b" / "final"
    configs = build_configs([f"refcut={a}", f"baseline={b}@none", "grabcut"], ["none", "both"], polygon_steps=[8])
    assert [(c.method, c.mode, c.study) for c in configs] == [
        (f"refcut={a}", "none", "main"), (f"refcut={a}", "both", "main"), (f"refcut={a}", "both", "polygon_step"),
        (f"baseline={b}", "none", "main"), ("grabcut", "none", "main")]  # no reference ablation for @none
    assert [method_label(c.method) for c in configs] == ["refcut", "refcut", "refcut", "baseline", "grabcut"]
    assert method_source(configs[3].method) == str(b) and is_model_method(configs[3].method)
    with pytest.raises(ValueError, match="labelled 'final'"):
        build_configs([str(a), str(b)])
    with pytest.raises(ValueError, match="mode 'none' only"):
        build_configs(["grabcut@both"])


def test_baselines_run_and_report(dataset_dir, tmp_path):
    configs = build_configs(["oracle", "empty", "grabcut"], max_clicks=20)
    out = run_evaluation([str(dataset_dir)], configs, tmp_path / "run", split="all", progress=False)
    results = json.loads((out / "results.json").read_text())
    by_method = {e["config"]["method"]: e["all"] for e in results["results"]}
    episodes = results["configuration"]["datasets"][0]["episodes_selected"]
    assert episodes >= 12  # 4 objects x (3 singles + >= 1 pair + whole)
    assert by_method["oracle"]["NoC@90"] == 1.0 and by_method["oracle"]["NoF@90"] == 0
    assert by_method["empty"]["NoC@80"] == 20.0 and by_method["empty"]["NoF@85"] == episodes
    assert 1.0 <= by_method["grabcut"]["NoC@85"] <= 20.0
    assert by_method["oracle"]["mIoU@k"] == [1.0] * 20
    assert results["refcut_version"] and results["configuration"]["datasets"][0]["episode_list_hash"]

    kinds = set(results["results"][0]["by_kind"])
    assert {"single", "pair", "whole"} <= kinds
    with (out / "per_episode.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 * episodes
    assert {r["method"] for r in rows} == {"oracle", "empty", "grabcut"}
    assert all(r["NoC@85"] == "1" for r in rows if r["method"] == "oracle")
    assert "iou_20" in rows[0]

    table = (out / "table.md").read_text()
    assert "## Table 1" in table and "## Table 3" in table
    for method in ("oracle", "empty", "grabcut"):
        assert f"| {method} |" in table
    assert "| shapes NoC@80 |" in table.splitlines()[table.splitlines().index("## Table 1: NoC per method and dataset") + 2]
    for name in ("miou_vs_clicks.png", "noc_per_kind.png"):
        assert (out / name).stat().st_size > 1000


def test_shard_and_merge_equal_unsharded(dataset_dir, tmp_path):
    configs = build_configs(["oracle", "grabcut"], max_clicks=4)
    full = run_evaluation([str(dataset_dir)], configs, tmp_path / "full", split="all", limit=9, progress=False)
    shards = [
        run_evaluation([str(dataset_dir)], configs, tmp_path / f"shard{i}", split="all", limit=9,
                       shard=(i, 3), progress=False)
        for i in range(3)
    ]
    assert sum(len(read_records(s / EPISODES_FILE)) for s in shards) == len(read_records(full / EPISODES_FILE))
    with pytest.raises(ValueError, match="incomplete"):
        merge_runs(tmp_path / "partial", shards[:2])
    merged = merge_runs(tmp_path / "merged", shards)
    full_results = json.loads((full / "results.json").read_text())
    merged_results = json.loads((merged / "results.json").read_text())
    assert without_timing(merged_results) == without_timing(full_results)
    assert (merged / "per_episode.csv").read_text() == (full / "per_episode.csv").read_text()


def test_settings_mismatch_refuses_to_mix(dataset_dir, tmp_path):
    run_evaluation([str(dataset_dir)], build_configs(["oracle"], max_clicks=2), tmp_path / "run", split="all",
                   limit=2, progress=False, write_report=False)
    with pytest.raises(ValueError, match="different settings"):
        run_evaluation([str(dataset_dir)], build_configs(["empty"], max_clicks=2), tmp_path / "run", split="all",
                       limit=2, progress=False)
    with pytest.raises(ValueError, match="different settings"):  # same method, other episodes
        run_evaluation([str(dataset_dir)], build_configs(["oracle"], max_clicks=2), tmp_path / "run", split="all",
                       limit=3, progress=False)


CALLS: list[str] = []


def counting_factory(spec: str):
    """load_predictor that records every episode it is used for (via set_image)."""
    predictor = load_predictor(spec)
    original = predictor.set_image

    def set_image(image):
        CALLS.append(spec)
        original(image)

    predictor.set_image = set_image
    return predictor


def test_adding_a_method_extends_a_run(dataset_dir, tmp_path):
    CALLS.clear()
    run_evaluation([str(dataset_dir)], build_configs(["oracle"], max_clicks=2), tmp_path / "run", split="all",
                   limit=2, progress=False, predictor_factory=counting_factory)
    assert CALLS == ["oracle", "oracle"]
    out = run_evaluation([str(dataset_dir)], build_configs(["oracle", "empty"], max_clicks=2), tmp_path / "run",
                         split="all", limit=2, progress=False, predictor_factory=counting_factory)
    assert CALLS == ["oracle", "oracle", "empty", "empty"]  # the oracle's finished episodes were reused
    results = json.loads((out / "results.json").read_text())["results"]
    assert sorted(entry["config"]["method"] for entry in results) == ["empty", "oracle"]


def test_resume_skips_finished_episodes(dataset_dir, tmp_path):
    configs = build_configs(["grabcut"], max_clicks=3)
    out = tmp_path / "run"
    CALLS.clear()
    run_evaluation([str(dataset_dir)], configs, out, split="all", limit=6, progress=False,
                   predictor_factory=counting_factory)
    assert len(CALLS) == 6
    reference = json.loads((out / "results.json").read_text())
    # Simulate an interruption: keep two finished lines and half of the third one.
    lines = (out / EPISODES_FILE).read_text().splitlines(keepends=True)
    (out / EPISODES_FILE).write_text("".join(lines[:2]) + lines[2][: len(lines[2]) // 2])
    CALLS.clear()
    run_evaluation([str(dataset_dir)], configs, out, split="all", limit=6, progress=False,
                   predictor_factory=counting_factory)
    assert len(CALLS) == 4  # only the unfinished episodes ran again
    records = read_records(out / EPISODES_FILE)
    assert sorted(r["episode_index"] for r in records) == list(range(6))
    assert without_timing(json.loads((out / "results.json").read_text())) == without_timing(reference)
    CALLS.clear()
    run_evaluation([str(dataset_dir)], configs, out, split="all", limit=6, progress=False,
                   predictor_factory=counting_factory)
    assert CALLS == []  # nothing left to do


def test_two_workers_match_one(dataset_dir, tmp_path):
    configs = build_configs(["grabcut"], max_clicks=3)
    one = run_evaluation([str(dataset_dir)], configs, tmp_path / "one", split="all", limit=4, progress=False)
    two = run_evaluation([str(dataset_dir)], configs, tmp_path / "two", split="all", limit=4, workers=2,
                         progress=False)
    assert without_timing(json.loads((two / "results.json").read_text())) == without_timing(
        json.loads((one / "results.json").read_text()))


def test_cli_eval_and_merge(dataset_dir, tmp_path):
    from typer.testing import CliRunner

    from refcut.cli.main import app

    runner = CliRunner()
    common = [str(dataset_dir), "--method", "oracle", "--method", "empty", "--split", "all", "--limit", "3",
              "--max-clicks", "5", "--no-progress"]
    for i in range(2):
        result = runner.invoke(app, ["eval", *common, "--out", str(tmp_path / f"s{i}"), "--shard", f"{i}/2"])
        assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["eval-merge", str(tmp_path / "merged"), str(tmp_path / "s0"), str(tmp_path / "s1")])
    assert result.exit_code == 0, result.output
    assert "| oracle | 1.00 | 1.00 | 1.00 |" in result.output
    assert "| empty | 5.00 | 5.00 | 5.00 |" in result.output
    bad = runner.invoke(app, ["eval", str(tmp_path / "nope"), "--method", "oracle", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "does not exist" in bad.output
