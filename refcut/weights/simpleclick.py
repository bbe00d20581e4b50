"""Import SimpleClick plain-ViT checkpoints (``cocolvis_vit_base.pth``, ``sbd_vit_base.pth``, ...).

A SimpleClick checkpoint is ``{'state_dict': ..., 'config': ...}`` whose ``config`` holds
pickled ``isegm`` objects (and a ``CrossEntropyLoss``). The file is read with the
tensor-only reader of :mod:`refcut.weights.checkpoint`: nothing from ``isegm`` or
anywhere else is imported or run; foreign objects become inert placeholders.

The network shape is read from the tensor shapes (embedding width, depth, patch size,
position grid, MLP width, pyramid and head widths); the head count comes from the
checkpoint's (plain) ``backbone_params`` when readable, else from the matching preset,
else ``width // 64``. The attention windows follow SimpleClick's rule: windows of
``224 / patch`` tokens a side, global attention in the last block of every group of 6
blocks (ViT-B) or ``depth / 4`` blocks (deeper models).

The tensors are mapped by name onto :class:`~refcut.model.RefCutModel`, strictly: every
model tensor outside the reference branch must be present with the same shape, and only
the documented unused keys (class token, ``fc_norm``, the classifier ``head``,
``pre_logits``, the segmentation head's ``up_conv1``/``up_conv2``) may be left over. The
reference MLPs keep their zero-output initialisation, so the imported model behaves
exactly like the SimpleClick checkpoint until it is fine-tuned.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import torch

from refcut.model import PRESETS, ModelConfig, RefCutModel, build_model
from refcut.weights.checkpoint import (
    ForeignObject,
    LoadReport,
    load_state_checked,
    read_torch_checkpoint,
    tensors_only,
)

UNUSED_KEY_PREFIXES = (
    "backbone.cls_token",
    "backbone.fc_norm.",
    "backbone.head.",
    "backbone.pre_logits.",
    "head.up_conv1.",
    "head.up_conv2.",
)
"""SimpleClick state-dict entries that exist in the checkpoints but are never used in the forward pass."""

REQUIRED_PREFIXES = ("backbone.", "patch_embed_coords.", "neck.", "head.")


def _param_value(config: Any, name: str) -> Any:
    """``config['params'][name]['value']`` of an ``isegm`` serialised config, or None."""
    if not isinstance(config, dict):
        return None
    entry = config.get("params", {}).get(name) if isinstance(config.get("params"), dict) else None
    if isinstance(entry, dict) and "value" in entry:
        return entry["value"]
    return entry


def _num_heads(dim: int, depth: int, patch: int, backbone_params: Any) -> int:
    if isinstance(backbone_params, dict) and isinstance(backbone_params.get("num_heads"), int):
        return backbone_params["num_heads"]
    for preset in PRESETS.values():
        if (preset.embed_dim, preset.depth) == (dim, depth) and preset.layer_scale_init is None:
            return preset.num_heads
    return max(1, dim // 64)


def config_from_simpleclick(
    state: dict[str, torch.Tensor], config: Any = None, image_size: int | None = None
) -> ModelConfig:
    """The :class:`ModelConfig` matching a SimpleClick state dict (shapes first, plain config values second)."""
    try:
        dim, in_chans, patch, _ = state["backbone.patch_embed.proj.weight"].shape
        pos_tokens = state["backbone.pos_embed"].shape[1] - 1
        coords_in = state["patch_embed_coords.proj.weight"].shape[1]
        hidden = state["backbone.blocks.0.mlp.fc1.weight"].shape[0]
        neck_dims = (
            state["neck.down_4.5.weight"].shape[0],
            state["neck.down_8.2.weight"].shape[0],
            state["neck.down_16.0.weight"].shape[0],
            state["neck.down_32.2.weight"].shape[0],
        )
        head_channels = state["head.convs.0.conv.weight"].shape[0]
    except KeyError as error:
        raise ValueError(f"not a SimpleClick plain-ViT state dict: missing {error}") from error
    if coords_in != 3:
        raise ValueError(
            f"patch_embed_coords takes {coords_in} channels; only models with the previous-mask channel "
            "(with_prev_mask=True, 3 channels) are supported"
        )
    depth = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"backbone\.blocks\.(\d+)\.", k)))
    grid = math.isqrt(pos_tokens)
    if grid * grid != pos_tokens:
        raise ValueError(f"backbone.pos_embed has {pos_tokens} patch positions, not a square grid")
    backbone_params = _param_value(config, "backbone_params")
    radius = _param_value(config, "norm_radius")
    if image_size is None:
        size = backbone_params.get("img_size") if isinstance(backbone_params, dict) else None
        image_size = int(size[0]) if isinstance(size, (tuple, list)) else grid * patch
    name = next(
        (n for n, p in PRESETS.items() if (p.embed_dim, p.depth, p.layer_scale_init) == (dim, depth, None)),
        "simpleclick_vit",
    )
    return ModelConfig(
        name=name,
        image_size=image_size,
        patch_size=patch,
        embed_dim=dim,
        depth=depth,
        num_heads=_num_heads(dim, depth, patch, backbone_params),
        mlp_ratio=hidden / dim,
        qkv_bias="backbone.blocks.0.attn.qkv.bias" in state,
        layer_scale_init=None,
        final_norm=False,
        window_size=224 // patch,
        global_attention_every=6 if depth == 12 else max(1, depth // 4),
        pos_embed_grid=grid,
        neck_dims=neck_dims,
        head_channels=head_channels,
        click_radius=int(radius) if isinstance(radius, (int, float)) else 5,
    )


def read_simpleclick(path: str | Path) -> tuple[dict[str, torch.Tensor], Any, set[str]]:
    """``(state_dict, config, foreign names)`` of a SimpleClick checkpoint, read without running its code."""
    checkpoint = read_torch_checkpoint(path)
    data = checkpoint.data
    if not isinstance(data, dict) or "state_dict" not in data:
        keys = sorted(data)[:8] if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{path} is not a SimpleClick checkpoint (expected a dict with 'state_dict'; got {keys})")
    state = tensors_only(data["state_dict"], f"{path} state_dict")
    config = data.get("config")
    return state, (None if isinstance(config, ForeignObject) else config), checkpoint.foreign_names


def import_simpleclick(
    path: str | Path, image_size: int | None = None, strict: bool = True
) -> tuple[RefCutModel, LoadReport]:
    """Build a RefCut model from a SimpleClick ``.pth`` checkpoint.

    ``image_size`` overrides the network input size (the position grid is then
    interpolated at run time). With ``strict`` (default), any key other than the
    documented unused ones is an error; otherwise such keys are reported and dropped.
    """
    state, config, foreign = read_simpleclick(path)
    model_config = config_from_simpleclick(state, config, image_size)
    model = build_model(model_config)
    own = model.state_dict()
    report = LoadReport(source=f"SimpleClick checkpoint {Path(path).name}")
    kept: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith(UNUSED_KEY_PREFIXES):
            report.ignored.append(key)
        elif key in own:
            kept[key] = value.float() if value.is_floating_point() else value
        else:
            report.unexpected.append(key)
    report.ignored.sort()
    report.unexpected.sort()
    if report.unexpected and strict:
        raise ValueError(
            f"{path}: {len(report.unexpected)} keys have no place in the RefCut model "
            f"(e.g. {report.unexpected[:6]}); pass strict=False (CLI: --no-strict) to drop them"
        )
    if foreign:
        report.notes.append(f"not unpickled (inert placeholders): {', '.join(sorted(foreign))}")
    load_state_checked(model, kept, report, REQUIRED_PREFIXES)
    return model.eval(), report
