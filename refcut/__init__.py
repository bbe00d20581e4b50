"""RefCut: interactive segmentation with reference guidance."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["RefCutPredictor", "PredictionResult", "__version__"]


def __getattr__(name: str) -> Any:
    # Imported lazily so light commands (dataset tools, exports) do not pay for torch.
    if name == "RefCutPredictor":
        from refcut.predictor.predictor import RefCutPredictor

        return RefCutPredictor
    if name == "PredictionResult":
        from refcut.predictor.base import PredictionResult

        return PredictionResult
    raise AttributeError(f"module 'refcut' has no attribute {name!r}")
