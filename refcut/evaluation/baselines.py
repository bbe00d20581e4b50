"""Evaluation methods: ``--method`` specs and :func:`load_predictor`.

:func:`load_predictor` turns a method spec of the CLI (``grabcut``, ``oracle``, ``empty`` or
a model path) into a predictor. The baseline predictors themselves live in
:mod:`refcut.predictor.baselines` (re-exported here).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from refcut.predictor.base import InteractivePredictor
from refcut.predictor.baselines import (
    GRABCUT_STEPS,
    EmptyPredictor,
    GrabCutPredictor,
    NoReferencePredictor,
    OraclePredictor,
)
from refcut.predictor.guided import GUIDED_STEPS

__all__ = [
    "BASELINE_METHODS", "MethodSpec", "load_predictor", "method_label", "method_source", "is_model_method",
    "EmptyPredictor", "GrabCutPredictor", "NoReferencePredictor", "OraclePredictor",
]

BASELINE_METHODS: tuple[str, ...] = ("grabcut", "oracle", "empty")


_METHOD_NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")


@dataclass(frozen=True)
class MethodSpec:
    """A ``--method`` value: ``[NAME=]SOURCE[@MODE+MODE...]``.

    ``SOURCE`` is a baseline name or a model path; ``NAME`` labels it in tables (default: the
    baseline name or the model folder's name); ``@none`` or ``@positive+both`` restricts the
    reference modes it runs (e.g. a no-reference baseline model only needs ``none``).
    """

    source: str
    name: str | None = None
    modes: tuple[str, ...] | None = None

    @classmethod
    def parse(cls, text: str, known_modes: tuple[str, ...] = ()) -> "MethodSpec":
        """Split a command-line value; ``@`` and ``=`` only count when what they mark is valid."""
        if not text.strip():
            raise ValueError("empty --method value")
        modes = None
        head, at, tail = text.rpartition("@")
        if at and head and tail and all(mode in known_modes for mode in tail.split("+")):
            text, modes = head, tuple(dict.fromkeys(tail.split("+")))
        name, eq, source = text.partition("=")
        if eq and source and _METHOD_NAME.match(name):
            return cls(source=source, name=name, modes=modes)
        return cls(source=text, modes=modes)

    @property
    def spec(self) -> str:
        """``NAME=SOURCE`` (or ``SOURCE``): what configurations and records store as the method."""
        return f"{self.name}={self.source}" if self.name else self.source


def method_source(spec: str) -> str:
    """The baseline name or model path of a stored method spec (drops ``NAME=``)."""
    return MethodSpec.parse(spec).source


def method_label(spec: str) -> str:
    """Short display name: the given NAME, else baselines by name and models by their folder/file name."""
    parsed = MethodSpec.parse(spec)
    if parsed.name:
        return parsed.name
    return parsed.source if not is_model_method(spec) else Path(parsed.source).name or parsed.source


def is_model_method(spec: str) -> bool:
    """True for a model path (reference modes apply), False for the baselines."""
    return method_source(spec) not in BASELINE_METHODS


def load_predictor(spec: str, device: str = "cpu") -> InteractivePredictor:
    """``"grabcut"``, ``"oracle"``, ``"empty"`` or a model path/dir (→ ``RefCutPredictor.from_pretrained``).

    A model path may end in ``+STEP``, a boundary step of ``GRABCUT_STEPS`` (``+grabcut-fine``, ...) or
    ``GUIDED_STEPS`` (``+guided``, ...): the predictor then refines each mask with it (``RefCutPredictor(refine=...)``).
    """
    spec = method_source(spec)
    refine = None
    path, _, suffix = spec.rpartition("+")
    if path and (suffix in GRABCUT_STEPS or suffix in GUIDED_STEPS) and not Path(spec).exists():
        spec, refine = path, suffix
    if spec == "grabcut":
        return GrabCutPredictor()
    if spec == "oracle":
        return OraclePredictor()
    if spec == "empty":
        return EmptyPredictor()
    if not Path(spec).exists():
        raise FileNotFoundError(
            f"method {spec!r} is neither a baseline ({', '.join(BASELINE_METHODS)}) nor an existing model path"
        )
    from refcut import RefCutPredictor  # lazy: the baselines need no torch

    return RefCutPredictor.from_pretrained(spec, device=device, refine=refine)
