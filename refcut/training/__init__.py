"""Training: configs, the NFL loss, augmentations, click sampling and the trainer (``refcut train``)."""

from refcut.training.config import DataConfig, ModelSetup, OptimConfig, TrainConfig
from refcut.training.losses import normalized_focal_loss

__all__ = ["TrainConfig", "DataConfig", "OptimConfig", "ModelSetup", "normalized_focal_loss"]
