"""The protocol with the real predictor: a tiny random RefCut model on two episodes, all modes and ablations."""

from __future__ import annotations

import json

import numpy as np

from refcut import RefCutPredictor
from refcut.evaluation.baselines import NoReferencePredictor, load_predictor
from refcut.evaluation.protocol import evaluate_episode
from refcut.evaluation.runner import build_configs, run_evaluation, to_episode_data
from refcut.model import ModelConfig, build_model
from test_eval_runner import make_parts_folder


def test_tiny_model_through_the_protocol_and_runner(tmp_path):
    torch_model = build_model(ModelConfig.from_preset("tiny_test"))
    model_dir = tmp_path / "tiny"
    RefCutPredictor(torch_model).save_pretrained(model_dir)
    assert isinstance(load_predictor(str(model_dir)), RefCutPredictor)

    dataset = make_parts_folder(tmp_path / "shapes", n_images=2)
    configs = build_configs([str(model_dir)], ["none", "positive", "negative", "both"], max_clicks=3,
                            polygon_steps=[0, 8], reference_scales=[1, 0.5])
    out = run_evaluation([str(dataset)], configs, tmp_path / "run", split="all", limit=2, progress=False)
    results = json.loads((out / "results.json").read_text())
    assert len(results["results"]) == len(configs) == 8
    for entry in results["results"]:
        curve = entry["all"]["mIoU@k"]
        assert entry["all"]["count"] == 2 and all(0.0 <= v <= 1.0 for v in curve)
        assert len(curve) == (3 if entry["config"]["study"] == "main" else 1)
    table = (out / "table.md").read_text()
    for mode in ("none", "positive", "negative", "both"):
        assert f"| tiny | {mode} |" in table
    assert (out / "ablation_polygon_step.png").exists() and (out / "ablation_reference_scale.png").exists()

    # the same folder under a name, restricted to mode none (how a no-reference baseline model is run)
    named = build_configs([f"baseline={model_dir}@none"], ["none", "both"], max_clicks=2)
    out = run_evaluation([str(dataset)], named, tmp_path / "named", split="all", limit=1, progress=False)
    assert "| baseline [none] |" in (out / "table.md").read_text()
    assert [e["config"]["mode"] for e in json.loads((out / "results.json").read_text())["results"]] == ["none"]


def test_no_reference_wrapper_equals_mode_none(tmp_path):
    from refcut.data import build_episodes, load_episode, open_dataset

    dataset = open_dataset(make_parts_folder(tmp_path / "shapes", n_images=2))
    episode = build_episodes(dataset)[0]
    data = to_episode_data(load_episode(dataset, episode, reference_mode="both"), episode)
    predictor = RefCutPredictor(build_model(ModelConfig.from_preset("tiny_test")))
    plain = evaluate_episode(predictor, data, max_clicks=2, reference_mode="none")
    wrapped = evaluate_episode(NoReferencePredictor(predictor), data, max_clicks=2, reference_mode="both")
    assert np.allclose(plain.ious, wrapped.ious)
    assert [c for c in plain.clicks] == [c for c in wrapped.clicks]
