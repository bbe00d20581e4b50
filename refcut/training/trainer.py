"""The RefCut trainer: reference-guided iterative click training (SimpleClick's recipe + reference prompts).

One step:

1. A batch of augmented (target, reference) pairs with initial clicks (:mod:`refcut.training.points`).
2. Reference prompts are computed once, with gradient (only for samples that have a reference;
   others get a zero prompt). Baseline mode (``no_reference``) never calls the reference branch.
3. 0..``max_extra_clicks`` passes without gradient in ``eval()`` mode, each feeding the soft
   previous prediction back and adding one click per sample from
   :func:`refcut.clicker.sample_training_click`; they use a detached copy of the prompts.
4. The final pass with gradient (through the DDP wrapper when distributed), normalized focal
   loss, Adam step, scheduler step (the schedule counts steps, not epochs).

Every random choice is seeded from ``(seed, step, rank)`` or ``(seed, sample index)``, so
``resume`` continues exactly and the data do not depend on the number of loader workers.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import platform
import re
import shutil
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Protocol

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from refcut.clicker import sample_training_click
from refcut.model import ModelConfig, RefCutModel, build_model
from refcut.model.click_decoder import ViewFeatures
from refcut.model.encode_once import ENCODE_ONCE_PRESETS, EncodeOnceConfig, EncodeOnceModel
from refcut.model.ensemble import EncodeOnceEnsemble
from refcut.provenance import git_revision
from refcut.training.augment import augment_reference, augment_target
from refcut.training.config import TrainConfig
from refcut.training.distributed import DistContext, all_reduce_mean, barrier, init_distributed, shutdown
from refcut.training.losses import far_from_clicks_weight, normalized_focal_loss
from refcut.training.points import training_points
from refcut.weights.native import WEIGHTS_NAME, build_any_model, load_pretrained, load_stored_state, save_pretrained

TRAINER_STATE_NAME = "trainer_state.pt"
CONFIG_YAML = "config.yaml"
LOG_CSV = "log.csv"
CSV_FIELDS = ("step", "loss", "lr", "iou", "seconds")


class PairSource(Protocol):
    """Anything with ``sample(rng) -> TrainingPair`` (e.g. :class:`refcut.data.TrainingPairSampler`)."""

    def sample(self, rng: np.random.Generator) -> Any: ...


# -- data ---------------------------------------------------------------------------------------


def parse_data_spec(spec: str) -> tuple[Path, str | None]:
    """``PATH`` or ``PATH:format`` -> ``(path, format or None)``."""
    from refcut.data.dataset import FORMATS

    head, sep, tail = spec.rpartition(":")
    if sep and tail in FORMATS and head:
        return Path(head).expanduser(), tail
    return Path(spec).expanduser(), None


def open_training_datasets(specs: list[str]) -> list:
    """Open the ``train`` split of every dataset spec; asserts no held-out image slipped in."""
    from refcut.data import open_dataset
    from refcut.data.io import is_heldout_image

    if not specs:
        raise ValueError("no training data: pass --data PATH[:format] (or set data.datasets in the config)")
    datasets = []
    for spec in specs:
        path, fmt = parse_data_spec(spec)
        dataset = open_dataset(path, format=fmt, split="train")
        leaked = [s.sample_id for s in dataset.samples if is_heldout_image(s.image_path)]
        if leaked:  # never train on the held-out split (kept even under python -O)
            raise AssertionError(f"held-out images in the training split of {path}: {leaked[:3]}")
        if not len(dataset):
            raise ValueError(f"dataset {path} has no training samples")
        datasets.append(dataset)
    return datasets


def build_pair_source(config: TrainConfig, datasets: list | None = None) -> PairSource:
    """The :class:`~refcut.data.TrainingPairSampler` over the config's training datasets."""
    from refcut.data import TrainingPairSampler

    datasets = open_training_datasets(config.data.datasets) if datasets is None else datasets
    return TrainingPairSampler(
        datasets,
        seed=config.seed,
        only_one_mask_prob=config.data.only_one_mask_prob,
        no_reference_prob=config.data.no_reference_prob,
        # The baseline draws the same pairs as a reference run (same targets, same random
        # stream) and drops their references without reading them.
        drop_references=config.no_reference,
        combination_weights=config.data.combination_weights,
    )


def num_point_rows(config: TrainConfig) -> int:
    """Rows of the click tensor: positives and negatives of the initial sampler + the extra clicks."""
    return 2 * config.data.max_initial_points + config.max_extra_clicks


class TrainingPairDataset(Dataset):
    """Sample ``index`` = one augmented pair with initial clicks, drawn from ``rng(seed, index)``."""

    def __init__(self, source: PairSource, config: TrainConfig, image_size: int) -> None:
        self.source = source
        self.config = config
        self.size = image_size

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, index: int) -> dict[str, Any]:
        cfg, data, size = self.config, self.config.data, self.size
        rng = np.random.default_rng([cfg.seed, int(index)])
        pair = self.source.sample(rng)
        image, gt = augment_target(pair.target_image, pair.gt_mask, size, rng, data)
        points, first_click = training_points(gt > 0.5, rng, data, num_point_rows(cfg))
        has_reference = pair.reference_image is not None and not cfg.no_reference
        if has_reference:
            ref, pos, neg = augment_reference(
                pair.reference_image, pair.positive_mask, pair.negative_mask, size, rng, data
            )
        else:
            ref, pos, neg = (np.zeros((3, size, size), np.float32), np.zeros((size, size), np.float32),
                             np.zeros((size, size), np.float32))
        return {
            "index": int(index),
            "image": torch.from_numpy(image),
            "gt": torch.from_numpy(gt)[None],
            "points": torch.from_numpy(points),
            "first_click": first_click,
            "has_reference": bool(has_reference),
            "reference_image": torch.from_numpy(ref),
            "positive_mask": torch.from_numpy(pos)[None],
            "negative_mask": torch.from_numpy(neg)[None],
            "target_id": str(pair.target_id),
            "reference_id": str(pair.reference_id) if has_reference else "",
        }


def dataset_names(specs: list[str]) -> list[str]:
    """A short name per dataset spec (its folder name; repeated names get ``-2``, ``-3``...)."""
    names: list[str] = []
    for spec in specs:
        base = parse_data_spec(spec)[0].resolve().name or "data"
        name, k = base, 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names


def open_view_cache(config: TrainConfig, model: EncodeOnceModel):
    """The :class:`~refcut.training.view_cache.ViewCache` of ``data.view_cache``.

    The default, ``$REFCUT_CACHE/views-<size>px``, keeps the caches of models at different input
    sizes apart (one would otherwise rebuild over the other).
    """
    from refcut.training.view_cache import ViewCache
    from refcut.weights.frozen_encoders import cache_root

    return ViewCache(config.data.view_cache or cache_root() / f"views-{model.config.image_size}px", model)


def build_cached_dataset(config: TrainConfig, model: EncodeOnceModel, pair_source: Any = None, progress: bool = True):
    """Build the missing cached views of the training data (resumable), load them, and wrap them as samples."""
    from refcut.training.cached_pairs import CachedViewPairDataset

    datasets = open_training_datasets(config.data.datasets)
    named = list(zip(dataset_names(config.data.datasets), datasets))
    cache = open_view_cache(config, model)
    cache.build(named, config.data.views, seed=config.seed, progress=progress)
    objects = cache.load(named, progress=progress)
    sampler = pair_source if pair_source is not None else build_pair_source(config, datasets)
    return CachedViewPairDataset(sampler, objects, [name for name, _ in named], config, num_point_rows(config))


class StepBatchSampler(Sampler[list[int]]):
    """Batches for steps ``start..steps-1``: step ``s`` on rank ``r`` gets indices ``((s*W + r)*B + i)``."""

    def __init__(self, start_step: int, steps: int, batch_size: int, rank: int = 0, world_size: int = 1) -> None:
        self.start_step, self.steps, self.batch_size = start_step, steps, batch_size
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        return max(0, self.steps - self.start_step)

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start_step, self.steps):
            first = (step * self.world_size + self.rank) * self.batch_size
            yield list(range(first, first + self.batch_size))


# -- model, parameters, optimiser ---------------------------------------------------------------


def is_encode_once(model: nn.Module) -> bool:
    """Whether ``model`` is of the encode-once family (trained on cached views)."""
    return isinstance(model, EncodeOnceModel)


def build_initial_model(config: TrainConfig) -> RefCutModel | EncodeOnceModel:
    """The network to train, initialised from scratch, DINOv2 or a checkpoint (``config.model.init``)."""
    setup = config.model
    overrides = {"image_size": setup.image_size} if setup.image_size else {}
    init = setup.init
    preset = None
    if setup.preset in ENCODE_ONCE_PRESETS:
        preset = EncodeOnceConfig.from_preset(setup.preset)
        if setup.image_size:
            preset = replace(preset, encoder=replace(preset.encoder, image_size=setup.image_size))
        if init == "scratch":
            return build_any_model(preset)
    if init in ("scratch", "dinov2"):
        model = build_model(ModelConfig.from_preset(setup.preset, **overrides))
        if init == "dinov2":
            from refcut.weights.dinov2_onnx import init_from_dinov2

            result = init_from_dinov2(model)
            model = result if isinstance(result, RefCutModel) else model
        return model
    path = Path(init).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"model.init: no checkpoint at {path} (use scratch, dinov2 or a path)")
    if path.suffix in (".pth", ".pt", ".ckpt"):
        from refcut.weights.simpleclick import import_simpleclick

        model, _ = import_simpleclick(path, image_size=setup.image_size)
        return model
    loaded, _ = load_pretrained(path)
    if isinstance(loaded, EncodeOnceEnsemble):
        raise ValueError(f"model.init: {path} is an ensemble; start from one of its members (its ensemble_sources)")
    if preset is not None and is_encode_once(loaded):  # the preset's architecture, the checkpoint's weights
        model = build_any_model(preset)
        warm_start(model, loaded.state_dict(), path)
        return model
    if overrides and loaded.config.image_size != setup.image_size:
        model = build_model(replace(loaded.config, **overrides))
        model.load_state_dict(loaded.state_dict())
        return model
    return loaded


def warm_start(model: nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """Load ``state`` into ``model`` where a parameter gained input channels, the new ones start at zero.

    So a decoder given new input maps (e.g. ``reference_nearest``) starts out computing exactly
    what the checkpoint did. Modules under the model's ``WARM_START_NEW`` prefixes may be missing
    from ``state`` (they start as initialised, e.g. a zero-initialised ``reference_attention``).
    Any other missing key or shape mismatch is an error naming ``source``.
    """
    target = model.state_dict()
    new = getattr(model, "WARM_START_NEW", ())
    missing = sorted(k for k in set(target) - set(state) if not k.startswith(new))
    unexpected = sorted(set(state) - set(target))
    if missing or unexpected:
        raise ValueError(f"{source} does not fit the preset: missing {missing[:5]}, unexpected {unexpected[:5]}")
    for key, value in state.items():
        want = target[key]
        if value.shape == want.shape:
            want.copy_(value)
        elif value.dim() >= 2 and value.shape[0] == want.shape[0] and value.shape[2:] == want.shape[2:] \
                and value.shape[1] < want.shape[1]:
            want.zero_()
            want[:, : value.shape[1]].copy_(value)
        else:
            raise ValueError(f"{source}: {key} has shape {tuple(value.shape)}, the preset needs {tuple(want.shape)}")


def freeze_parameters(model: RefCutModel | EncodeOnceModel, freeze_blocks: int, no_reference: bool) -> None:
    """Freeze the first ``freeze_blocks`` blocks (+ patch/position embeddings when > 0); the
    reference branch too in baseline mode (it is never called). Everything else is trainable.
    The encode-once family's encoders are always frozen (``freeze_blocks`` does not apply)."""
    if is_encode_once(model):
        for name, param in model.named_parameters():
            frozen = name.startswith(model.FROZEN_PREFIXES) or (no_reference and name.startswith("reference."))
            param.requires_grad_(not frozen)
        return
    depth = len(model.backbone.blocks)
    if freeze_blocks > depth:
        raise ValueError(f"optim.freeze_blocks={freeze_blocks} exceeds the backbone depth {depth}")
    for param in model.parameters():
        param.requires_grad_(True)
    frozen: list[nn.Module | nn.Parameter] = list(model.backbone.blocks[:freeze_blocks])
    if freeze_blocks > 0:
        frozen += [model.backbone.patch_embed, model.backbone.pos_embed]
    if no_reference:
        frozen.append(model.reference)
    for item in frozen:
        for param in [item] if isinstance(item, nn.Parameter) else item.parameters():
            param.requires_grad_(False)


def layer_id(name: str, depth: int) -> int:
    """SimpleClick/BEiT layer ids: embeddings 0, ``backbone.blocks.i`` i+1, everything else depth+1."""
    if name.startswith(("backbone.patch_embed.", "backbone.pos_embed")):
        return 0
    match = re.match(r"backbone\.blocks\.(\d+)\.", name)
    if match:
        return int(match.group(1)) + 1
    return depth + 1


def build_param_groups(model: RefCutModel, config: TrainConfig) -> list[dict[str, Any]]:
    """Optimizer groups covering every trainable parameter exactly once (asserted).

    Groups are keyed by (lr scale, weight decay): the scale is the layer-wise decay times the
    longest matching ``optim.lr_scales`` prefix; 1-D parameters (biases, norms, layer scales)
    and embeddings get no weight decay.
    """
    optim = config.optim
    depth = 0 if is_encode_once(model) else len(model.backbone.blocks)
    groups: dict[tuple[float, float], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        scale = 1.0 if optim.layer_decay is None else optim.layer_decay ** (depth + 1 - layer_id(name, depth))
        prefixes = [prefix for prefix in optim.lr_scales if name.startswith(prefix)]
        if prefixes:
            scale *= optim.lr_scales[max(prefixes, key=len)]
        no_decay = param.ndim <= 1 or name.endswith("pos_embed")
        decay = 0.0 if no_decay else optim.weight_decay
        group = groups.setdefault((scale, decay), {"params": [], "names": [], "lr_scale": scale,
                                                   "lr": optim.lr * scale, "weight_decay": decay})
        group["params"].append(param)
        group["names"].append(name)
    result = list(groups.values())
    check_optimizer_coverage(model, result)
    return result


def check_optimizer_coverage(model: nn.Module, groups: list[dict[str, Any]]) -> None:
    """Raise if a trainable parameter is in no group, or in several (SimpleClick's lr-decay pitfall)."""
    seen: dict[int, int] = {}
    for group in groups:
        for param in group["params"]:
            seen[id(param)] = seen.get(id(param), 0) + 1
    missing = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in seen]
    doubled = [n for n, p in model.named_parameters() if seen.get(id(p), 0) > 1]
    if missing or doubled:
        raise AssertionError(f"optimizer groups: missing {missing[:8]}, duplicated {doubled[:8]}")


def milestones_for(config: TrainConfig) -> list[int]:
    """Scheduler milestones in steps from ``optim.decay_at`` fractions."""
    return sorted({max(1, round(f * config.steps)) for f in config.optim.decay_at})


# -- one step -----------------------------------------------------------------------------------


def compute_prompts(model: RefCutModel, batch: dict[str, torch.Tensor], reference_grad: bool = True) -> torch.Tensor:
    """Reference prompts ``B x D`` (with gradient); samples without a reference get zeros.

    The reference backbone only runs on samples that have one (without gradient when
    ``reference_grad`` is False); the prompt MLPs always run (on zero features for the others),
    so every reference parameter is in the graph each step.
    """
    if is_encode_once(model):  # cached reference tokens: pooling and the prompt MLPs only
        return model.reference_prompt(batch["reference_tokens"].float(), batch["positive_mask"], batch["negative_mask"])
    has = batch["has_reference"]
    image = batch["reference_image"]
    b, _, height, width = image.shape
    patch = model.config.patch_size
    features = image.new_zeros(b, model.config.embed_dim, height // patch, width // patch)
    index = torch.nonzero(has, as_tuple=False).flatten()
    if index.numel():
        with contextlib.nullcontext() if reference_grad else torch.no_grad():
            encoded = model.encode_reference(image.index_select(0, index))
        features = features.to(encoded.dtype).index_copy(0, index, encoded)
    return model.reference_prompt(features, batch["positive_mask"], batch["negative_mask"])


def add_training_clicks(
    points: torch.Tensor, prob: torch.Tensor, gt: torch.Tensor, row: int, threshold: float, rng: np.random.Generator,
    skip: torch.Tensor | None = None,
) -> torch.Tensor:
    """Write one simulated click per sample into ``points[:, row]`` (unchanged where there is no error or ``skip``)."""
    pred = (prob[:, 0] > threshold).cpu().numpy()
    truth = (gt[:, 0] > 0.5).cpu().numpy()
    points = points.clone()
    for i in range(pred.shape[0]):
        if skip is not None and bool(skip[i]):
            continue
        click = sample_training_click(pred[i], truth[i], rng)
        if click is not None:
            points[i, row] = torch.tensor([click.y, click.x, 1.0 if click.is_positive else 0.0])
    return points


def full_size_logits(logits: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Logits bilinearly upsampled to ``like``'s size (unchanged when they match), as the model's full-size output."""
    if logits.shape[-2:] == like.shape[-2:]:
        return logits
    return F.interpolate(logits, size=like.shape[-2:], mode="bilinear", align_corners=False)


def box_region_weight(coverage: torch.Tensor, outside: float = 0.3) -> torch.Tensor:
    """``B x 1 x g x g``: 1 on the tokens within one box height / width of each sample's target box centre
    (the box grown about 2x), ``outside`` elsewhere."""
    b, _, gh, gw = coverage.shape
    weight = coverage.new_full(coverage.shape, outside)
    ys = torch.arange(gh, device=coverage.device, dtype=coverage.dtype)
    xs = torch.arange(gw, device=coverage.device, dtype=coverage.dtype)
    for i in range(b):
        rows, cols = torch.nonzero(coverage[i, 0] > 0, as_tuple=True)
        if rows.numel() == 0:
            continue
        (y0, y1), (x0, x1) = (rows.min(), rows.max()), (cols.min(), cols.max())
        cy, cx, h, w = (y0 + y1) / 2, (x0 + x1) / 2, y1 - y0 + 1, x1 - x0 + 1
        inside = ((ys - cy).abs() <= h)[:, None] & ((xs - cx).abs() <= w)[None, :]
        weight[i, 0][inside] = 1.0
    return weight


def metric_loss(metric: nn.Module, maps: torch.Tensor, reference: Any, gt: torch.Tensor) -> torch.Tensor:
    """The reference metric's direct loss (``metric_loss_weight``): soft per-token BCE against the
    target's coverage of each token, box-weighted, over the samples with positive exemplars."""
    has = reference.exemplar_valid[:, 0].any(dim=1)
    if not bool(has.any()):
        return maps.sum() * 0.0
    coverage = F.adaptive_avg_pool2d(gt.float(), maps.shape[-2:])
    weight = box_region_weight(coverage)
    bce = F.binary_cross_entropy_with_logits(metric.logits(maps, reference), coverage, reduction="none")
    per_sample = (bce * weight).sum(dim=(1, 2, 3)) / weight.sum(dim=(1, 2, 3))
    return per_sample[has].mean()


@dataclass
class StepOutput:
    """What one training step produced (for logging and dumps)."""

    loss: torch.Tensor
    iou: float
    logits: torch.Tensor
    points: torch.Tensor
    num_extra_clicks: int


def training_step(
    model: RefCutModel,
    wrapped: nn.Module,
    batch: dict[str, torch.Tensor],
    config: TrainConfig,
    rng: np.random.Generator,
    autocast: Any,
) -> StepOutput:
    """Forward passes of one step (simulated clicks + final pass) and the loss; no backward."""
    gt = batch["gt"]
    device = gt.device
    points = batch["points"].cpu()
    low_res = config.low_res_loss and is_encode_once(model)
    with autocast():
        prompt = None if config.no_reference else compute_prompts(model, batch, config.reference_grad)
    detached = None if prompt is None else prompt.detach()
    extra: dict[str, Any] = {}
    metric = model.decoder.reference_metric if is_encode_once(model) and prompt is not None else None
    if is_encode_once(model):  # the view's cached features stand in for the image
        inputs = ViewFeatures(batch["tokens"], batch["edges4"], batch["edges8"])
        with torch.no_grad(), autocast():  # the click-independent parts once per step
            view = model.encode_view(inputs, batch.get("image"))
            extra["reference_maps"] = model.decoder.reference_maps(view.unit_features, detached)
        if metric is not None:  # trained but click-independent: once per step, with gradient for the final pass
            with autocast():
                metric_maps = metric.maps(view.unit_features, prompt)
            extra["metric_maps"] = metric_maps.detach()
        if low_res:
            extra["full_size"] = False
    else:
        inputs = batch["image"]
    prev = torch.zeros_like(gt)
    first_click = batch.get("first_click")  # samples trained on their first click alone
    first_click = first_click if first_click is not None and bool(first_click.any()) else None
    num_extra = int(rng.integers(0, config.max_extra_clicks + 1))
    if num_extra:
        first_row = 2 * config.data.max_initial_points
        model.eval()
        try:
            with torch.no_grad():
                for i in range(num_extra):
                    with autocast():
                        if is_encode_once(model):
                            logits = model.decode(view, prev, points.to(device), detached, **extra)
                        else:
                            logits = model(inputs, prev, points.to(device), detached)
                    prev = torch.sigmoid(full_size_logits(logits.float(), gt))
                    points = add_training_clicks(points, prev, gt, first_row + i, config.click_threshold, rng,
                                                 first_click)
        finally:
            model.train()
        if first_click is not None:
            prev = prev.masked_fill(first_click.to(device).view(-1, 1, 1, 1), 0.0)
    if metric is not None:
        extra["metric_maps"] = metric_maps
    with autocast():
        image = {"image": batch.get("image")} if is_encode_once(model) else {}  # the view's pixels (click_colour)
        logits = wrapped(inputs, prev, points.to(device), prompt, **extra, **image)
    target = gt if logits.shape == gt.shape else F.adaptive_avg_pool2d(gt.float(), logits.shape[-2:])
    pixel_weight = None
    if config.far_click_weight > 0:
        pixel_weight = far_from_clicks_weight(points, tuple(logits.shape[-2:]), gt.shape[-1], config.far_click_weight,
                                              config.far_click_radius).to(device)
    loss = normalized_focal_loss(logits.float(), target, config.loss_alpha, config.loss_gamma,
                                 pixel_weight=pixel_weight).mean()
    if metric is not None and config.metric_loss_weight > 0:
        loss = loss + config.metric_loss_weight * metric_loss(metric, metric_maps.float(), prompt, gt)
    with torch.no_grad():
        logits = full_size_logits(logits.detach().float(), gt)
        pred = torch.sigmoid(logits) > config.click_threshold
        truth = gt > 0.5
        inter = (pred & truth).sum(dim=(1, 2, 3)).float()
        union = (pred | truth).sum(dim=(1, 2, 3)).float()
        iou = float(torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union)).mean())
    return StepOutput(loss, iou, logits.detach(), points, num_extra)


# -- checkpoints, logs, dumps -------------------------------------------------------------------


def step_seed(seed: int, step: int, rank: int) -> int:
    """A 63-bit torch seed for (run seed, step, rank)."""
    return int(np.random.SeedSequence([seed, step, rank, 7]).generate_state(2, np.uint32).astype(np.uint64)
               .view(np.uint64)[0] >> np.uint64(1))


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    """``RUN_DIR/checkpoints/step_NNNNNNN``."""
    return Path(run_dir) / "checkpoints" / f"step_{step:07d}"


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint folder of a run (one holding ``trainer_state.pt``), or None."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return None
    done = sorted(
        p for p in folder.glob("step_*") if (p / TRAINER_STATE_NAME).is_file() and (p / WEIGHTS_NAME).is_file()
    )
    return done[-1] if done else None


def save_checkpoint(
    run_dir: Path, step: int, model: RefCutModel, optimizer: torch.optim.Optimizer,
    scheduler: Any, scaler: Any, config: TrainConfig, keep: int,
) -> Path:
    """Native model dir + ``trainer_state.pt``, written to a temporary folder then renamed.

    Only the newest ``keep`` checkpoints are kept (all when ``keep`` is 0).
    """
    target = checkpoint_dir(run_dir, step)
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_pretrained(model, tmp, metadata={"training": {"step": step, "config": config.to_dict()}})
    state = {
        "step": step,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    torch.save(state, tmp / TRAINER_STATE_NAME)
    shutil.rmtree(target, ignore_errors=True)
    tmp.replace(target)
    if keep > 0:
        old = sorted(p for p in target.parent.glob("step_*") if p.is_dir() and not p.name.endswith(".tmp"))
        for path in old[:-keep]:
            shutil.rmtree(path, ignore_errors=True)
    return target


def load_checkpoint(
    folder: Path, model: RefCutModel, optimizer: torch.optim.Optimizer, scheduler: Any, scaler: Any
) -> int:
    """Restore model, optimizer, scheduler, scaler and RNG from a checkpoint folder; returns its step."""
    load_stored_state(model, load_file(str(folder / WEIGHTS_NAME)), folder / WEIGHTS_NAME)
    state = torch.load(folder / TRAINER_STATE_NAME, map_location="cpu", weights_only=True)
    saved_names = _saved_group_names(state["optimizer"]["param_groups"], folder, model)
    regrouped = saved_names != [list(group["names"]) for group in optimizer.param_groups]
    if regrouped:  # the config changed the lr groups (e.g. new lr_scales): carry Adam's state over by name
        _load_optimizer_state_by_name(optimizer, state["optimizer"], saved_names)
    else:
        for group, names in zip(state["optimizer"]["param_groups"], saved_names):
            group["names"] = names
        optimizer.load_state_dict(state["optimizer"])
    milestones, base_lrs = scheduler.milestones, list(scheduler.base_lrs)
    scheduler.load_state_dict(state["scheduler"])
    if regrouped:
        scheduler.base_lrs = base_lrs
    if scheduler.milestones != milestones or regrouped:  # the current config's schedule wins
        scheduler.milestones = milestones
        passed = sum(count for m, count in milestones.items() if m <= scheduler.last_epoch)
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * scheduler.gamma**passed
        scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["torch_rng"])
    if torch.cuda.is_available() and state.get("cuda_rng"):
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return int(state["step"])


def _saved_group_names(saved_groups: list[dict[str, Any]], folder: Path, model: RefCutModel) -> list[list[str]]:
    """Parameter names of each saved optimizer group (older checkpoints: rebuilt from their own config)."""
    if all("names" in group for group in saved_groups):
        return [list(group["names"]) for group in saved_groups]
    meta = json.loads((folder / "config.json").read_text())
    saved_config = TrainConfig.from_dict(meta["training"]["config"])
    names = [group["names"] for group in build_param_groups(model, saved_config)]
    if [len(n) for n in names] != [len(group["params"]) for group in saved_groups]:
        raise ValueError(f"{folder}: cannot match the saved optimizer state to the model's parameters "
                         "(were --freeze-blocks or --no-reference changed?)")
    return names


def _load_optimizer_state_by_name(
    optimizer: torch.optim.Optimizer, saved: dict[str, Any], saved_names: list[list[str]]
) -> None:
    """Give each parameter the saved per-parameter state (Adam moments, step) of the same name."""
    by_name = {}
    for group, names in zip(saved["param_groups"], saved_names):
        for index, name in zip(group["params"], names):
            if index in saved["state"]:
                by_name[name] = saved["state"][index]
    for group in optimizer.param_groups:
        for param, name in zip(group["params"], group["names"]):
            if name in by_name:
                optimizer.state[param] = {
                    key: value.to(param.device) if torch.is_tensor(value) and value.dim() > 0 else value
                    for key, value in by_name[name].items()
                }


class RunLogger:
    """CSV log (``step, loss, lr, iou, seconds``), optional TensorBoard, text log; rank 0 only."""

    def __init__(self, run_dir: Path, start_step: int, enabled: bool) -> None:
        self.enabled = enabled
        self.tensorboard = None
        self.csv_file = None
        if not enabled:
            return
        self.text = open(run_dir / "train.log", "a", encoding="utf-8")
        path = run_dir / LOG_CSV
        rows = []
        if path.is_file() and start_step > 0:  # drop rows past the resumed step (they will be redone)
            with open(path, newline="") as handle:
                rows = [r for r in csv.DictReader(handle) if int(r["step"]) <= start_step]
        self.csv_file = open(path, "w", newline="")
        self.csv = csv.DictWriter(self.csv_file, fieldnames=CSV_FIELDS)
        self.csv.writeheader()
        self.csv.writerows(rows)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(str(run_dir / "tensorboard"))
        except Exception:  # tensorboard is optional
            self.tensorboard = None

    def info(self, message: str) -> None:
        """Print and append a line to ``train.log``."""
        if not self.enabled:
            return
        print(message, flush=True)
        self.text.write(message + "\n")
        self.text.flush()

    def row(self, step: int, loss: float, lr: float, iou: float, seconds: float, flush: bool) -> None:
        """One CSV row (+ TensorBoard scalars)."""
        if not self.enabled:
            return
        self.csv.writerow({"step": step, "loss": f"{loss:.6f}", "lr": f"{lr:.6g}", "iou": f"{iou:.4f}",
                           "seconds": f"{seconds:.3f}"})
        if self.tensorboard is not None:
            self.tensorboard.add_scalar("train/loss", loss, step)
            self.tensorboard.add_scalar("train/iou", iou, step)
            self.tensorboard.add_scalar("train/lr", lr, step)
        if flush:
            self.csv_file.flush()

    def close(self) -> None:
        """Flush and close the files."""
        if not self.enabled:
            return
        self.csv_file.close()
        self.text.close()
        if self.tensorboard is not None:
            self.tensorboard.close()


def _to_uint8(image: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray((image.float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).astype(np.uint8))


def _overlay(image: np.ndarray, mask: np.ndarray, color: tuple[int, int, int], alpha: float = 0.45) -> np.ndarray:
    out = image.astype(np.float32)
    out[mask] = (1 - alpha) * out[mask] + alpha * np.asarray(color, np.float32)
    return out.astype(np.uint8)


def render_dump(batch: dict[str, torch.Tensor], output: StepOutput, threshold: float, index: int = 0) -> np.ndarray:
    """RGB panel: target + clicks | prediction + clicks | ground truth | reference (+ green, - red)."""
    target = _to_uint8(batch["image"][index])
    pred = (torch.sigmoid(output.logits[index, 0].float()) > threshold).cpu().numpy()
    truth = batch["gt"][index, 0].cpu().numpy() > 0.5
    clicks = target.copy()
    predicted = _overlay(target, pred, (0, 120, 255))
    radius = max(2, target.shape[0] // 64)
    for y, x, label in output.points[index].tolist():
        if label < 0:
            continue
        color = (0, 220, 0) if label == 1 else (230, 0, 0)
        for canvas in (clicks, predicted):
            cv2.circle(canvas, (int(round(x)), int(round(y))), radius, color, -1)
            cv2.circle(canvas, (int(round(x)), int(round(y))), radius, (255, 255, 255), 1)
    ground = _overlay(target, truth, (255, 200, 0))
    reference = _to_uint8(batch["reference_image"][index])
    if bool(batch["has_reference"][index]):
        reference = _overlay(reference, batch["positive_mask"][index, 0].cpu().numpy() > 0.5, (0, 220, 0))
        reference = _overlay(reference, batch["negative_mask"][index, 0].cpu().numpy() > 0.5, (230, 0, 0))
    else:
        cv2.putText(reference, "no reference", (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
    return np.concatenate([clicks, predicted, ground, reference], axis=1)


# -- environment --------------------------------------------------------------------------------


def environment_summary(config: TrainConfig, context: DistContext, precision: str, model: RefCutModel) -> dict:
    """What the run log records at start: batch, lr, seed, versions, device, git revision, parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {
        "effective_batch_size": config.batch_size * context.world_size,
        "batch_size_per_process": config.batch_size,
        "world_size": context.world_size,
        "lr": config.optim.lr,
        "seed": config.seed,
        "steps": config.steps,
        "image_size": model.config.image_size,
        "model": model.config.name,
        "init": config.model.init,
        "no_reference": config.no_reference,
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable_parameters": trainable,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(context.device),
        "precision": precision,
        "threads": torch.get_num_threads(),
        "git_revision": git_revision(),
        "host": platform.node(),
        "command": " ".join(sys.argv),
    }


def resolve_precision(config: TrainConfig, device: torch.device) -> str:
    """``auto`` -> fp16 AMP on CUDA, fp32 on CPU. fp16 on CPU is refused (bf16 works there)."""
    precision = config.precision
    if precision == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("precision fp16 needs a CUDA device; use bf16 or fp32 on CPU")
    return precision


# -- the run ------------------------------------------------------------------------------------


def train(
    config: TrainConfig,
    run_dir: str | Path,
    resume: bool = False,
    pair_source: PairSource | None = None,
    progress: bool = True,
    stop_at: int | None = None,
) -> Path:
    """Train (or, with ``resume``, continue) a run in ``run_dir``; returns the final model folder.

    ``run_dir`` receives ``config.yaml``, ``train.log``, ``log.csv``, ``checkpoints/step_N/``
    (native model + ``trainer_state.pt``), ``dumps/*.png`` and ``final/``. ``pair_source``
    replaces the datasets of ``config.data`` (tests). Under ``torchrun`` every process calls
    this; rank 0 writes the files. ``stop_at`` ends this invocation after that many steps in
    total (a checkpoint is written there, ``final/`` is not): continue later with ``resume``.
    """
    run_dir = Path(run_dir)
    context = init_distributed(config.device)
    try:
        return _train(config, run_dir, resume, pair_source, progress, context, stop_at)
    finally:
        shutdown(context)


def _train(
    config: TrainConfig, run_dir: Path, resume: bool, pair_source: PairSource | None, progress: bool,
    context: DistContext, stop_at: int | None = None,
) -> Path:
    device = context.device
    precision = resolve_precision(config, device)
    checkpoint = latest_checkpoint(run_dir) if resume else None
    if resume and not (run_dir / CONFIG_YAML).is_file():
        raise FileNotFoundError(f"cannot resume: {run_dir / CONFIG_YAML} not found")
    if context.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        config.save_yaml(run_dir / CONFIG_YAML)
    barrier(context)

    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)  # identical initialisation on every rank
    # On resume the architecture and weights come from the checkpoint (no need to re-read the init source).
    model = (load_pretrained(checkpoint)[0] if checkpoint else build_initial_model(config)).to(device)
    freeze_parameters(model, config.optim.freeze_blocks, config.no_reference)
    groups = build_param_groups(model, config)
    optimizer = torch.optim.Adam(  # groups keep their "names": resume matches optimizer state by name
        groups, lr=config.optim.lr, betas=tuple(config.optim.betas), eps=config.optim.eps,
    )
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones_for(config), gamma=config.optim.decay_gamma)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    start_step = load_checkpoint(checkpoint, model, optimizer, scheduler, scaler) if checkpoint else 0
    end_step = config.steps if stop_at is None else max(start_step, min(stop_at, config.steps))

    wrapped: nn.Module = model
    if context.distributed:
        wrapped = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    if is_encode_once(model):
        dataset = build_cached_dataset(config, model, pair_source, progress and context.is_main)
    else:
        if pair_source is None:
            pair_source = build_pair_source(config)
        dataset = TrainingPairDataset(pair_source, config, model.config.image_size)
    loader = DataLoader(
        dataset,
        batch_sampler=StepBatchSampler(start_step, end_step, config.batch_size, context.rank, context.world_size),
        num_workers=config.data.num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )

    logger = RunLogger(run_dir, start_step, context.is_main)
    env = environment_summary(config, context, precision, model)
    env["start_step"] = start_step
    env["resumed_from"] = str(checkpoint) if checkpoint else None
    logger.info(("resuming " if checkpoint else "training ") + json.dumps(env))
    if context.is_main:
        (run_dir / "environment.json").write_text(json.dumps(env, indent=2) + "\n")

    if precision == "bf16":
        autocast = lambda: torch.autocast(device.type, dtype=torch.bfloat16)  # noqa: E731
    elif precision == "fp16":
        autocast = lambda: torch.autocast(device.type, dtype=torch.float16)  # noqa: E731
    else:
        autocast = contextlib.nullcontext

    bar = None
    if progress and context.is_main:
        from tqdm import tqdm

        bar = tqdm(total=config.steps, initial=start_step, desc="train", dynamic_ncols=True)
    trainable = [p for p in model.parameters() if p.requires_grad]
    model.train()
    step = start_step
    smoothed = None
    tick = time.perf_counter()
    for batch in loader:
        torch.manual_seed(step_seed(config.seed, step, context.rank))
        rng = np.random.default_rng([config.seed, step, context.rank, 11])
        batch = {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        output = training_step(model, wrapped, batch, config, rng, autocast)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(output.loss).backward()
            scaler.unscale_(optimizer)
        else:
            output.loss.backward()
        if config.optim.grad_clip:
            torch.nn.utils.clip_grad_norm_(trainable, config.optim.grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        lr = optimizer.param_groups[0]["lr"] / optimizer.param_groups[0].get("lr_scale", 1.0)
        scheduler.step()
        step += 1

        stats = all_reduce_mean(torch.tensor([output.loss.item(), output.iou], dtype=torch.float64), context)
        loss_value, iou_value = float(stats[0]), float(stats[1])
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"loss became {loss_value} at step {step}")
        now = time.perf_counter()
        seconds, tick = now - tick, now
        smoothed = loss_value if smoothed is None else 0.9 * smoothed + 0.1 * loss_value
        logger.row(step, loss_value, lr, iou_value, seconds, flush=step % max(1, config.log_every) == 0)
        if bar is not None:
            bar.set_postfix(loss=f"{smoothed:.4f}", iou=f"{iou_value:.3f}", lr=f"{lr:.2e}", refresh=False)
            bar.update(1)
        if context.is_main and config.dump_every > 0 and (step % config.dump_every == 0 or step == 1):
            (run_dir / "dumps").mkdir(exist_ok=True)
            panel = render_dump(batch, output, config.click_threshold)
            cv2.imwrite(str(run_dir / "dumps" / f"step_{step:07d}.png"), cv2.cvtColor(panel, cv2.COLOR_RGB2BGR))
        if context.is_main and (step % max(1, config.checkpoint_every) == 0 or step == end_step):
            save_checkpoint(run_dir, step, model, optimizer, scheduler, scaler, config, config.keep_checkpoints)
        if step % max(1, config.log_every) == 0:
            logger.info(f"step {step}/{config.steps} loss {loss_value:.4f} (avg {smoothed:.4f}) "
                        f"iou {iou_value:.3f} lr {lr:.3g} {seconds:.2f}s/step")
    if bar is not None:
        bar.close()

    final = run_dir / "final"
    if step < config.steps:
        logger.info(f"stopped at step {step} of {config.steps}; continue with resume")
        logger.close()
        barrier(context)
        return latest_checkpoint(run_dir) or run_dir
    if context.is_main:
        metadata = {"training": {"config": config.to_dict(), "steps": step, "git_revision": env["git_revision"],
                                 "effective_batch_size": env["effective_batch_size"]}}
        save_pretrained(model, final, metadata=metadata, dtype=torch.float16 if config.save_fp16 else torch.float32)
        logger.info(f"final model written to {final}")
    logger.close()
    barrier(context)
    return final
