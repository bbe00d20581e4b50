"""Model configuration: one dataclass, named presets, JSON round trip."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any


class DictConfig:
    """JSON round trip for frozen dataclass configs: unknown keys are an error, JSON lists become tuples."""

    config_kind = "config"
    """Named in the unknown-keys error."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        unknown = set(data) - {f.name for f in fields(cls)}  # type: ignore[arg-type]
        if unknown:
            raise ValueError(f"unknown {cls.config_kind} keys: {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


@dataclass(frozen=True)
class ModelConfig(DictConfig):
    """Everything needed to rebuild a RefCut network (saved as ``config.json`` beside the weights).

    ``window_size`` is the attention window in tokens (``None``: every block is
    global). With windows, the last block of every group of
    ``global_attention_every`` blocks attends globally (SimpleClick's schedule).
    ``pos_embed_grid`` is the grid of the stored position embedding (which keeps
    a class-token slot first, as in SimpleClick and DINOv2 checkpoints); it is
    interpolated to the input grid at run time.
    """

    name: str = "vit_base"
    image_size: int = 448
    patch_size: int = 16
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    layer_scale_init: float | None = None
    final_norm: bool = False
    window_size: int | None = 14
    global_attention_every: int = 6
    pos_embed_grid: int = 28
    neck_dims: tuple[int, int, int, int] = (128, 256, 512, 1024)
    head_channels: int = 256
    head_dropout: float = 0.1
    click_radius: int = 5
    prompt_hidden_dim: int | None = None
    image_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    image_std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    config_kind = "model config"

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")

    @property
    def grid_size(self) -> int:
        """Tokens per side at ``image_size``."""
        return self.image_size // self.patch_size

    @property
    def global_blocks(self) -> tuple[int, ...]:
        """0-based indices of blocks with global attention."""
        if self.window_size is None:
            return tuple(range(self.depth))
        every = self.global_attention_every
        return tuple(i for i in range(self.depth) if (i + 1) % every == 0)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "ModelConfig":
        """A named configuration (see :data:`PRESETS`), optionally with fields overridden."""
        if name not in PRESETS:
            raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
        return replace(PRESETS[name], **overrides)


def _simpleclick_vit(
    name: str, dim: int, depth: int, heads: int, neck: tuple[int, int, int, int], patch: int = 16
) -> ModelConfig:
    # SimpleClick's plainvit_*448 experiments: windows of 224 px (224 / patch tokens a side);
    # groups of 6 blocks for ViT-B's 12, depth // 4 for deeper models, the last of each global.
    every = 6 if depth == 12 else depth // 4
    return ModelConfig(
        name=name, patch_size=patch, embed_dim=dim, depth=depth, num_heads=heads, window_size=224 // patch,
        global_attention_every=every, pos_embed_grid=448 // patch, neck_dims=neck,
    )  # fmt: skip


PRESETS: dict[str, ModelConfig] = {
    "vit_base": _simpleclick_vit("vit_base", 768, 12, 12, (128, 256, 512, 1024)),
    "vit_large": _simpleclick_vit("vit_large", 1024, 24, 16, (192, 384, 768, 1536)),
    # SimpleClick's ViT-H uses 14-px patches (its MAE-H weights do).
    "vit_huge": _simpleclick_vit("vit_huge", 1280, 32, 16, (240, 480, 960, 1920), patch=14),
    "vit_small_dinov2": ModelConfig(
        name="vit_small_dinov2",
        image_size=448,
        patch_size=14,
        embed_dim=384,
        depth=12,
        num_heads=6,
        layer_scale_init=1.0,
        final_norm=True,
        window_size=None,
        pos_embed_grid=37,
        neck_dims=(64, 128, 256, 384),
        head_channels=128,
    ),
    "tiny_test": ModelConfig(
        name="tiny_test",
        image_size=64,
        patch_size=16,
        embed_dim=32,
        depth=2,
        num_heads=2,
        window_size=2,
        global_attention_every=2,
        pos_embed_grid=4,
        neck_dims=(8, 16, 16, 16),
        head_channels=8,
        click_radius=3,
    ),
}
