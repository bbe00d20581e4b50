"""Shared pieces of the weight importers: a tensor-only reader for PyTorch ``.pth`` files,
position-embedding resizing and the load report.

``read_torch_checkpoint`` never runs code from the file. PyTorch checkpoints are pickles;
a pickle names the callables that rebuild its objects, and an ordinary unpickler imports
and calls them. Ours resolves only the handful of names a tensor needs (to our own
rebuild functions) and turns every other name (``isegm.*`` configs, loss objects,
``argparse.Namespace`` ...) into an inert :class:`ForeignObject` that records the name
and its arguments and is never called.
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from refcut.model.backbone import interpolate_pos_embed

_STORAGE_DTYPES: dict[str, torch.dtype] = {
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}


class ForeignObject:
    """Stand-in for any class or function a checkpoint names that is not a tensor part.

    It records what the pickle asked for (``name``, call ``args``, ``state``) and does
    nothing else: no import happens and no foreign code runs.
    """

    foreign_name = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> "ForeignObject":
        obj = super().__new__(cls)
        obj.args, obj.kwargs, obj.state, obj.items = args, kwargs, None, []
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # arguments already recorded by __new__
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items.append((key, value))

    def append(self, value: Any) -> None:
        self.items.append(value)

    def extend(self, values: Any) -> None:
        self.items.extend(values)

    def __repr__(self) -> str:
        return f"<foreign {self.foreign_name}>"


@dataclass(frozen=True)
class _StorageType:
    dtype: torch.dtype


def _rebuild_tensor(storage: torch.Tensor, offset: int, size: tuple, stride: tuple, *_: Any) -> torch.Tensor:
    return torch.as_strided(storage, tuple(size), tuple(stride), offset).clone()


def _rebuild_parameter(data: Any, *_: Any) -> Any:
    return data


def _ordered_dict(*args: Any) -> collections.OrderedDict:
    return collections.OrderedDict(*args)


_ALLOWED: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("collections", "OrderedDict"): _ordered_dict,
    ("torch", "Size"): tuple,
    ("builtins", "set"): set,
    ("__builtin__", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("__builtin__", "frozenset"): frozenset,
}


class _TensorOnlyUnpickler(pickle.Unpickler):
    """Resolves tensor-building names only; storages come from the zip archive."""

    def __init__(self, file: io.BufferedIOBase, archive: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(file)
        self.archive = archive
        self.prefix = prefix
        self.foreign_names: set[str] = set()
        self._storages: dict[str, torch.Tensor] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        full = f"{module}.{name}"
        self.foreign_names.add(full)
        return type(name, (ForeignObject,), {"foreign_name": full, "__module__": "refcut.weights.foreign"})

    def persistent_load(self, pid: Any) -> torch.Tensor:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        storage_type, key = pid[1], str(pid[2])
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unsupported storage type {storage_type!r}")
        if key not in self._storages:
            try:
                raw = bytearray(self.archive.read(f"{self.prefix}data/{key}"))
            except KeyError as error:
                raise pickle.UnpicklingError(f"storage {key} is missing from the archive") from error
            self._storages[key] = (
                torch.frombuffer(raw, dtype=storage_type.dtype) if raw else torch.empty(0, dtype=storage_type.dtype)
            )
        return self._storages[key]


@dataclass
class TorchCheckpoint:
    """The content of a ``.pth`` file read without running its code."""

    data: Any
    foreign_names: set[str]
    """Every non-tensor class/function the file referenced (replaced by :class:`ForeignObject`)."""


def read_torch_checkpoint(path: str | Path) -> TorchCheckpoint:
    """Read tensors (and plain containers) from a PyTorch zip checkpoint without unpickling foreign objects.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for files that are
    not PyTorch zip checkpoints (the pre-1.6 legacy format is not supported).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"{path} is not a PyTorch zip checkpoint (legacy pre-1.6 pickles are not supported; "
            "re-save it with torch>=1.6 in a trusted environment)"
        )
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("data.pkl")]
        if len(pickles) != 1:
            raise ValueError(f"{path} does not look like a PyTorch checkpoint (found {len(pickles)} data.pkl entries)")
        prefix = pickles[0][: -len("data.pkl")]
        byteorder = f"{prefix}byteorder"
        if byteorder in archive.namelist() and archive.read(byteorder).strip() != b"little":
            raise ValueError(f"{path} stores big-endian tensors, which are not supported")
        unpickler = _TensorOnlyUnpickler(io.BytesIO(archive.read(pickles[0])), archive, prefix)
        try:
            data = unpickler.load()
        except (pickle.UnpicklingError, EOFError, TypeError, ValueError, RuntimeError) as error:
            raise ValueError(f"cannot read {path}: {error}") from error
    return TorchCheckpoint(data, unpickler.foreign_names)


def tensors_only(mapping: Any, what: str) -> dict[str, torch.Tensor]:
    """Check that ``mapping`` is a ``{name: tensor}`` dict and return it as a plain dict."""
    if not isinstance(mapping, dict):
        raise ValueError(f"{what} is not a dict of tensors (got {type(mapping).__name__})")
    bad = [k for k, v in mapping.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{what} holds non-tensor entries: {bad[:5]}")
    return dict(mapping)


def resize_pos_embed(pos_embed: torch.Tensor, grid: int) -> torch.Tensor:
    """``1 x (1 + G²) x D`` (class slot first) -> ``1 x (1 + grid²) x D``, patch part resized bicubically."""
    if pos_embed.ndim != 3 or pos_embed.shape[0] != 1:
        raise ValueError(f"position embedding must be 1 x (1 + G*G) x D, got {tuple(pos_embed.shape)}")
    patch = interpolate_pos_embed(pos_embed, (grid, grid)).reshape(1, grid * grid, -1)
    return torch.cat([pos_embed[:, :1], patch], dim=1)


@dataclass
class LoadReport:
    """What an import did: keys loaded, model keys left at their init, source keys not used."""

    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    """Model keys the source did not provide (they keep their initialisation)."""
    unexpected: list[str] = field(default_factory=list)
    """Source keys with no place in the model (an error when strict)."""
    ignored: list[str] = field(default_factory=list)
    """Source keys known to be unused (dropped on purpose)."""
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly summary (stored in the imported model's ``config.json``)."""
        return {
            "source": self.source,
            "loaded": len(self.loaded),
            "missing": self.missing,
            "unexpected": self.unexpected,
            "ignored": self.ignored,
            "notes": self.notes,
        }

    def summary(self) -> str:
        """Human-readable multi-line summary."""
        lines = [f"{self.source}: loaded {len(self.loaded)} tensors"]
        for label, keys in (("kept at init", self.missing), ("unexpected", self.unexpected), ("ignored", self.ignored)):
            if keys:
                shown = ", ".join(keys[:8]) + (f", ... ({len(keys)} total)" if len(keys) > 8 else "")
                lines.append(f"  {label}: {shown}")
        lines.extend(f"  note: {note}" for note in self.notes)
        return "\n".join(lines)


def load_state_checked(
    model: torch.nn.Module, state: dict[str, torch.Tensor], report: LoadReport, required_prefixes: tuple[str, ...]
) -> LoadReport:
    """Copy ``state`` into ``model``; every model key under ``required_prefixes`` must be provided.

    Shapes must match exactly. Keys of ``state`` unknown to the model are errors.
    Model keys outside ``required_prefixes`` that ``state`` lacks are listed as
    ``report.missing`` and keep their initialisation.
    """
    own = model.state_dict()
    unknown = sorted(set(state) - set(own))
    if unknown:
        raise ValueError(f"{report.source}: keys with no place in the model: {unknown[:8]}")
    wrong = [
        f"{k}: {tuple(v.shape)} vs model {tuple(own[k].shape)}" for k, v in state.items() if v.shape != own[k].shape
    ]
    if wrong:
        raise ValueError(f"{report.source}: shape mismatch for {len(wrong)} tensors, e.g. {wrong[:4]}")
    required = [k for k in own if k.startswith(required_prefixes)]
    absent = [k for k in required if k not in state]
    if absent:
        raise ValueError(f"{report.source}: does not provide {len(absent)} required tensors, e.g. {absent[:6]}")
    result = model.load_state_dict(state, strict=False)
    report.loaded = sorted(state)
    report.missing = sorted(result.missing_keys)
    return report
