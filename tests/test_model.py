"""The network: shapes, the reference prompt formula, attention schedule, key layout."""

from __future__ import annotations

import pytest
import torch

from refcut.model import ModelConfig, build_model
from refcut.model.backbone import window_partition, window_unpartition
from refcut.model.clicks import disk_maps
from refcut.model.reference import masked_average_pool


def test_forward_shapes_and_reference_features(tiny_model):
    image = torch.rand(2, 3, 64, 96)
    points = torch.tensor([[[10.0, 20.0, 1.0], [-1, -1, -1]], [[5.0, 5.0, 0.0], [30.0, 40.0, 1.0]]])
    logits = tiny_model(image, torch.zeros(2, 1, 64, 96), points)
    assert logits.shape == (2, 1, 64, 96)
    features = tiny_model.encode_reference(image)
    assert features.shape == (2, 32, 4, 6)


def test_non_multiple_of_patch_is_rejected(tiny_model):
    with pytest.raises(ValueError, match="multiple of the patch size"):
        tiny_model(torch.rand(1, 3, 63, 64), torch.zeros(1, 1, 63, 64), torch.zeros(1, 0, 3))


def test_masked_average_pool_matches_hand_computation():
    features = torch.arange(2 * 2 * 2, dtype=torch.float32).reshape(1, 2, 2, 2)  # D=2, grid 2x2
    mask = torch.tensor([[[[1.0, 0.0], [1.0, 1.0]]]])
    pooled, has = masked_average_pool(features, mask)
    # channel 0 values [[0,1],[2,3]] -> (0+2+3)/3; channel 1 [[4,5],[6,7]] -> (4+6+7)/3
    assert torch.allclose(pooled, torch.tensor([[5 / 3, 17 / 3]]))
    assert has.tolist() == [True]
    # A full-resolution mask is area-resized to the grid: a 4x4 mask covering one quadrant
    # fully and another by half weights them 1 and 0.5.
    big = torch.zeros(1, 1, 4, 4)
    big[..., :2, :2] = 1
    big[..., 2:, 2:3] = 1
    pooled, _ = masked_average_pool(features, big)
    assert torch.allclose(pooled, torch.tensor([[(0 + 0.5 * 3) / 1.5, (4 + 0.5 * 7) / 1.5]]))


def test_prompt_formula_with_set_weights(tiny_model):
    gen = tiny_model.reference
    torch.manual_seed(1)
    for mlp in (gen.positive_mlp, gen.negative_mlp):
        for layer in (mlp.fc1, mlp.fc2):
            torch.nn.init.normal_(layer.weight)
            torch.nn.init.normal_(layer.bias)
    features = torch.randn(1, 32, 4, 4)
    pos = torch.zeros(1, 1, 4, 4)
    pos[..., 1:3, 1:3] = 1
    neg = torch.zeros(1, 1, 4, 4)
    neg[..., 0, :] = 1
    expected = 0
    for mask, mlp in ((pos, gen.positive_mlp), (neg, gen.negative_mlp)):
        r = (features * mask).sum(dim=(2, 3)) / mask.sum()
        h = torch.nn.functional.gelu(r @ mlp.fc1.weight.T + mlp.fc1.bias)
        expected = expected + h @ mlp.fc2.weight.T + mlp.fc2.bias
    assert torch.allclose(tiny_model.reference_prompt(features, pos, neg), expected, atol=1e-5)
    # Empty or absent masks give exactly zero for that polarity.
    only_pos = tiny_model.reference_prompt(features, pos, torch.zeros_like(neg))
    assert torch.allclose(only_pos, tiny_model.reference_prompt(features, pos, None))
    assert torch.count_nonzero(tiny_model.reference_prompt(features, torch.zeros_like(pos), None)) == 0
    assert torch.count_nonzero(tiny_model.reference_prompt(features, None, None)) == 0


def test_fresh_reference_branch_changes_nothing(tiny_model):
    """Zero-initialised last MLP layers: fine-tuning from a no-reference checkpoint starts identical."""
    image = torch.rand(1, 3, 64, 64)
    points = torch.tensor([[[32.0, 32.0, 1.0]]])
    features = tiny_model.encode_reference(torch.rand(1, 3, 64, 64))
    prompt = tiny_model.reference_prompt(features, torch.ones(1, 1, 64, 64), torch.ones(1, 1, 64, 64))
    with torch.no_grad():
        assert torch.equal(tiny_model(image, torch.zeros(1, 1, 64, 64), points, prompt),
                           tiny_model(image, torch.zeros(1, 1, 64, 64), points, None))  # fmt: skip


def test_prompt_changes_output_once_trained(tiny_model):
    torch.nn.init.normal_(tiny_model.reference.positive_mlp.fc2.weight)
    image = torch.rand(1, 3, 64, 64)
    points = torch.tensor([[[32.0, 32.0, 1.0]]])
    features = tiny_model.encode_reference(torch.rand(1, 3, 64, 64))
    prompt = tiny_model.reference_prompt(features, torch.ones(1, 1, 64, 64))
    with torch.no_grad():
        assert not torch.allclose(tiny_model(image, torch.zeros(1, 1, 64, 64), points, prompt),
                                  tiny_model(image, torch.zeros(1, 1, 64, 64), points, None))  # fmt: skip


def test_disk_maps_radius_and_polarity():
    points = torch.tensor([[[5.0, 5.0, 1.0], [0.0, 9.0, 0.0], [-1.0, -1.0, -1.0]]])
    maps = disk_maps(points, 12, 12, radius=2)
    assert maps.shape == (1, 2, 12, 12)
    assert maps[0, 0].sum() == 13  # lattice points within distance 2 of a point
    assert maps[0, 0, 5, 7] == 1 and maps[0, 0, 5, 8] == 0 and maps[0, 0, 7, 5] == 1
    assert maps[0, 1, 0, 9] == 1 and maps[0, 1, 0, 11] == 1 and maps[0, 1, 3, 9] == 0
    assert maps[0, 1].sum() == 5 + 3 + 1  # the lower half of the disk: the top border cuts it


def test_window_partition_round_trip_with_padding():
    x = torch.randn(2, 5, 7, 3)
    windows, padded = window_partition(x, 2)
    assert windows.shape == (2 * 3 * 4, 4, 3) and padded == (6, 8)
    assert torch.equal(window_unpartition(windows, 2, padded, (5, 7)), x)


def test_simpleclick_attention_schedule():
    assert ModelConfig.from_preset("vit_base").global_blocks == (5, 11)
    assert ModelConfig.from_preset("vit_large").global_blocks == (5, 11, 17, 23)
    assert ModelConfig.from_preset("vit_huge").global_blocks == (7, 15, 23, 31)
    assert ModelConfig.from_preset("vit_small_dinov2").global_blocks == tuple(range(12))


def test_windowed_blocks_do_not_mix_windows(tiny_model):
    """Before the global block, a token only sees its own 2x2-token window."""
    backbone = tiny_model.backbone
    tokens = torch.zeros(1, 4, 4, 32)
    changed = tokens.clone()
    changed[0, 3, 3] = 5.0  # bottom-right window
    first = backbone.blocks[0]
    run = lambda t: window_unpartition(first(window_partition(t, 2)[0]), 2, (4, 4), (4, 4))  # noqa: E731
    diff = (run(changed) - run(tokens)).abs().sum(-1)[0]
    assert diff[:2, :].sum() == 0 and diff[:, :2].sum() == 0
    assert diff[2:, 2:].sum() > 0


def test_simpleclick_key_layout():
    keys = set(build_model(ModelConfig.from_preset("vit_base")).state_dict())
    for key in [
        "backbone.patch_embed.proj.weight", "backbone.pos_embed", "backbone.blocks.11.attn.qkv.weight",
        "backbone.blocks.0.mlp.fc2.bias", "patch_embed_coords.proj.weight", "neck.down_4.6.weight",
        "neck.down_32.3.bias", "head.convs.3.conv.weight", "head.fusion_conv.conv.bias", "head.conv_seg.weight",
    ]:  # fmt: skip
        assert key in keys, key
    sd = build_model(ModelConfig.from_preset("vit_base")).state_dict()
    assert sd["backbone.pos_embed"].shape == (1, 785, 768)
    assert sd["backbone.blocks.0.attn.qkv.weight"].shape == (2304, 768)


def test_config_round_trip_and_errors():
    cfg = ModelConfig.from_preset("vit_small_dinov2", image_size=224)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown model config keys"):
        ModelConfig.from_dict({**cfg.to_dict(), "bogus": 1})
    with pytest.raises(ValueError, match="multiple of patch_size"):
        ModelConfig.from_preset("vit_base", image_size=450)
    with pytest.raises(ValueError, match="unknown model preset"):
        ModelConfig.from_preset("vit_gigantic")
