"""The per-click decoder of the encode-once family, designed for CPU cost.

It works on one *view* (the whole image or a zoom-in crop, resized to ``S x S``) whose frozen
encoder features (``D x g x g``, ``g = S / 14``) were computed once. The decoder splits in two:

- :meth:`ClickDecoder.encode_view` (once per view, no clicks): projects the ViT features to the
  decoder width and normalises them for affinities. The view's frozen edge features
  (EfficientNet-Lite0 at strides 4 and 8, :mod:`refcut.model.edge_encoder`) give the upsampler
  image detail finer than the 14-px token grid.
- :meth:`ClickDecoder.decode` (every click): dense click signals at every level (disks and the
  previous probability, resized), the cosine affinity of every token to the clicked tokens'
  features (max over positive / negative clicks) and to the reference's pooled features, and
  the reference prompt added to every token; dilated depthwise-separable blocks at the token
  grid and at half of it (a small U: the receptive field covers the view without global
  attention, which costs ~4x more on CPU), then an upsampler (token grid -> S/8 -> S/4) fusing
  the click-conditioned edge features, logits at ``S/4`` upsampled bilinearly to ``S``. (A
  stride-2 level cost ~40% of the decoder on CPU, memory-bound element-wise work, for cells
  already 3.5x finer than the tokens; the predictor's boundary step can refine further.)

CPU notes that shaped it (PyTorch 2.13, 1 thread): a dilated 7x7 depthwise convolution's
backward pass at 24x24x96 costs ~7 ms per sample, a 3x3 one ~0.8 ms; one attention block over
576 tokens at width 96 ~26 ms per sample (forward + backward).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from refcut.model.clicks import compact_points, disk_maps
from refcut.model.config import DictConfig
from refcut.model.layers import Block


@dataclass(frozen=True)
class DecoderConfig(DictConfig):
    """Widths and depths of :class:`ClickDecoder`.

    ``edge_channels`` are the frozen edge features' channels at strides 4 and 8 of the view;
    ``up_channels`` the upsampler's at strides 8 and 4. ``depth`` blocks run at the token grid,
    ``low_depth`` more at half its resolution. ``click_radius`` is the disk radius in view
    pixels. ``click_affinity`` / ``reference_affinity`` switch the cosine-affinity maps (ablations).
    ``reference_nearest`` adds, per token, the best cosine to any of up to ``reference_exemplars``
    tokens under each reference mask (a few-shot "prior": sharper than the pooled prototype when
    the masked region holds several looks, e.g. a combination of parts).
    ``reference_attention`` (needs ``reference_nearest``'s exemplars) lets every token attend to
    those exemplars and a learned "no match" slot with a learned metric
    (:class:`ReferenceAttention`, ``reference_attention_heads`` heads); its output is added to the
    tokens. Zero-initialised, so a decoder warm-started without it computes what it did.
    ``reference_metric`` (needs the exemplars too) adds one more map: per token, the log-odds that
    it is wanted, from its best cosines to the positive / negative exemplars in a learned
    embedding of the frozen features (:class:`ReferenceMetric`, ``reference_metric_dim`` wide),
    trained directly by the trainer's ``metric_loss_weight`` term as well as through the decoder;
    its input weights start at zero (log-odds, not cosines: a map of ~10x the cosines' range
    moves further per optimiser step).
    ``reference_ridge`` (needs the exemplars' masks too) adds one parameter-free map: a ridge
    regression (``reference_ridge_lambda``) fitted per reference from its own tokens (unit features
    plus a constant) to their coverage by the positive mask, applied to the view's tokens
    (:func:`fit_reference_ridge`, :func:`ridge_map`): a one-shot linear probe that uses the
    reference's other tokens as negatives, where the exemplar maps only look for the nearest match.
    ``global_depth`` pre-norm transformer blocks (``global_heads`` heads, self-attention over all
    positions) run after the half-resolution blocks (they need ``low_depth`` >= 1), so a token's
    decision can depend on every other region (the convolutions see ~12 tokens around it); their
    layer scales start at zero, so a decoder warm-started without them computes what it did.
    ``click_colour`` adds two click maps at every level: how close each stride-4 cell's CIELAB colour
    is to the clicked cells' (:func:`colour_affinity`, width ``click_colour_sigma``), max over the
    positive / negative clicks, so a click can reach distant regions of its colour; the view's
    pixels must then be passed to :meth:`ClickDecoder.encode_view`.
    """

    config_kind = "decoder config"

    width: int = 96
    depth: int = 2
    low_depth: int = 2
    kernel_size: int = 3
    mlp_ratio: float = 2.0
    edge_channels: tuple[int, int] = (24, 40)
    up_channels: tuple[int, int] = (64, 32)
    click_radius: int = 5
    prompt_hidden_dim: int = 256
    click_affinity: bool = True
    reference_affinity: bool = True
    reference_nearest: bool = False
    reference_exemplars: int = 64
    reference_attention: bool = False
    reference_attention_heads: int = 4
    reference_metric: bool = False
    reference_metric_dim: int = 128
    reference_ridge: bool = False
    reference_ridge_lambda: float = 10.0
    global_depth: int = 0
    global_heads: int = 4
    click_colour: bool = False
    click_colour_sigma: float = 12.0

    def __post_init__(self) -> None:
        if self.click_colour_sigma <= 0:
            raise ValueError(f"decoder click_colour_sigma must be positive, got {self.click_colour_sigma}")
        if self.reference_ridge and not self.reference_nearest:
            raise ValueError("decoder reference_ridge needs reference_nearest (it reads the positive exemplars' mask)")
        if self.reference_ridge_lambda <= 0:
            raise ValueError(f"decoder reference_ridge_lambda must be positive, got {self.reference_ridge_lambda}")
        if self.reference_metric and not self.reference_nearest:
            raise ValueError("decoder reference_metric needs reference_nearest (it compares with the exemplars)")
        if self.reference_attention and not self.reference_nearest:
            raise ValueError("decoder reference_attention needs reference_nearest (it attends to the exemplars)")
        if self.global_depth < 0 or (self.global_depth and self.width % self.global_heads):
            raise ValueError(f"decoder global_depth must be >= 0 and width {self.width} a multiple of global_heads "
                             f"{self.global_heads}, got {self.global_depth} / {self.global_heads}")
        if self.global_depth and not self.low_depth:
            raise ValueError("decoder global_depth needs low_depth >= 1 (the global blocks run at half resolution)")
        if self.reference_attention and self.width % self.reference_attention_heads:
            raise ValueError(f"decoder width {self.width} must be a multiple of reference_attention_heads "
                             f"{self.reference_attention_heads}")


class ViewFeatures(NamedTuple):
    """The frozen encoders' output for one view (what the cache stores)."""

    tokens: torch.Tensor
    """``B x D x g x g`` ViT patch features."""
    edges4: torch.Tensor
    """``B x 24 x S/4 x S/4`` edge features at stride 4."""
    edges8: torch.Tensor
    """``B x 40 x S/8 x S/8`` edge features at stride 8."""

    def to(self, *args, **kwargs) -> "ViewFeatures":
        """Every tensor moved/cast like ``Tensor.to``."""
        return ViewFeatures(*(t.to(*args, **kwargs) for t in self))


class ViewEncoding(NamedTuple):
    """What :meth:`ClickDecoder.encode_view` computes once per view."""

    tokens: torch.Tensor
    """``B x C x g x g`` projected encoder features."""
    unit_features: torch.Tensor
    """``B x D x g x g`` L2-normalised encoder features (for affinities)."""
    edge_tokens: torch.Tensor
    """``B x C x g x g`` the stride-8 edge features' contribution to the tokens."""
    laterals: tuple[torch.Tensor, torch.Tensor]
    """The upsampler's lateral terms from the edge features, at strides 8 and 4 of the view."""
    size: int
    """The view's side ``S`` in pixels."""
    colour: torch.Tensor | None = None
    """``B x 3 x S/4 x S/4`` the view's CIELAB colour (``click_colour`` only)."""


class ReferenceEncoding(NamedTuple):
    """The reference as the decoder sees it: the prompt plus the pooled (unit) prototypes."""

    prompt: torch.Tensor
    """``B x C`` (``P_r+ + P_r-``), added to every decoder token."""
    positive: torch.Tensor
    """``B x D`` unit-norm pooled features under the positive mask (zeros when absent)."""
    negative: torch.Tensor
    """``B x D`` the same under the negative mask."""
    exemplars: torch.Tensor | None = None
    """``B x 2 x K x D`` unit features of up to K reference tokens under the positive / negative mask."""
    exemplar_valid: torch.Tensor | None = None
    """``B x 2 x K`` bool: which exemplar rows hold a token (none for an absent or empty mask)."""
    ridge: torch.Tensor | None = None
    """``B x (D + 1)`` the reference's ridge regression weights (:func:`fit_reference_ridge`; zeros without
    a positive mask)."""

    def detach(self) -> "ReferenceEncoding":
        """A copy cut from the autograd graph."""
        return ReferenceEncoding(*(None if t is None else t.detach() for t in self))


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a ``B x C x H x W`` map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class SeparableBlock(nn.Module):
    """ConvNeXt-style residual block: depthwise ``k x k`` -> LayerNorm -> pointwise MLP."""

    def __init__(self, dim: int, kernel_size: int = 3, mlp_ratio: float = 2.0) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = LayerNorm2d(dim, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.pw1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.GELU()
        self.pw2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pw2(self.act(self.pw1(self.norm(self.dwconv(x)))))


class SplitPointwise(nn.Conv2d):
    """A 1x1 convolution over ``[features, click maps]`` whose feature part can run once per view.

    ``conv(cat([f, c])) == features_term(f) + clicks_term(c)`` (the bias sits in the first term),
    so the click-independent term is computed in :meth:`ClickDecoder.encode_view`.
    """

    def __init__(self, feature_channels: int, click_channels: int, out_channels: int) -> None:
        super().__init__(feature_channels + click_channels, out_channels, 1)
        self.feature_channels = feature_channels

    def features_term(self, features: torch.Tensor) -> torch.Tensor:
        return F.conv2d(features, self.weight[:, : self.feature_channels], self.bias)

    def clicks_term(self, click_maps: torch.Tensor) -> torch.Tensor:
        return F.conv2d(click_maps, self.weight[:, self.feature_channels :])


class UpStep(nn.Module):
    """Upsample to a stem level, add the click-conditioned stem feature, mix locally (3x3 depthwise + pointwise)."""

    def __init__(self, in_channels: int, stem_channels: int, out_channels: int, click_channels: int = 3) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(in_channels, out_channels, 1)
        self.lateral = SplitPointwise(stem_channels, click_channels, out_channels)
        self.dwconv = nn.Conv2d(out_channels, out_channels, 3, padding=1, groups=out_channels)
        self.pw = nn.Conv2d(out_channels, out_channels, 1)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor, stem_term: torch.Tensor, click_maps: torch.Tensor) -> torch.Tensor:
        """``stem_term`` = ``self.lateral.features_term(stem)``, computed once per view."""
        x = F.interpolate(self.reduce(x), size=stem_term.shape[-2:], mode="bilinear", align_corners=False)
        x = self.act(x + stem_term + self.lateral.clicks_term(click_maps))
        return x + self.pw(self.act(self.dwconv(x)))


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` in NHWC memory order (oneDNN's convolutions are up to 2x faster on CPU in that layout)."""
    return x.contiguous(memory_format=torch.channels_last)


def resize_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Area-resize dense maps (disks, probabilities) to a coarser grid."""
    if maps.shape[-2:] == size:
        return maps
    return F.adaptive_avg_pool2d(maps, size)


def rgb_to_lab(image: torch.Tensor) -> torch.Tensor:
    """``B x 3 x H x W`` sRGB in [0, 1] -> CIELAB (D65; L in [0, 100])."""
    linear = torch.where(image > 0.04045, ((image + 0.055) / 1.055) ** 2.4, image / 12.92)
    matrix = image.new_tensor([[0.4124 / 0.95047, 0.3576 / 0.95047, 0.1805 / 0.95047],
                               [0.2126, 0.7152, 0.0722],
                               [0.0193 / 1.08883, 0.1192 / 1.08883, 0.9505 / 1.08883]])
    xyz = torch.einsum("ij,bjhw->bihw", matrix, linear)
    f = torch.where(xyz > (6 / 29) ** 3, xyz.clamp_min(1e-12) ** (1 / 3), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return torch.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], dim=1)


def colour_affinity(colour: torch.Tensor, points: torch.Tensor, sigma: float) -> torch.Tensor:
    """``B x 2 x h x w``: how close each cell's colour is to the clicked cells' (``exp(-d^2 / 2 sigma^2)`` in
    CIELAB), max over positive / negative clicks; zero without a click of that label.

    ``colour`` ``B x 3 x h x w``; ``points`` ``B x N x 3`` ``(y, x, label)`` in cells of that grid (-1: padding).
    """
    b, _, h, w = colour.shape
    y = points[..., 0].round().long().clamp(0, h - 1)
    x = points[..., 1].round().long().clamp(0, w - 1)
    clicked = torch.gather(colour.flatten(2), 2, (y * w + x)[:, None].expand(-1, 3, -1))  # B x 3 x N
    distance = (colour[:, None] - clicked.transpose(1, 2)[..., None, None]).pow(2).sum(2)  # B x N x h x w
    similarity = torch.exp(-distance / (2 * sigma**2))  # >= 0: a masked-out click contributes 0 to the max
    if points.shape[1] == 0:
        return colour.new_zeros(b, 2, h, w)
    label = points[..., 2]
    return torch.stack([(similarity * (label == wanted)[..., None, None]).amax(1) for wanted in (1, 0)], dim=1)


def click_affinity(unit_features: torch.Tensor, points: torch.Tensor, view_size: int) -> torch.Tensor:
    """``B x 2 x g x g``: per token, the max cosine to the features under the positive / negative clicks.

    ``points`` are ``B x N x 3`` rows ``(y, x, label)`` in view pixels (label -1: padding). A
    polarity without clicks gives zeros.
    """
    b, _, gh, gw = unit_features.shape
    if points.shape[1] == 0:
        return unit_features.new_zeros(b, 2, gh, gw)
    # grid_sample coordinates in [-1, 1] (align_corners=False: pixel edges at +-1).
    grid = torch.stack([points[..., 1], points[..., 0]], dim=-1) * (2.0 / view_size) - 1.0 + 1.0 / view_size
    sampled = F.grid_sample(unit_features, grid[:, :, None, :].to(unit_features.dtype), mode="bilinear",
                            align_corners=False)[..., 0]  # B x D x N
    sampled = F.normalize(sampled, dim=1)
    cosine = torch.einsum("bdn,bdhw->bnhw", sampled, unit_features)  # B x N x g x g
    label = points[..., 2].view(b, -1, 1, 1)
    maps = []
    for polarity in (1, 0):
        valid = label == polarity
        best = torch.where(valid, cosine, torch.full_like(cosine, -2.0)).amax(dim=1, keepdim=True)
        maps.append(torch.where(valid.any(dim=1, keepdim=True), best, torch.zeros_like(best)))
    return torch.cat(maps, dim=1)


def select_exemplars(
    unit_features: torch.Tensor, mask: torch.Tensor | None, count: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to ``count`` tokens of ``unit_features`` (``B x D x g x g``) covered by ``mask`` (``B x 1 x H x W``).

    A token is eligible when its area-resized mask weight is at least half the sample's largest
    (so a non-empty mask always gives one); among more than ``count`` eligible tokens a fixed
    pseudo-random subset is kept, spread over the region. Returns ``(B x K x D, B x K bool)``.
    """
    b, d, gh, gw = unit_features.shape
    k = min(count, gh * gw)
    if mask is None:
        return unit_features.new_zeros(b, k, d), torch.zeros(b, k, dtype=torch.bool, device=unit_features.device)
    weights = F.interpolate(mask.to(unit_features.dtype), size=(gh, gw), mode="area").flatten(1)  # B x M
    eligible = (weights > 0) & (weights >= 0.5 * weights.amax(dim=1, keepdim=True))
    spread = torch.randperm(gh * gw, generator=torch.Generator().manual_seed(0)).to(weights) / (gh * gw)
    index = torch.topk(eligible.to(weights.dtype) * (1.0 + spread), k, dim=1).indices  # B x K
    valid = eligible.gather(1, index)
    tokens = unit_features.flatten(2).transpose(1, 2).gather(1, index[..., None].expand(-1, -1, d))
    return tokens * valid[..., None].to(tokens.dtype), valid


def nearest_exemplar_affinity(unit_features: torch.Tensor, reference: ReferenceEncoding) -> torch.Tensor:
    """``B x 2 x g x g``: per token, the max cosine to the positive / negative exemplars (0 where none)."""
    b, _, gh, gw = unit_features.shape
    exemplars = reference.exemplars.to(unit_features.dtype)
    cosine = torch.einsum("bpkd,bdn->bpkn", exemplars, unit_features.flatten(2))  # B x 2 x K x g*g
    return best_over_exemplars(cosine, reference.exemplar_valid).view(b, 2, gh, gw)


def best_over_exemplars(cosine: torch.Tensor, exemplar_valid: torch.Tensor) -> torch.Tensor:
    """``B x 2 x N``: the best of ``cosine`` (``B x 2 x K x N``) over the valid exemplar rows, 0 where a
    polarity has none."""
    valid = exemplar_valid[..., None]
    best = torch.where(valid, cosine, torch.full_like(cosine, -2.0)).amax(dim=2)
    return torch.where(valid.any(dim=2), best, torch.zeros_like(best))


RIDGE_GAIN = 8.0
"""The ridge map is ``RIDGE_GAIN * (score - 1/2)``: about the range of a log-odds, so that a change of its
(zero-initialised) input weights counts more (in session 16's 1,200-step fine-tune still not enough)."""


def fit_reference_ridge(unit_features: torch.Tensor, mask: torch.Tensor | None, lam: float) -> torch.Tensor:
    """``B x (D + 1)``: per sample, ridge weights from ``[token, 1]`` to the token's coverage by ``mask``.

    ``unit_features`` ``B x D x g x g``, ``mask`` ``B x 1 x H x W`` (area-resized to the grid).
    Solved in float32 in closed form, ``(X^T X + lam I)^-1 X^T y``, by Cholesky (the system is
    positive definite; batched ``torch.linalg.solve`` fails inside oneMKL on CPU at this size); a
    sample with an empty (or absent) mask gets zeros.
    """
    b, d, gh, gw = unit_features.shape
    if mask is None:
        return unit_features.new_zeros(b, d + 1, dtype=torch.float32)
    with torch.autocast(unit_features.device.type, enabled=False):  # a solve wants float32 throughout
        tokens = unit_features.float().flatten(2).transpose(1, 2)  # B x N x D
        x = torch.cat([tokens, tokens.new_ones(b, gh * gw, 1)], dim=2)
        y = F.interpolate(mask.float(), size=(gh, gw), mode="area").flatten(1)  # B x N
        gram = x.transpose(1, 2) @ x + lam * torch.eye(d + 1, dtype=x.dtype, device=x.device)
        weights = torch.cholesky_solve(x.transpose(1, 2) @ y[..., None], torch.linalg.cholesky(gram))[..., 0]
        return torch.where(y.amax(dim=1, keepdim=True) > 0, weights, torch.zeros_like(weights))


def ridge_map(unit_features: torch.Tensor, reference: ReferenceEncoding) -> torch.Tensor:
    """``B x 1 x g x g``: ``RIDGE_GAIN * (score - 1/2)`` of the reference's ridge on the view's tokens, 0
    where the reference has no positive exemplar."""
    weights = reference.ridge.to(unit_features.dtype)
    score = torch.einsum("bdhw,bd->bhw", unit_features, weights[:, :-1]) + weights[:, -1, None, None]
    has_positive = reference.exemplar_valid[:, 0].any(dim=1).view(-1, 1, 1)
    mapped = RIDGE_GAIN * (score.clamp(-0.5, 1.5) - 0.5)
    return torch.where(has_positive, mapped, torch.zeros_like(mapped))[:, None]


class ReferenceAttention(nn.Module):
    """Every view token attends to the reference's exemplar tokens and one learned "no match" slot.

    A soft nearest-neighbour lookup with a learned metric: queries from the view's unit features,
    keys and values from the exemplars' plus a learned embedding of their polarity (positive /
    negative mask), multi-head. The output projection starts at zero. Returns ``B x C x g x g``;
    without a reference (or without any exemplar) every token gets the "no match" slot's value.
    """

    def __init__(self, feature_dim: int, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = feature_dim ** 0.5  # unit features -> about unit variance per channel
        self.query = nn.Linear(feature_dim, width)
        self.key = nn.Linear(feature_dim, width)
        self.value = nn.Linear(feature_dim, width)
        self.polarity_key = nn.Parameter(torch.randn(2, width) * 0.02)
        self.polarity_value = nn.Parameter(torch.randn(2, width) * 0.02)
        self.null_key = nn.Parameter(torch.randn(width) * 0.02)
        self.null_value = nn.Parameter(torch.zeros(width))
        self.out = nn.Linear(width, width)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def empty(self, like: torch.Tensor) -> torch.Tensor:
        """``B x C x g x g`` output without a reference, shaped after ``like`` (``B x * x g x g``)."""
        b, _, gh, gw = like.shape
        return self.out(self.null_value.to(like.dtype))[None, :, None, None].expand(b, -1, gh, gw)

    def forward(self, unit_features: torch.Tensor, reference: ReferenceEncoding | None) -> torch.Tensor:
        if reference is None or reference.exemplars is None:
            return self.empty(unit_features)
        b, _, gh, gw = unit_features.shape
        dtype = unit_features.dtype
        width, heads = self.out.in_features, self.heads
        exemplars = reference.exemplars.to(dtype) * self.scale  # B x 2 x K x D
        k = exemplars.shape[2]
        keys = (self.key(exemplars) + self.polarity_key.to(dtype)[None, :, None]).flatten(1, 2)  # B x 2K x C
        values = (self.value(exemplars) + self.polarity_value.to(dtype)[None, :, None]).flatten(1, 2)
        keys = torch.cat([self.null_key.to(dtype).expand(b, 1, width), keys], dim=1)
        values = torch.cat([self.null_value.to(dtype).expand(b, 1, width), values], dim=1)
        valid = torch.cat([reference.exemplar_valid.new_ones(b, 1), reference.exemplar_valid.reshape(b, 2 * k)], dim=1)
        queries = self.query(unit_features.flatten(2).transpose(1, 2) * self.scale)  # B x N x C
        split = lambda t: t.view(b, t.shape[1], heads, width // heads).transpose(1, 2)  # noqa: E731
        mixed = F.scaled_dot_product_attention(split(queries), split(keys), split(values),
                                               attn_mask=valid[:, None, None, :])  # B x h x N x C/h
        mixed = self.out(mixed.transpose(1, 2).reshape(b, gh * gw, width))
        return mixed.transpose(1, 2).reshape(b, width, gh, gw)


class ReferenceMetric(nn.Module):
    """A learned embedding of the frozen features in which the reference's parts are told apart.

    :meth:`maps` gives per view token the best cosine to the positive / negative exemplars after
    a 2-layer MLP and L2 normalisation (zeros where a polarity has no exemplar); :meth:`logits`
    turns those maps into a per-token "wanted" logit for the direct (auxiliary) loss.
    """

    def __init__(self, feature_dim: int, dim: int) -> None:
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(feature_dim, feature_dim), nn.GELU(), nn.Linear(feature_dim, dim))
        self.scale = nn.Parameter(torch.tensor(10.0))
        self.bias = nn.Parameter(torch.zeros(()))
        self.no_negative = nn.Parameter(torch.zeros(()))

    def _unit(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.embed(features), dim=-1)

    def maps(self, unit_features: torch.Tensor, reference: ReferenceEncoding | None) -> torch.Tensor:
        """``B x 2 x g x g`` best learned-space cosine to the positive / negative exemplars."""
        b, _, gh, gw = unit_features.shape
        if reference is None or reference.exemplars is None:
            return unit_features.new_zeros(b, 2, gh, gw)
        tokens = self._unit(unit_features.flatten(2).transpose(1, 2))  # B x N x E
        exemplars = self._unit(reference.exemplars.to(tokens.dtype))  # B x 2 x K x E
        cosine = torch.einsum("bpke,bne->bpkn", exemplars, tokens)
        return best_over_exemplars(cosine, reference.exemplar_valid).view(b, 2, gh, gw)

    def logits(self, maps: torch.Tensor, reference: ReferenceEncoding) -> torch.Tensor:
        """``B x 1 x g x g``: ``scale * (positive - negative) + bias`` (a learned constant for a missing negative)."""
        has_negative = reference.exemplar_valid[:, 1].any(dim=1).view(-1, 1, 1, 1)
        negative = torch.where(has_negative, maps[:, 1:], self.no_negative.to(maps.dtype))
        return self.scale * (maps[:, :1] - negative) + self.bias

    def decoder_map(self, maps: torch.Tensor, reference: ReferenceEncoding | None) -> torch.Tensor:
        """``B x 1 x g x g``: the decoder's input, :meth:`logits` where there are positive exemplars, else 0."""
        if reference is None or reference.exemplars is None:
            return maps.new_zeros(maps.shape[0], 1, *maps.shape[-2:])
        has_positive = reference.exemplar_valid[:, 0].any(dim=1).view(-1, 1, 1, 1)
        return torch.where(has_positive, self.logits(maps, reference), torch.zeros_like(maps[:, :1]))


class ClickDecoder(nn.Module):
    """Clicks + previous mask + reference + cached view -> logits ``B x 1 x S x S`` (see the module doc)."""

    NUM_TOKEN_MAPS = 7
    """prev, click affinity +/-, reference affinity +/-, positive / negative disk coverage
    (+ nearest-exemplar affinity +/- with ``reference_nearest``, + the reference's ridge map with
    ``reference_ridge``, + the learned metric's log-odds with ``reference_metric``)."""

    def __init__(self, feature_dim: int, config: DecoderConfig) -> None:
        super().__init__()
        self.config = config
        c = config.width
        e4, e8 = config.edge_channels
        u8, u4 = config.up_channels
        self.proj = nn.Sequential(nn.Conv2d(feature_dim, c, 1), LayerNorm2d(c, eps=1e-6))
        colour = 2 if config.click_colour else 0
        num_maps = self.NUM_TOKEN_MAPS + (2 if config.reference_nearest else 0) + (1 if config.reference_metric else 0) \
            + (1 if config.reference_ridge else 0) + colour
        self.token_maps = nn.Sequential(nn.Conv2d(num_maps, c, 1), nn.GELU(), nn.Conv2d(c, c, 1))
        self.edges_to_tokens = SplitPointwise(e8, 3 + colour, c)
        self.reference_attention = ReferenceAttention(feature_dim, c, config.reference_attention_heads) \
            if config.reference_attention else None
        self.reference_metric = ReferenceMetric(feature_dim, config.reference_metric_dim) \
            if config.reference_metric else None
        self.blocks = nn.ModuleList(SeparableBlock(c, config.kernel_size, config.mlp_ratio) for _ in range(config.depth))
        self.low_blocks = nn.ModuleList(
            SeparableBlock(c, config.kernel_size, config.mlp_ratio) for _ in range(config.low_depth)
        )
        self.global_blocks = nn.ModuleList(
            Block(c, config.global_heads, config.mlp_ratio, layer_scale_init=0.0) for _ in range(config.global_depth)
        )
        self.up8 = UpStep(c, e8, u8, 3 + colour)
        self.up4 = UpStep(u8, e4, u4, 3 + colour)
        self.logits = nn.Conv2d(u4, 1, 1)

    def encode_view(self, features: ViewFeatures, size: int, image: torch.Tensor | None = None) -> ViewEncoding:
        """The click-independent part, once per view of side ``size`` px (``image``: the view's
        ``B x 3 x S x S`` pixels in [0, 1], needed with ``click_colour``)."""
        tokens, edges4, edges8 = (channels_last(t.float()) for t in features)
        # A 1x1 convolution commutes with area pooling: pool the 40 input channels, not the C outputs.
        edge_tokens = self.edges_to_tokens.features_term(resize_maps(edges8, tuple(tokens.shape[-2:])))
        laterals = (self.up8.lateral.features_term(edges8), self.up4.lateral.features_term(edges4))
        colour = None
        if self.config.click_colour:
            if image is None:
                raise ValueError("a decoder with click_colour needs the view's pixels: encode_view(features, image)")
            colour = rgb_to_lab(F.interpolate(image.float(), size=tuple(edges4.shape[-2:]), mode="area"))
        return ViewEncoding(self.proj(tokens), F.normalize(tokens, dim=1), edge_tokens, laterals, size, colour)

    def reference_maps(self, unit_features: torch.Tensor, reference: ReferenceEncoding | None) -> torch.Tensor:
        """``B x 2 x g x g`` (``B x 4`` with ``reference_nearest``, ``B x 5`` with ``reference_ridge`` too): the
        tokens' cosine to the reference's pooled positive / negative features, then to their nearest
        exemplars, then the reference's ridge map; zeros where switched off or without a reference.
        Parameter-free and click-independent: computed once per view and reference."""
        cfg = self.config
        b, _, gh, gw = unit_features.shape
        zeros2 = unit_features.new_zeros(b, 2, gh, gw)
        pooled = zeros2
        if reference is not None and cfg.reference_affinity:
            pooled = torch.stack([torch.einsum("bdhw,bd->bhw", unit_features, proto.to(unit_features.dtype))
                                  for proto in (reference.positive, reference.negative)], dim=1)
        if not cfg.reference_nearest:
            return pooled
        has_exemplars = reference is not None and reference.exemplars is not None
        nearest = nearest_exemplar_affinity(unit_features, reference) if has_exemplars else zeros2
        if not cfg.reference_ridge:
            return torch.cat([pooled, nearest], dim=1)
        ridge = ridge_map(unit_features, reference) if has_exemplars and reference.ridge is not None else zeros2[:, :1]
        return torch.cat([pooled, nearest, ridge], dim=1)

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
        """Logits ``B x 1 x S x S``; ``prev_mask`` ``B x 1 x S x S``; ``points`` ``B x N x 3`` (y, x, label) in view pixels.

        ``full_size=False`` returns the native ``B x 1 x S/4 x S/4`` logits (before the bilinear
        upsampling; training computes its loss there). ``reference_maps``: the view's
        :meth:`reference_maps` for ``reference``, when the caller computed them already (they
        do not depend on the clicks or on any trained weight). ``metric_maps``: the same for
        :meth:`ReferenceMetric.maps` (click-independent, but trained).
        """
        cfg = self.config
        points = compact_points(points)
        size = view.size
        tokens = view.tokens
        b, _, gh, gw = tokens.shape
        dtype = tokens.dtype
        lateral8, lateral4 = view.laterals
        # Previous probability and click disks at stride 4 (radius scaled), area-resized to the coarser levels.
        quarter = tuple(lateral4.shape[-2:])
        scaled = points.to(dtype).clone()
        scaled[..., :2] = (scaled[..., :2] + 0.5) * (quarter[0] / size) - 0.5
        radius = max(1.0, cfg.click_radius * quarter[0] / size)
        dense4 = [resize_maps(prev_mask.to(dtype), quarter), disk_maps(scaled, *quarter, radius)]
        if cfg.click_colour:
            dense4.append(colour_affinity(view.colour.to(dtype), scaled, cfg.click_colour_sigma))
        dense4 = channels_last(torch.cat(dense4, 1))
        dense8 = resize_maps(dense4, tuple(lateral8.shape[-2:]))
        dense_tokens = resize_maps(dense4, (gh, gw))

        clicks = click_affinity(view.unit_features, points.to(dtype), size) if cfg.click_affinity \
            else tokens.new_zeros(b, 2, gh, gw)
        if reference_maps is None:
            reference_maps = self.reference_maps(view.unit_features, reference)
        maps = [dense_tokens[:, :1], clicks, reference_maps[:, :2], dense_tokens[:, 1:3], reference_maps[:, 2:]]
        if self.reference_metric is not None:
            if metric_maps is None:
                metric_maps = self.reference_metric.maps(view.unit_features, reference)
            maps.append(self.reference_metric.decoder_map(metric_maps.to(dtype), reference))
        if cfg.click_colour:
            maps.append(dense_tokens[:, 3:])
        maps = channels_last(torch.cat(maps, dim=1))
        x = tokens + self.token_maps(maps)
        x = x + view.edge_tokens + self.edges_to_tokens.clicks_term(resize_maps(dense8, (gh, gw)))
        if reference is not None:
            x = x + reference.prompt.to(dtype)[:, :, None, None]
        if self.reference_attention is not None:
            x = x + channels_last(self.reference_attention(view.unit_features, reference))
        for block in self.blocks:
            x = block(x)
        if self.low_blocks:
            low = F.avg_pool2d(x, 2, ceil_mode=True)
            for block in self.low_blocks:
                low = block(low)
            if self.global_blocks:
                sequence = low.flatten(2).transpose(1, 2)
                for block in self.global_blocks:
                    sequence = block(sequence)
                low = channels_last(sequence.transpose(1, 2).reshape(low.shape))
            x = x + F.interpolate(low, size=(gh, gw), mode="bilinear", align_corners=False)
        logits = self.logits(self.up4(self.up8(x, lateral8, dense8), lateral4, dense4))
        if not full_size:
            return logits
        return F.interpolate(logits, size=(size, size), mode="bilinear", align_corners=False)
