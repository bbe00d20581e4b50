"""The RefCut network and its parts."""

from refcut.model.config import PRESETS, ModelConfig
from refcut.model.refcut import RefCutModel, build_model

__all__ = ["ModelConfig", "PRESETS", "RefCutModel", "build_model"]
