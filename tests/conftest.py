"""Shared fixtures: a tiny random RefCut model and the path to the shared real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def tiny_model():
    """A freshly initialised ``tiny_test`` RefCut network (seeded)."""
    from refcut.model import ModelConfig, build_model

    torch.manual_seed(0)
    return build_model(ModelConfig.from_preset("tiny_test")).eval()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
