"""Ensembles of encode-once models: shared encoders, averaged probabilities, storage, predictor, CLI."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from refcut import RefCutPredictor
from refcut.model.encode_once import EncodeOnceConfig, EncodeOnceModel
from refcut.model.ensemble import EncodeOnceEnsemble, EnsembleConfig
from refcut.weights.native import load_pretrained, save_pretrained

TINY = "encode_once_tiny_test"


def members(count: int = 2) -> list[EncodeOnceModel]:
    """Tiny models with the same frozen encoders and different decoders / prompt MLPs."""
    models = []
    for seed in range(count):
        torch.manual_seed(seed)
        model = EncodeOnceModel(EncodeOnceConfig.from_preset(TINY)).eval()
        for mlp in (model.reference.positive_mlp, model.reference.negative_mlp):
            torch.nn.init.normal_(mlp.fc2.weight, std=0.5)
        models.append(model)
    for model in models[1:]:
        model.encoder.load_state_dict(models[0].encoder.state_dict())
        model.edge_encoder.load_state_dict(models[0].edge_encoder.state_dict())
    return models


def decode_inputs(model: EncodeOnceModel, seed: int = 0):
    torch.manual_seed(seed)
    size = model.config.image_size
    image = torch.rand(1, 3, size, size)
    prev = torch.zeros(1, 1, size, size)
    points = torch.tensor([[[size / 2, size / 2, 1.0], [5.0, 7.0, 0.0]]])
    reference = torch.rand(1, 3, size, size)
    positive = torch.zeros(1, 1, size, size)
    positive[..., 10:30, 10:40] = 1
    return image, prev, points, reference, positive


@torch.no_grad()
def test_the_ensemble_probability_is_the_mean_of_its_members():
    parts = members(2)
    ensemble = EncodeOnceEnsemble.from_members(parts)
    image, prev, points, reference, positive = decode_inputs(parts[0])
    features = ensemble.encode(image)
    ref_features = ensemble.encode_reference(reference)
    prompts = ensemble.reference_prompt(ref_features, positive)
    views = ensemble.encode_view(features)
    got = torch.sigmoid(ensemble.decode(views, prev, points, prompts))
    each = [torch.sigmoid(m.decode(m.encode_view(features), prev, points, m.reference_prompt(ref_features, positive)))
            for m in parts]
    assert not torch.allclose(each[0], each[1], atol=1e-3)  # the members differ ...
    assert torch.allclose(got, (each[0] + each[1]) / 2, atol=1e-5)  # ... and the ensemble is their mean
    # without a reference, too; one member alone is that member
    got_plain = torch.sigmoid(ensemble.decode(views, prev, points, None))
    plain = [torch.sigmoid(m.decode(m.encode_view(features), prev, points, None)) for m in parts]
    assert torch.allclose(got_plain, (plain[0] + plain[1]) / 2, atol=1e-5)
    single = EncodeOnceEnsemble.from_members(parts[:1])
    assert torch.allclose(torch.sigmoid(single.decode(single.encode_view(features), prev, points, None)), plain[0], atol=1e-5)


def test_the_members_share_one_copy_of_the_encoders_and_store_it_once(tmp_path):
    ensemble = EncodeOnceEnsemble.from_members(members(3))
    assert all(m.encoder is ensemble.encoder and m.edge_encoder is ensemble.edge_encoder for m in ensemble.members)
    save_pretrained(ensemble, tmp_path / "ens")
    config = json.loads((tmp_path / "ens" / "config.json").read_text())
    assert config["family"] == "encode_once_ensemble" and len(config["model"]["members"]) == 3
    stored = ensemble.stored_state_dict()
    assert any(k.startswith("members.0.encoder.") for k in stored)  # the tiny preset stores its encoders ...
    assert not any(k.startswith(("members.1.encoder.", "members.2.edge_encoder.")) for k in stored)  # ... once
    loaded, _ = load_pretrained(tmp_path / "ens")
    assert isinstance(loaded, EncodeOnceEnsemble)
    assert loaded.members[2].encoder is loaded.members[0].encoder
    for key, value in ensemble.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    packaged = EnsembleConfig(tuple(replace(m, encoder_weights="packaged") for m in ensemble.config.members))
    assert not any(".encoder." in k or "edge_encoder." in k for k in EncodeOnceEnsemble(packaged).stored_state_dict())


def test_members_with_other_encoders_are_refused():
    parts = members(2)
    with torch.no_grad():
        next(parts[1].encoder.parameters()).add_(1.0)
    with pytest.raises(ValueError, match="other frozen encoder weights"):
        EncodeOnceEnsemble.from_members(parts)
    wider = replace(parts[0].config, encoder=replace(parts[0].config.encoder, image_size=112))
    with pytest.raises(ValueError, match="other frozen encoders"):
        EnsembleConfig((parts[0].config, wider))
    with pytest.raises(ValueError, match="at least one member"):
        EnsembleConfig(())
    with pytest.raises(ValueError, match="unknown ensemble config keys"):
        EnsembleConfig.from_dict({"members": [parts[0].config.to_dict()], "weights": [1]})


def test_the_predictor_runs_an_ensemble_with_one_encoder_pass_per_view():
    parts = members(2)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, size=(300, 400, 3), dtype=np.uint8)
    reference = rng.integers(0, 255, size=(80, 80, 3), dtype=np.uint8)
    positive = np.zeros((80, 80), bool)
    positive[20:50, 20:60] = True
    click = (np.array([[200, 150]]), np.array([1]))

    def first_click(model) -> tuple[RefCutPredictor, np.ndarray]:
        predictor = RefCutPredictor(model)
        predictor.set_reference(reference, positive)
        predictor.set_image(image)
        return predictor, predictor.predict(*click).prob

    predictor, prob = first_click(EncodeOnceEnsemble.from_members(parts))
    assert predictor.encode_once and predictor.encoder_calls == 1 and predictor.reference_encodings == 1
    each = [first_click(m)[1] for m in parts]
    assert np.allclose(prob, (each[0] + each[1]) / 2, atol=1e-4)
    assert predictor.propose_point() is not None
    prev = np.zeros((300, 400), np.float32)
    prev[100:200, 150:250] = 0.9
    predictor.predict(np.array([[200, 150], [170, 130]]), np.array([1, 0]), prev_mask=prev)  # a zoom-in crop
    assert predictor.encoder_calls == 2


def test_cli_pack_model_ensemble_and_info(tmp_path):
    from typer.testing import CliRunner

    from refcut.cli.main import app

    parts = members(2)
    for index, model in enumerate(parts):
        save_pretrained(model, tmp_path / f"run{index}", metadata={"training": {"seed": index}})
    out = tmp_path / "packed"
    runner = CliRunner()
    args = ["pack-model", str(tmp_path / "run0"), str(out), "--ensemble", str(tmp_path / "run1"),
            "--refine", "guided-grabcut", "--run", "seeds01"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["family"] == "encode_once_ensemble" and config["predictor"] == {"refine": "guided-grabcut"}
    assert config["ensemble_sources"] == [str(tmp_path / "run0"), str(tmp_path / "run1")]
    predictor = RefCutPredictor.from_pretrained(out)
    assert isinstance(predictor.model, EncodeOnceEnsemble) and predictor.refine == "guided-grabcut"
    info = runner.invoke(app, ["info", str(out)])
    assert info.exit_code == 0, info.output
    assert "2 members, probabilities averaged" in info.output and "predictor:    refine=guided-grabcut" in info.output
    # a member with other encoder weights: a clear error, nothing written
    with torch.no_grad():
        next(parts[1].encoder.parameters()).add_(1.0)
    save_pretrained(parts[1], tmp_path / "other")
    bad = runner.invoke(app, ["pack-model", str(tmp_path / "run0"), str(tmp_path / "x"), "--ensemble", str(tmp_path / "other")])
    assert bad.exit_code == 1 and "other frozen encoder weights" in bad.output
    assert not (tmp_path / "x").exists()


def test_training_cannot_start_from_an_ensemble(tmp_path):
    from refcut.training.config import TrainConfig
    from refcut.training.trainer import build_initial_model

    save_pretrained(EncodeOnceEnsemble.from_members(members(2)), tmp_path / "ens")
    config = TrainConfig().with_overrides({"model.preset": TINY, "model.init": str(tmp_path / "ens")})
    with pytest.raises(ValueError, match="is an ensemble"):
        build_initial_model(config)
