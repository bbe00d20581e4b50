"""Training config: YAML round trip and command-line overrides."""

from __future__ import annotations

import pytest

from refcut.training.config import TrainConfig


def test_yaml_round_trip(tmp_path):
    config = TrainConfig().with_overrides(["optim.lr=1e-4", "steps=2000", "data.datasets=[a, b:ccp]",
                                           "optim.layer_decay=0.75", "no_reference=true"])
    path = config.save_yaml(tmp_path / "run.yaml")
    assert TrainConfig.load_yaml(path) == config


def test_overrides_are_typed():
    config = TrainConfig().with_overrides(
        ["optim.lr=1e-4", "steps=2000", "model.image_size=224", "optim.decay_at=0.5", "save_fp16=yes",
         "optim.grad_clip=none", "model.init=/some/dir"]
    )
    assert config.optim.lr == pytest.approx(1e-4) and isinstance(config.optim.lr, float)
    assert config.steps == 2000 and config.model.image_size == 224
    assert config.optim.decay_at == [0.5] and config.save_fp16 is True
    assert config.optim.grad_clip is None and config.model.init == "/some/dir"
    assert TrainConfig().with_overrides({"model.image_size": "none"}).model.image_size is None


@pytest.mark.parametrize(
    "override, message",
    [("optim.lrr=1", "unknown config key"), ("nothing.lr=1", "unknown config section"), ("steps=abc", "steps"),
     ("steps", "key=value"), ("precision=fp8", "precision"), ("optim.decay_at=[2.0]", "decay_at"),
     ("data.base_resize=crop", "base_resize"), ("steps=1.5", "steps")],
)
def test_bad_overrides_are_clear_errors(override, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig().with_overrides([override])


def test_load_yaml_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        TrainConfig.load_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  learning_rate: 1\n")
    with pytest.raises(ValueError, match="optim.learning_rate"):
        TrainConfig.load_yaml(bad)
    partial = tmp_path / "partial.yaml"
    partial.write_text("steps: 7\noptim:\n  lr: 0.001\n")
    loaded = TrainConfig.load_yaml(partial)
    assert loaded.steps == 7 and loaded.optim.lr == 0.001 and loaded.batch_size == TrainConfig().batch_size
