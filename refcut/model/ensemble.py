"""An ensemble of encode-once networks: one frozen encoder pass per view, every member's decoder per click.

Members are trained separately (e.g. the same recipe with other seeds) from the same frozen
encoders, so the ensemble runs the encoders once and shares their output; each member encodes the
view for its decoder (a 1x1 projection), builds its own reference prompt, and decodes every click.
The ensemble's probability is the mean of the members' probabilities (a deep ensemble), returned
as a logit so that callers see the same interface as :class:`EncodeOnceModel`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from refcut.model.click_decoder import ReferenceEncoding, ViewEncoding, ViewFeatures
from refcut.model.encode_once import EncodeOnceConfig, EncodeOnceModel

ENSEMBLE_FAMILY = "encode_once_ensemble"
_PROBABILITY_EPS = 1e-6


@dataclass(frozen=True)
class EnsembleConfig:
    """The members' configurations (saved as ``config.json``); they must share one frozen encoder setup."""

    members: tuple[EncodeOnceConfig, ...]
    name: str = "encode_once_ensemble"

    def __post_init__(self) -> None:
        if not self.members:
            raise ValueError("an ensemble needs at least one member")
        first = self.members[0]
        for index, member in enumerate(self.members[1:], start=1):
            if member.encoder != first.encoder or member.encoder_weights != first.encoder_weights:
                raise ValueError(
                    f"ensemble member {index} ({member.name}) has other frozen encoders than member 0 ({first.name}): "
                    "members must share the encoder configuration and its weights' source"
                )

    @property
    def image_size(self) -> int:
        """The view's square side in pixels (the shared encoder's input)."""
        return self.members[0].image_size

    @property
    def encoder_weights(self) -> str:
        """Where the shared frozen encoders' weights live (see :data:`refcut.model.encode_once.ENCODER_WEIGHTS`)."""
        return self.members[0].encoder_weights

    @property
    def family(self) -> str:
        """The model family name stored in ``config.json``."""
        return ENSEMBLE_FAMILY

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {"name": self.name, "members": [member.to_dict() for member in self.members]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EnsembleConfig":
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        unknown = set(data) - {"name", "members"}
        if unknown:
            raise ValueError(f"unknown ensemble config keys: {sorted(unknown)}")
        if not isinstance(data.get("members"), list):
            raise ValueError("an ensemble config needs a list of 'members'")
        members = tuple(EncodeOnceConfig.from_dict(member) for member in data["members"])
        return cls(members=members, name=data.get("name", cls.name))


class EncodeOnceEnsemble(nn.Module):
    """Encode-once members sharing member 0's frozen encoders; :meth:`decode` averages their probabilities.

    The per-view and per-reference encodings are tuples with one entry per member.
    """

    family = ENSEMBLE_FAMILY

    def __init__(self, config: EnsembleConfig) -> None:
        super().__init__()
        self.config = config
        self.members = nn.ModuleList(EncodeOnceModel(member) for member in config.members)
        for member in self.members[1:]:  # one copy of the frozen encoders, shared
            member.encoder = self.members[0].encoder
            member.edge_encoder = self.members[0].edge_encoder

    @classmethod
    def from_members(cls, members: list[EncodeOnceModel], name: str = "encode_once_ensemble") -> "EncodeOnceEnsemble":
        """An ensemble holding the trained parts of ``members`` (their frozen encoders must be equal)."""
        if not members or not all(isinstance(m, EncodeOnceModel) for m in members):
            raise ValueError("an ensemble is built from one or more encode-once models")
        ensemble = cls(EnsembleConfig(tuple(m.config for m in members), name=name))
        first = members[0].state_dict()
        for index, member in enumerate(members):
            state = member.state_dict()
            for key in (k for k in state if k.startswith(EncodeOnceModel.FROZEN_PREFIXES)):
                if not torch.equal(state[key], first[key]):
                    raise ValueError(f"ensemble member {index} has other frozen encoder weights than member 0 ({key})")
            ensemble.members[index].load_state_dict(state)
        return ensemble

    @property
    def encoder(self) -> nn.Module:
        """The shared frozen ViT encoder."""
        return self.members[0].encoder

    @property
    def edge_encoder(self) -> nn.Module:
        """The shared frozen edge encoder."""
        return self.members[0].edge_encoder

    def train(self, mode: bool = True) -> "EncodeOnceEnsemble":
        super().train(mode)
        for member in self.members:
            member.train(mode)
        return self

    def stored_state_dict(self) -> dict[str, torch.Tensor]:
        """Every member's stored state under ``members.<i>.``; shared frozen encoders (if stored) only under member 0."""
        state: dict[str, torch.Tensor] = {}
        for index, member in enumerate(self.members):
            for key, value in member.stored_state_dict().items():
                if index == 0 or not key.startswith(EncodeOnceModel.FROZEN_PREFIXES):
                    state[f"members.{index}.{key}"] = value
        return state

    @torch.no_grad()
    def encode(self, image: torch.Tensor) -> ViewFeatures:
        """The shared frozen features of views ``B x 3 x S x S``."""
        return self.members[0].encode(image)

    def encode_reference(self, image: torch.Tensor) -> torch.Tensor:
        """Reference features from the shared ViT encoder."""
        return self.members[0].encode_reference(image)

    def reference_prompt(
        self, features: torch.Tensor, positive_mask: torch.Tensor | None, negative_mask: torch.Tensor | None = None
    ) -> tuple[ReferenceEncoding, ...]:
        """Each member's prompt and prototypes (see :meth:`EncodeOnceModel.reference_prompt`)."""
        return tuple(member.reference_prompt(features, positive_mask, negative_mask) for member in self.members)

    def encode_view(self, features: ViewFeatures, image: torch.Tensor | None = None) -> tuple[ViewEncoding, ...]:
        """Each member's click-independent view encoding (``image``: the view's pixels, for ``click_colour`` members)."""
        return tuple(member.encode_view(features, image) for member in self.members)

    def view_unit_features(self, view: tuple[ViewEncoding, ...]) -> torch.Tensor:
        """The view's unit encoder features (the shared encoders': member 0's copy)."""
        return view[0].unit_features

    def decode(
        self,
        view: tuple[ViewEncoding, ...],
        prev_mask: torch.Tensor,
        points: torch.Tensor,
        reference: tuple[ReferenceEncoding, ...] | None = None,
        full_size: bool = True,
    ) -> torch.Tensor:
        """Logit of the members' mean probability, ``B x 1 x S x S`` (``S/4`` with ``full_size=False``)."""
        references = reference if reference is not None else (None,) * len(self.members)
        probability = torch.stack([
            torch.sigmoid(member.decode(member_view, prev_mask, points, member_reference, full_size))
            for member, member_view, member_reference in zip(self.members, view, references)
        ]).mean(0).clamp(_PROBABILITY_EPS, 1 - _PROBABILITY_EPS)
        return torch.logit(probability)
