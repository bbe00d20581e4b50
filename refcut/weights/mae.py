"""MAE ImageNet ViT weights (e.g. ``mae_pretrain_vit_base.pth``) -> RefCut backbone.

An MAE encoder file is ``{'model': {cls_token, pos_embed (1 x 197 x D), patch_embed.proj.*,
blocks.N.*, norm.*}}`` (fine-tuned files add ``fc_norm.*``/``head.*``; full pre-training
files add the ``decoder_*`` part and ``mask_token``). As in SimpleClick's
``init_weights_from_pretrained``, only the backbone is taken: the position grid is resized
bicubically to the model's ``pos_embed_grid`` (class slot kept), ``norm.*`` is used only
by models with a final norm, and everything else is dropped. The file is read with the
tensor-only reader (no code from the file runs).
"""

from __future__ import annotations

from pathlib import Path

import torch

from refcut.model import RefCutModel
from refcut.weights.checkpoint import (
    LoadReport,
    load_state_checked,
    read_torch_checkpoint,
    resize_pos_embed,
    tensors_only,
)

_UNUSED = ("cls_token", "mask_token", "fc_norm.", "head.", "pre_logits.", "decoder_", "dist_token")


def read_mae(path: str | Path) -> dict[str, torch.Tensor]:
    """The encoder state dict of an MAE checkpoint (``{'model': ...}``, ``{'state_dict': ...}`` or flat)."""
    data = read_torch_checkpoint(path).data
    if isinstance(data, dict):
        for key in ("model", "state_dict"):
            if isinstance(data.get(key), dict):
                data = data[key]
                break
    state = tensors_only(data, f"{path} weights")
    if "patch_embed.proj.weight" not in state or "pos_embed" not in state:
        raise ValueError(f"{path} is not an MAE/timm ViT checkpoint (no patch_embed.proj.weight / pos_embed)")
    return state


def init_from_mae(model: RefCutModel, path: str | Path) -> LoadReport:
    """Load MAE ViT weights into ``model.backbone``; every backbone tensor must be covered."""
    state = read_mae(path)
    report = LoadReport(source=f"MAE ViT {Path(path).name}")
    grid = model.config.pos_embed_grid
    mapped: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        value = value.float()
        if key.startswith(_UNUSED) or (key.startswith("norm.") and not model.config.final_norm):
            report.ignored.append(key)
        elif key == "pos_embed":
            source_grid = round((value.shape[1] - 1) ** 0.5)
            if source_grid != grid:
                value = resize_pos_embed(value, grid)
                report.notes.append(
                    f"position embedding resized bicubically from {source_grid}x{source_grid} to {grid}x{grid}"
                )
            mapped["backbone.pos_embed"] = value
        else:
            mapped["backbone." + key] = value
    report.ignored.sort()
    return load_state_checked(model, mapped, report, required_prefixes=("backbone.",))


def import_mae(path: str | Path) -> dict[str, torch.Tensor]:
    """MAE encoder tensors renamed to RefCut's ``backbone.*`` keys (position grid not resized)."""
    return {"backbone." + k: v.float() for k, v in read_mae(path).items() if not k.startswith(_UNUSED)}
