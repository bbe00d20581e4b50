"""Trainer: steps run, files appear, resume is exact, optimizer groups cover everything."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from refcut.data import PartDataset, PartSample
from refcut.model import ModelConfig, build_model
from refcut.training.trainer import (
    TRAINER_STATE_NAME,
    StepBatchSampler,
    TrainingPairDataset,
    build_pair_source,
    build_param_groups,
    check_optimizer_coverage,
    compute_prompts,
    freeze_parameters,
    latest_checkpoint,
    load_checkpoint,
    train,
)
from refcut.weights.native import load_pretrained
from train_fixtures import FakePairSource, tiny_config


def _params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_train_writes_run_folder(tmp_path):
    config = tiny_config()
    final = train(config, tmp_path / "run", pair_source=FakePairSource(), progress=False)
    run = tmp_path / "run"
    assert (run / "config.yaml").is_file()
    assert (final / "model.safetensors").is_file()
    with open(run / "log.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert all(np.isfinite(float(r["loss"])) and float(r["seconds"]) > 0 for r in rows)
    assert sorted(p.name for p in (run / "dumps").glob("*.png")) == ["step_0000001.png", "step_0000002.png",
                                                                     "step_0000004.png"]
    assert latest_checkpoint(run).name == "step_0000004"
    assert (latest_checkpoint(run) / TRAINER_STATE_NAME).is_file()
    model, meta = load_pretrained(final)
    assert meta["training"]["config"]["steps"] == 4
    assert meta["training"]["steps"] == 4
    env = (run / "environment.json").read_text()
    for key in ("effective_batch_size", "torch", "git_revision", "seed", "lr", "device"):
        assert key in env


def test_training_changes_parameters(tmp_path):
    config = tiny_config(steps=2)
    torch.manual_seed(config.seed)
    initial = build_model(ModelConfig.from_preset("tiny_test"))
    final = train(config, tmp_path / "run", pair_source=FakePairSource(), progress=False)
    trained, _ = load_pretrained(final)
    changed = [k for k, v in trained.state_dict().items() if not torch.equal(v, initial.state_dict()[k])]
    assert any(k.startswith("reference.") for k in changed)
    assert any(k.startswith("patch_embed_coords.") for k in changed)


def test_resume_is_exact(tmp_path):
    straight = train(tiny_config(steps=4), tmp_path / "a", pair_source=FakePairSource(), progress=False)
    stopped = train(tiny_config(steps=4), tmp_path / "b", pair_source=FakePairSource(), progress=False, stop_at=2)
    assert stopped.name == "step_0000002" and not (tmp_path / "b" / "final").exists()
    resumed = train(tiny_config(steps=4), tmp_path / "b", resume=True, pair_source=FakePairSource(), progress=False)
    a, _ = load_pretrained(straight)
    b, _ = load_pretrained(resumed)
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    with open(tmp_path / "b" / "log.csv", newline="") as handle:
        assert [int(r["step"]) for r in csv.DictReader(handle)] == [1, 2, 3, 4]


def test_resume_with_extended_schedule_uses_new_milestones(tmp_path):
    train(tiny_config(steps=2), tmp_path / "run", pair_source=FakePairSource(), progress=False)  # decays at 2
    train(tiny_config(steps=3, **{"optim.decay_at": "[1.0]"}), tmp_path / "run", resume=True,
          pair_source=FakePairSource(), progress=False)
    with open(tmp_path / "run" / "log.csv", newline="") as handle:
        lrs = [float(r["lr"]) for r in csv.DictReader(handle)]
    assert lrs == pytest.approx([1e-3, 1e-3, 1e-3])


def test_resume_with_new_lr_scales_keeps_adam_state_by_name(tmp_path):
    train(tiny_config(steps=2), tmp_path / "run", pair_source=FakePairSource(), progress=False)
    saved = torch.load(latest_checkpoint(tmp_path / "run") / TRAINER_STATE_NAME, weights_only=True)["optimizer"]
    saved_moment = {name: saved["state"][index]["exp_avg"] for group in saved["param_groups"]
                    for index, name in zip(group["params"], group["names"])}
    # a checkpoint written before optimizer groups carried their names maps the same way
    state_path = latest_checkpoint(tmp_path / "run") / TRAINER_STATE_NAME
    state = torch.load(state_path, weights_only=True)
    for group in state["optimizer"]["param_groups"]:
        del group["names"]
    torch.save(state, state_path)
    config = tiny_config(steps=3, **{"optim.lr_scales": '{"reference.": 10}'})
    model = build_model(ModelConfig.from_preset("tiny_test"))
    groups = build_param_groups(model, config)
    lr_of = {n: g["lr"] for g in groups for n in g["names"]}
    assert lr_of["reference.positive_mlp.fc2.weight"] == pytest.approx(10 * config.optim.lr)
    assert lr_of["patch_embed_coords.proj.weight"] == pytest.approx(config.optim.lr)
    optimizer = torch.optim.Adam(groups, lr=config.optim.lr)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [3], gamma=0.1)
    assert load_checkpoint(latest_checkpoint(tmp_path / "run"), model, optimizer, scheduler, None) == 2
    by_name = {n: p for g in optimizer.param_groups for n, p in zip(g["names"], g["params"])}
    for name in ("reference.positive_mlp.fc2.weight", "head.conv_seg.weight"):
        if name in by_name:
            assert torch.equal(optimizer.state[by_name[name]]["exp_avg"], saved_moment[name])
    assert sorted(g["lr"] for g in optimizer.param_groups)[-1] == pytest.approx(10 * config.optim.lr)
    # and the whole run continues with the new groups
    train(config, tmp_path / "run", resume=True, pair_source=FakePairSource(), progress=False)
    with open(tmp_path / "run" / "log.csv", newline="") as handle:
        assert [int(r["step"]) for r in csv.DictReader(handle)] == [1, 2, 3]


def test_resume_without_run_folder_fails(tmp_path):
    with pytest.raises(FileNotFoundError):
        train(tiny_config(), tmp_path / "missing", resume=True, pair_source=FakePairSource(), progress=False)


def test_no_reference_never_calls_reference_branch(tmp_path, monkeypatch):
    from refcut.model.refcut import RefCutModel

    def forbidden(*args, **kwargs):
        raise AssertionError("reference branch called in no-reference mode")

    monkeypatch.setattr(RefCutModel, "encode_reference", forbidden)
    monkeypatch.setattr(RefCutModel, "reference_prompt", forbidden)
    final = train(tiny_config(steps=2, no_reference=True), tmp_path / "run", pair_source=FakePairSource(),
                  progress=False)
    torch.manual_seed(0)
    initial = build_model(ModelConfig.from_preset("tiny_test"))
    trained, _ = load_pretrained(final)
    for key, value in trained.state_dict().items():
        if key.startswith("reference."):
            assert torch.equal(value, initial.state_dict()[key])


def test_every_trainable_parameter_is_in_a_group():
    model = build_model(ModelConfig.from_preset("tiny_test"))
    for overrides in ({}, {"optim.layer_decay": 0.75, "optim.weight_decay": 0.05}, {"optim.freeze_blocks": 1}):
        config = tiny_config(**overrides)
        freeze_parameters(model, config.optim.freeze_blocks, config.no_reference)
        groups = build_param_groups(model, config)
        names = {n for g in groups for n in g["names"]}
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        assert names == trainable
        assert any(n.startswith("patch_embed_coords.") for n in names)
        assert any(n.startswith("reference.positive_mlp.") for n in names)
        assert any(n.startswith("reference.negative_mlp.") for n in names)
    with pytest.raises(AssertionError, match="missing"):
        check_optimizer_coverage(model, groups[1:])


def test_freeze_and_layer_decay():
    model = build_model(ModelConfig.from_preset("tiny_test"))
    config = tiny_config(**{"optim.freeze_blocks": 1, "optim.layer_decay": 0.5})
    freeze_parameters(model, 1, no_reference=False)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert any(n.startswith("backbone.blocks.0.") for n in frozen)
    assert "backbone.pos_embed" in frozen and "backbone.patch_embed.proj.weight" in frozen
    assert not any(n.startswith(("backbone.blocks.1.", "patch_embed_coords", "reference")) for n in frozen)
    lr_of = {n: g["lr"] for g in build_param_groups(model, config) for n in g["names"]}
    assert lr_of["backbone.blocks.1.attn.qkv.weight"] == pytest.approx(config.optim.lr * 0.5)
    assert lr_of["head.conv_seg.weight" if "head.conv_seg.weight" in lr_of else "patch_embed_coords.proj.weight"] \
        == pytest.approx(config.optim.lr)
    with pytest.raises(ValueError):
        freeze_parameters(model, 5, no_reference=False)


def test_dataset_items_are_deterministic_per_index():
    config = tiny_config()
    dataset = TrainingPairDataset(FakePairSource(), config, 64)
    a, b, c = dataset[7], dataset[7], dataset[8]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["points"], b["points"])
    assert not torch.equal(a["image"], c["image"])
    assert a["image"].shape == (3, 64, 64) and a["gt"].shape == (1, 64, 64)
    assert a["points"].shape == (2 * 4 + config.max_extra_clicks, 3)


def test_baseline_items_are_the_reference_runs_items_without_reference():
    rng = np.random.default_rng(0)
    samples = []
    for i, parts in enumerate([("a", "b"), ("a", "b"), ("a",), ("b",)]):
        image = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
        masks = {name: np.zeros((48, 64), bool) for name in parts}
        for j, name in enumerate(parts):
            masks[name][8:40, 8 + 24 * j:30 + 24 * j] = True
        samples.append(PartSample(f"{i}.jpg#car", "car", Path(f"{i}.jpg"), parts,
                                  load_image=lambda image=image: image, load_part_masks=lambda m=masks: dict(m)))
    datasets = [PartDataset("toy", "parts", samples)]
    with_reference = TrainingPairDataset(build_pair_source(tiny_config(), datasets), tiny_config(), 64)
    baseline_config = tiny_config(no_reference=True)
    baseline = TrainingPairDataset(build_pair_source(baseline_config, datasets), baseline_config, 64)
    seen_reference = 0
    for index in range(40):
        a, b = with_reference[index], baseline[index]
        assert a["target_id"] == b["target_id"]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["gt"], b["gt"])
        assert torch.equal(a["points"], b["points"])
        assert not b["has_reference"]
        seen_reference += a["has_reference"]
    assert seen_reference > 20


def test_step_batch_sampler_partitions_indices():
    ranks = [list(StepBatchSampler(1, 3, 2, rank, 2)) for rank in range(2)]
    assert ranks[0] == [[4, 5], [8, 9]] and ranks[1] == [[6, 7], [10, 11]]


def test_reference_grad_off_keeps_the_backbone_out_of_the_reference_graph():
    torch.manual_seed(0)
    model = build_model(ModelConfig.from_preset("tiny_test"))
    with torch.no_grad():  # non-zero last layers, so the prompt depends on the reference features
        for mlp in (model.reference.positive_mlp, model.reference.negative_mlp):
            mlp.fc2.weight.normal_()
    dataset = TrainingPairDataset(FakePairSource(reference_prob=1.0), tiny_config(), 64)
    batch = torch.utils.data.default_collate([dataset[i] for i in range(2)])
    block = model.backbone.blocks[-1].mlp.fc1.weight
    mlp = model.reference.positive_mlp.fc2.weight
    with_grad = torch.autograd.grad(compute_prompts(model, batch).sum(), [block, mlp], allow_unused=True)
    without = torch.autograd.grad(compute_prompts(model, batch, reference_grad=False).sum(), [block, mlp],
                                  allow_unused=True)
    assert with_grad[0] is not None and with_grad[0].abs().sum() > 0
    assert without[0] is None and without[1] is not None and without[1].abs().sum() > 0


def test_step_computes_prompts_once_and_simulates_clicks_in_eval_mode():
    from refcut.training.trainer import training_step

    config = tiny_config(max_extra_clicks=3)
    torch.manual_seed(0)
    model = build_model(ModelConfig.from_preset("tiny_test"))
    dataset = TrainingPairDataset(FakePairSource(reference_prob=1.0), config, 64)
    batch = torch.utils.data.default_collate([dataset[i] for i in range(2)])
    calls = {"encode": 0, "modes": [], "grad": []}
    original_encode, original_forward = model.encode_reference, model.forward

    def encode(image):
        calls["encode"] += 1
        return original_encode(image)

    def forward(image, prev, points, prompt=None):
        calls["modes"].append(model.training)
        calls["grad"].append(torch.is_grad_enabled() and prompt is not None and prompt.requires_grad)
        return original_forward(image, prev, points, prompt)

    model.encode_reference, model.forward = encode, forward
    import contextlib

    rng = np.random.default_rng(5)
    for _ in range(6):
        calls["modes"], calls["grad"] = [], []
        out = training_step(model, model, batch, config, rng, contextlib.nullcontext)
        assert calls["modes"] == [False] * out.num_extra_clicks + [True]
        assert calls["grad"] == [False] * out.num_extra_clicks + [True]
        added = (out.points[:, 2 * 4 :, 2] >= 0).sum().item()
        assert added <= 2 * out.num_extra_clicks
        if out.num_extra_clicks:
            assert added >= 1
    assert calls["encode"] == 6
    out.loss.backward()
    assert model.reference.positive_mlp.fc2.weight.grad is not None


def test_bf16_autocast_on_cpu(tmp_path):
    final = train(tiny_config(steps=1, precision="bf16"), tmp_path / "run", pair_source=FakePairSource(),
                  progress=False)
    with open(tmp_path / "run" / "log.csv", newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert np.isfinite(float(row["loss"])) and (final / "model.safetensors").is_file()


def test_init_from_native_checkpoint_with_new_input_size(tmp_path):
    from refcut.training.trainer import build_initial_model
    from refcut.weights.native import save_pretrained

    torch.manual_seed(3)
    source = build_model(ModelConfig.from_preset("tiny_test"))
    save_pretrained(source, tmp_path / "init")
    model = build_initial_model(tiny_config(**{"model.init": str(tmp_path / "init"), "model.image_size": 96}))
    assert model.config.image_size == 96
    for key, value in source.state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key
    with pytest.raises(FileNotFoundError):
        build_initial_model(tiny_config(**{"model.init": str(tmp_path / "missing")}))


def test_first_click_samples_keep_one_positive_click_and_no_simulated_clicks():
    import contextlib

    from refcut.training.trainer import training_step

    config = tiny_config(max_extra_clicks=3)
    config.data.first_click_prob = 0.5
    dataset = TrainingPairDataset(FakePairSource(reference_prob=1.0), config, 64)
    items = [dataset[i] for i in range(40)]
    flagged = [item for item in items if item["first_click"]]
    assert 8 < len(flagged) < 32
    for item in flagged:  # one positive in row 0, every other row padding
        assert item["points"][0, 2] == 1 and (item["points"][1:, 2] == -1).all()
    batch = torch.utils.data.default_collate([flagged[0], next(i for i in items if not i["first_click"])])
    torch.manual_seed(0)
    model = build_model(ModelConfig.from_preset("tiny_test"))
    seen_prev = []
    original_forward = model.forward

    def forward(image, prev, points, prompt=None):
        seen_prev.append(prev.clone())
        return original_forward(image, prev, points, prompt)

    model.forward = forward
    rng = np.random.default_rng(1)
    while True:
        seen_prev.clear()
        out = training_step(model, model, batch, config, rng, contextlib.nullcontext)
        if out.num_extra_clicks:
            break
    assert (out.points[0, 1:, 2] == -1).all()  # the first-click sample got no simulated click
    assert (out.points[1, 2 * 4 :, 2] >= 0).any()  # the other one did
    assert seen_prev[-1][0].abs().sum() == 0 and seen_prev[-1][1].abs().sum() > 0  # nor a previous mask
    with pytest.raises(ValueError, match="first_click_prob"):
        tiny_config().with_overrides(["data.first_click_prob=1.5"])


def test_click_sequence_samples_start_from_one_click_and_get_simulated_corrections():
    import contextlib

    from refcut.training.trainer import training_step

    config = tiny_config(max_extra_clicks=2)
    config.data.first_click_prob = 0.0
    config.data.click_sequence_prob = 1.0
    dataset = TrainingPairDataset(FakePairSource(reference_prob=1.0), config, 64)
    items = [dataset[i] for i in range(4)]
    for item in items:  # one positive in row 0, every other row padding, not a first-click sample
        assert not item["first_click"]
        assert item["points"][0, 2] == 1 and (item["points"][1:, 2] == -1).all()
    batch = torch.utils.data.default_collate(items)
    torch.manual_seed(0)
    model = build_model(ModelConfig.from_preset("tiny_test"))
    rng = np.random.default_rng(3)
    out = training_step(model, model, batch, config, rng, contextlib.nullcontext)
    while not out.num_extra_clicks:
        out = training_step(model, model, batch, config, rng, contextlib.nullcontext)
    first_row = 2 * config.data.max_initial_points
    assert (out.points[:, first_row, 2] >= 0).any()  # the corrections went into the simulated rows
    assert (out.points[:, 1:first_row, 2] == -1).all()  # and nowhere else
    with pytest.raises(ValueError, match="click_sequence_prob"):
        tiny_config().with_overrides(["data.click_sequence_prob=-0.1"])


def test_far_click_weight_changes_the_loss_and_is_validated():
    import contextlib

    from refcut.training.trainer import training_step

    batches = {}
    for weight in (0.0, 4.0):
        config = tiny_config(max_extra_clicks=0, far_click_weight=weight)
        dataset = TrainingPairDataset(FakePairSource(reference_prob=1.0), config, 64)
        batches[weight] = (config, torch.utils.data.default_collate([dataset[i] for i in range(2)]))
    losses = []
    for weight, (config, batch) in batches.items():
        torch.manual_seed(0)
        model = build_model(ModelConfig.from_preset("tiny_test"))
        losses.append(training_step(model, model, batch, config, np.random.default_rng(0), contextlib.nullcontext).loss)
    assert torch.isfinite(losses[1]) and not torch.isclose(losses[0], losses[1])
    with pytest.raises(ValueError, match="far_click_weight"):
        tiny_config().with_overrides(["far_click_weight=-1"])
