"""Datasets of parts and objects, evaluation episodes, training pairs and reference perturbations."""

from refcut.data.dataset import PartDataset, detect_format, open_dataset
from refcut.data.episodes import (
    EpisodeData,
    build_episodes,
    episode_list_hash,
    load_episode,
    load_episodes,
    save_episodes,
    summarize_episodes,
)
from refcut.data.pairs import TrainingPair, TrainingPairSampler
from refcut.data.perturb import downscale_reference, polygonize_mask
from refcut.data.sample import Episode, PartSample

__all__ = [
    "PartSample", "Episode", "PartDataset", "open_dataset", "detect_format", "build_episodes", "save_episodes",
    "load_episodes", "episode_list_hash", "summarize_episodes", "EpisodeData", "load_episode", "TrainingPair",
    "TrainingPairSampler", "polygonize_mask", "downscale_reference",
]
