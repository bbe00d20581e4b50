"""The native weight format: ``config.json`` + ``model.safetensors`` (a plain state dict)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from refcut.model import ModelConfig, RefCutModel, build_model
from refcut.model.encode_once import FAMILY as ENCODE_ONCE, EncodeOnceConfig, EncodeOnceModel
from refcut.model.ensemble import ENSEMBLE_FAMILY, EncodeOnceEnsemble, EnsembleConfig

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_VERSION = 1
DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[1] / "assets" / "models" / "default"


def resolve_weights(path: str | Path) -> tuple[Path, Path]:
    """Find ``(config.json, weights.safetensors)`` for a directory or a ``.safetensors`` file.

    A file ``X.safetensors`` takes its configuration from ``X.json`` beside it, or
    else from ``config.json`` in the same folder.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"no model at {path}")
    if path.is_dir():
        config, weights = path / CONFIG_NAME, path / WEIGHTS_NAME
    elif path.suffix == ".safetensors":
        weights = path
        config = path.with_suffix(".json")
        if not config.exists():
            config = path.parent / CONFIG_NAME
    elif path.suffix in {".pth", ".pt", ".ckpt"}:
        raise ValueError(
            f"{path} is a PyTorch pickle checkpoint; convert it first with `refcut import-weights {path} OUT_DIR`"
        )
    else:
        raise ValueError(f"{path} is neither a model directory nor a .safetensors file")
    for needed in (config, weights):
        if not needed.exists():
            raise FileNotFoundError(f"model at {path} is missing {needed.name}")
    return config, weights


EARLY_FUSION = "early_fusion"
AnyModel = RefCutModel | EncodeOnceModel | EncodeOnceEnsemble


def read_config(config_path: Path) -> tuple[ModelConfig | EncodeOnceConfig | EnsembleConfig, dict]:
    """Parse ``config.json`` -> ``(model config, metadata)``; ``family`` picks the config class."""
    try:
        data = json.loads(Path(config_path).read_text())
        family = data.get("family", EARLY_FUSION)
        if family == ENCODE_ONCE:
            model = EncodeOnceConfig.from_dict(data["model"])
        elif family == ENSEMBLE_FAMILY:
            model = EnsembleConfig.from_dict(data["model"])
        elif family == EARLY_FUSION:
            model = ModelConfig.from_dict(data["model"])
        else:
            raise ValueError(f"unknown model family {family!r} (known: {EARLY_FUSION}, {ENCODE_ONCE}, {ENSEMBLE_FAMILY})")
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{config_path} is not a RefCut model config: {error}") from error
    return model, {k: v for k, v in data.items() if k not in ("model", "family")}


def build_any_model(config: ModelConfig | EncodeOnceConfig | EnsembleConfig) -> AnyModel:
    """A freshly initialised network of any family (encode-once and ensembles: packaged encoders loaded)."""
    if isinstance(config, (EncodeOnceConfig, EnsembleConfig)):
        model = EncodeOnceModel(config) if isinstance(config, EncodeOnceConfig) else EncodeOnceEnsemble(config)
        if config.encoder_weights == "packaged":
            from refcut.weights.frozen_encoders import load_frozen_encoders

            load_frozen_encoders(model)
        return model
    return build_model(config)


def stored_state(model: AnyModel) -> dict[str, torch.Tensor]:
    """The tensors a checkpoint stores (the encode-once family leaves out its packaged frozen encoders)."""
    return model.state_dict() if isinstance(model, RefCutModel) else model.stored_state_dict()


def load_stored_state(model: AnyModel, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """Load :func:`stored_state` tensors; any missing or extra key is an error naming ``source``."""
    expected = stored_state(model)
    state = {k: v.to(expected[k].dtype) if k in expected and v.is_floating_point() else v for k, v in state.items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{source} does not match its config: missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}"
        )
    model.load_state_dict(state, strict=False)


def load_pretrained(path: str | Path) -> tuple[AnyModel, dict]:
    """Build the model from its config and load its weights strictly (missing or extra keys are errors)."""
    config_path, weights_path = resolve_weights(path)
    config, meta = read_config(config_path)
    model = build_any_model(config)
    load_stored_state(model, load_file(str(weights_path)), weights_path)
    return model.eval(), meta


def save_pretrained(
    model: AnyModel, directory: str | Path, metadata: dict | None = None, dtype: torch.dtype = torch.float32
) -> Path:
    """Write ``config.json`` and ``model.safetensors`` (optionally fp16) into ``directory``."""
    from refcut import __version__

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in stored_state(model).items()}
    tmp = directory / (WEIGHTS_NAME + ".tmp")
    save_file(state, str(tmp), metadata={"format": "refcut", "format_version": str(FORMAT_VERSION)})
    tmp.replace(directory / WEIGHTS_NAME)
    family = EARLY_FUSION if isinstance(model, RefCutModel) else model.family
    config = {"format_version": FORMAT_VERSION, "refcut_version": __version__, "family": family,
              "model": model.config.to_dict()}
    config.update(metadata or {})
    (directory / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    return directory
