"""RefCut: interactive segmentation with reference guidance."""

__version__ = "0.1.0"

from refcut.predictor.predictor import PredictionResult, RefCutPredictor  # noqa: E402

__all__ = ["RefCutPredictor", "PredictionResult", "__version__"]
