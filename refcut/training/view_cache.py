"""Cached encoder views for training the encode-once family.

The frozen encoders run once per *view* of a training object: the whole image squashed to the
model's input (``full``, what the predictor shows the first click), the same flipped (``flip``,
only for categories without left/right parts), a crop around the object (``object``) and crops
around a random part or pair of parts (``part``), each expanded and jittered the way the
predictor's zoom-in boxes are (x1.2-2.0, at least 200 px a side). Per view the cache keeps the
ViT tokens and edge features (fp16), the view's pixels and a label map of the object's parts,
so one cached view serves many targets (any subset of its parts) and many click sequences.

One safetensors file per object under ``ROOT/<dataset>/``, rebuilt when the source image file,
the encoders or the cache format change; building is resumable (files are written atomically)
and runs in passes (every object's ``full`` view first), so training can start on a partial cache.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from refcut.model.click_decoder import ViewFeatures
from refcut.predictor.transforms import OBJECT_CROP_MIN_SIZE, Box, box_iou, expand_box, full_box, mask_box, view_resize

CACHE_FORMAT = 1
VIEW_KINDS = ("full", "flip", "object", "part")
DEFAULT_VIEWS = ("full", "object", "part")
DUPLICATE_IOU = 0.6
"""A crop whose box overlaps an existing view's this much (IoU) is not cached."""
_SIDED = ("left", "right")


@dataclass(frozen=True)
class ViewSpec:
    """One view: which kind, the box in image pixels ``(y0, y1, x0, x1)``, mirrored or not."""

    kind: str
    box: Box
    flip: bool = False


@dataclass
class CachedObject:
    """Everything cached for one training object (``V`` views of side ``S``)."""

    dataset: str
    sample_id: str
    category: str | None
    part_names: tuple[str, ...]
    image_shape: tuple[int, int]
    views: list[ViewSpec]
    features: ViewFeatures
    """fp16, first dimension ``V``."""
    labels: np.ndarray
    """``V x S x S`` uint8: 0 background, ``i`` = ``part_names[i - 1]``."""
    pixels: np.ndarray
    """``V x S x S x 3`` uint8 RGB."""

    def part_mask(self, view: int, parts: Iterable[str]) -> np.ndarray:
        """``S x S`` bool: the union of ``parts`` in view ``view``."""
        ids = [self.part_names.index(p) + 1 for p in parts if p in self.part_names]
        return np.isin(self.labels[view], ids)


def encoder_identity(model) -> str:
    """A short hash naming the frozen encoders (config and weights) of an encode-once model."""
    digest = hashlib.sha1(json.dumps(model.config.encoder.to_dict(), sort_keys=True).encode())
    for module in (model.encoder, model.edge_encoder):
        for name, tensor in sorted(module.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().float().contiguous().numpy().tobytes()[:: max(1, tensor.numel() // 4096)])
    return digest.hexdigest()[:16]


def _source_stamp(path: Path) -> str:
    """The image file's content hash: copies of the same data (new mtimes) keep the cache valid."""
    stat = Path(path).stat()
    return _content_hash(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=65536)
def _content_hash(path: str, size: int, mtime_ns: int) -> str:  # size and mtime: re-hash a changed file
    return "sha1:" + hashlib.sha1(Path(path).read_bytes()).hexdigest()[:20]


def _jittered_crop(mask: np.ndarray, rng: np.random.Generator) -> Box | None:
    box = mask_box(mask)
    if box is None:
        return None
    height, width = mask.shape
    y0, y1, x0, x1 = box
    h, w = y1 - y0 + 1, x1 - x0 + 1
    shift_y, shift_x = rng.uniform(-0.1, 0.1, size=2) * (h, w)
    moved = (int(y0 + shift_y), int(y1 + shift_y), int(x0 + shift_x), int(x1 + shift_x))
    return expand_box(moved, float(rng.uniform(1.2, 2.0)), OBJECT_CROP_MIN_SIZE, height, width)


def plan_views(
    masks: dict[str, np.ndarray], shape: tuple[int, int], kinds: Iterable[str], rng: np.random.Generator
) -> list[ViewSpec]:
    """The views to cache for one object (``masks``: part name -> HxW bool), in ``kinds`` order.

    Crops that duplicate an earlier view (box IoU >= 0.6) are left out; ``flip`` only where no
    part name says left or right.
    """
    height, width = shape
    views = [ViewSpec("full", full_box(height, width))]
    names = sorted(masks)
    union = np.zeros(shape, bool)
    for mask in masks.values():
        union |= mask
    for kind in kinds:
        if kind not in VIEW_KINDS:
            raise ValueError(f"unknown view kind {kind!r}; choose from {VIEW_KINDS}")
        if kind == "full":
            continue
        if kind == "flip":
            if not any(side in name.lower() for name in names for side in _SIDED):
                views.append(ViewSpec("flip", full_box(height, width), flip=True))
            continue
        if kind == "object":
            box = _jittered_crop(union, rng)
        else:
            large = [n for n in names if masks[n].sum() >= 0.002 * height * width] or names
            k = 1 if len(large) == 1 or rng.random() < 0.6 else 2
            chosen = rng.choice(len(large), size=k, replace=False)
            box = _jittered_crop(np.any([masks[large[i]] for i in chosen], axis=0), rng)
        if box is not None and all(box_iou(box, v.box) < DUPLICATE_IOU for v in views):
            views.append(ViewSpec(kind, box))
    return views


def label_map(masks: dict[str, np.ndarray], part_names: tuple[str, ...], shape: tuple[int, int]) -> np.ndarray:
    """HxW uint8 part ids (``i`` = ``part_names[i - 1]``; names without a mask stay absent); where parts
    overlap the smaller one wins."""
    if len(part_names) > 255:
        raise ValueError(f"{len(part_names)} parts do not fit a uint8 label map")
    labels = np.zeros(shape, np.uint8)
    for name in sorted((n for n in part_names if n in masks), key=lambda n: -int(masks[n].sum())):
        labels[masks[name]] = part_names.index(name) + 1
    return labels


def render_views(image: np.ndarray, labels: np.ndarray, views: list[ViewSpec], size: int) -> tuple[torch.Tensor, np.ndarray]:
    """Views as ``V x 3 x S x S`` floats in [0, 1] (the encoders' input) and ``V x S x S`` uint8 labels."""
    pixels = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
    label_t = torch.from_numpy(labels)[None, None].float()
    images, maps = [], []
    for view in views:
        crop = view_resize(pixels, view.box, size)
        lab = view_resize(label_t, view.box, size, mode="nearest")
        if view.flip:
            crop, lab = crop.flip(-1), lab.flip(-1)
        images.append(crop)
        maps.append(lab)
    return torch.cat(images).clamp(0, 1), torch.cat(maps)[:, 0].round().to(torch.uint8).numpy()


class ViewCache:
    """The cache folder for one set of frozen encoders (see the module doc)."""

    def __init__(self, root: str | Path, model) -> None:
        self.root = Path(root).expanduser()
        self.model = model
        self.size = model.config.image_size
        self.identity = encoder_identity(model)

    def path_for(self, dataset: str, sample_id: str) -> Path:
        """Where one object's views live."""
        key = hashlib.sha1(f"{dataset}\0{sample_id}".encode()).hexdigest()[:20]
        return self.root / dataset / f"{key}.safetensors"

    def _read_meta(self, path: Path) -> dict | None:
        try:
            with safe_open(str(path), framework="pt") as handle:
                return json.loads(handle.metadata()["refcut"])
        except Exception:  # a missing, truncated or foreign file is simply rebuilt
            return None

    def _valid(self, meta: dict | None, sample) -> bool:
        return bool(meta) and meta.get("format") == CACHE_FORMAT and meta.get("encoder") == self.identity \
            and meta.get("size") == self.size and meta.get("source") == _source_stamp(sample.image_path)  # fmt: skip

    def build(
        self, datasets: list[tuple[str, object]], kinds: Iterable[str] = DEFAULT_VIEWS, seed: int = 0,
        progress: bool = True, batch_views: int = 1, shard: tuple[int, int] = (0, 1),
    ) -> dict[str, int]:
        """Encode every object's missing views; ``datasets`` are ``(name, PartDataset)``. Returns counts.

        Pass 1 writes each object's ``full`` view, pass 2 adds the other ``kinds``; entries that
        are up to date are skipped, stale ones (source image, encoders, format) rebuilt.
        ``shard=(i, n)`` takes every n-th object from the i-th (several processes share the work).
        """
        kinds = tuple(kinds)
        counts = {"objects": 0, "encoded_views": 0, "up_to_date": 0}
        todo = [(name, dataset, sample) for name, dataset in datasets for sample in dataset.samples if sample.part_names]
        todo = todo[shard[0] :: shard[1]]
        passes = [("full",)] + ([kinds] if set(kinds) - {"full"} else [])
        from tqdm import tqdm

        for number, pass_kinds in enumerate(passes, 1):
            bar = tqdm(todo, desc=f"cache views (pass {number}/{len(passes)})", disable=not progress, dynamic_ncols=True)
            for name, dataset, sample in bar:
                path = self.path_for(name, sample.sample_id)
                meta = self._read_meta(path)
                valid = self._valid(meta, sample)
                if valid and (number == 1 or meta["kinds"] == list(pass_kinds)):
                    counts["up_to_date"] += number == len(passes)
                    continue
                reuse = meta if valid else None
                counts["encoded_views"] += self._build_one(path, name, sample, pass_kinds, seed, batch_views, reuse)
                counts["objects"] += number == 1
        return counts

    @torch.no_grad()
    def _build_one(
        self, path: Path, dataset: str, sample, kinds: tuple[str, ...], seed: int, batch_views: int, reuse: dict | None
    ) -> int:
        """Write one object's entry; views already in ``reuse`` (its valid metadata) are not encoded again."""
        image = sample.load_image()
        masks = {k: v.astype(bool) for k, v in sample.load_part_masks().items() if k in sample.part_names}
        part_names = tuple(sorted(masks))
        rng = np.random.default_rng([seed, int(hashlib.sha1(path.name.encode()).hexdigest()[:8], 16)])
        views = plan_views(masks, image.shape[:2], kinds, rng)
        inputs, labels = render_views(image, label_map(masks, part_names, image.shape[:2]), views, self.size)
        encoded, start = [], 0
        if reuse is not None:
            old = [ViewSpec(v["kind"], tuple(v["box"]), v["flip"]) for v in reuse["views"]]
            if old == views[: len(old)]:
                with safe_open(str(path), framework="pt") as handle:
                    encoded.append(ViewFeatures(*(handle.get_tensor(k) for k in ("tokens", "edges4", "edges8"))))
                start = len(old)
        encoded += [self.model.encode(inputs[i : i + batch_views]) for i in range(start, len(views), batch_views)]
        features = ViewFeatures(*(torch.cat([p.half() for p in parts]).contiguous() for parts in zip(*encoded)))
        meta = {
            "format": CACHE_FORMAT, "encoder": self.identity, "size": self.size, "source": _source_stamp(sample.image_path),
            "kinds": list(kinds), "dataset": dataset, "sample_id": sample.sample_id, "category": sample.category,
            "part_names": list(part_names), "image_shape": list(image.shape[:2]),
            "views": [{"kind": v.kind, "box": list(v.box), "flip": v.flip} for v in views],
        }  # fmt: skip
        tensors = {
            "tokens": features.tokens, "edges4": features.edges4, "edges8": features.edges8,
            "labels": torch.from_numpy(labels), "pixels": (inputs * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous(),
        }  # fmt: skip
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        save_file(tensors, str(tmp), metadata={"refcut": json.dumps(meta)})
        tmp.replace(path)
        return len(views) - start

    def load(self, datasets: list[tuple[str, object]], progress: bool = True) -> dict[tuple[str, str], CachedObject]:
        """Every up-to-date cached object of ``datasets`` (missing or stale entries are left out)."""
        from tqdm import tqdm

        out: dict[tuple[str, str], CachedObject] = {}
        todo = [(name, sample) for name, dataset in datasets for sample in dataset.samples if sample.part_names]
        for name, sample in tqdm(todo, desc="load view cache", disable=not progress, dynamic_ncols=True):
            path = self.path_for(name, sample.sample_id)
            meta = self._read_meta(path)
            if not self._valid(meta, sample):
                continue
            with safe_open(str(path), framework="pt") as handle:
                t = {key: handle.get_tensor(key) for key in handle.keys()}
            views = [ViewSpec(v["kind"], tuple(v["box"]), v["flip"]) for v in meta["views"]]
            out[(name, sample.sample_id)] = CachedObject(
                name, sample.sample_id, sample.category, tuple(meta["part_names"]), tuple(meta["image_shape"]), views,
                ViewFeatures(t["tokens"], t["edges4"], t["edges8"]), t["labels"].numpy(), t["pixels"].numpy(),
            )  # fmt: skip
        return out
