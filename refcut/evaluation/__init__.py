"""Evaluation: the field's click protocol, metrics, baselines, runs and reports."""

from refcut.evaluation.baselines import (
    EmptyPredictor,
    GrabCutPredictor,
    NoReferencePredictor,
    OraclePredictor,
    load_predictor,
)
from refcut.evaluation.metrics import number_of_clicks, summarize
from refcut.evaluation.protocol import EpisodeData, EpisodeResult, evaluate_episode, iou

__all__ = [
    "EmptyPredictor",
    "EpisodeData",
    "EpisodeResult",
    "GrabCutPredictor",
    "NoReferencePredictor",
    "OraclePredictor",
    "evaluate_episode",
    "iou",
    "load_predictor",
    "number_of_clicks",
    "summarize",
]
