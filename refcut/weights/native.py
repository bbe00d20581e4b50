"""The native weight format: ``config.json`` + ``model.safetensors`` (a plain state dict)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from refcut.model import ModelConfig, RefCutModel, build_model

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


def read_config(config_path: Path) -> tuple[ModelConfig, dict]:
    """Parse ``config.json`` -> ``(ModelConfig, metadata)``."""
    try:
        data = json.loads(Path(config_path).read_text())
        model = ModelConfig.from_dict(data["model"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{config_path} is not a RefCut model config: {error}") from error
    return model, {k: v for k, v in data.items() if k != "model"}


def load_pretrained(path: str | Path) -> tuple[RefCutModel, dict]:
    """Build the model from its config and load its weights strictly (missing or extra keys are errors)."""
    config_path, weights_path = resolve_weights(path)
    config, meta = read_config(config_path)
    model = build_model(config)
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(weights_path)).items()}
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"{weights_path} does not match its config: missing {result.missing_keys[:5]}"
            f"{'...' if len(result.missing_keys) > 5 else ''}, unexpected {result.unexpected_keys[:5]}"
        )
    return model.eval(), meta


def save_pretrained(
    model: RefCutModel, directory: str | Path, metadata: dict | None = None, dtype: torch.dtype = torch.float32
) -> Path:
    """Write ``config.json`` and ``model.safetensors`` (optionally fp16) into ``directory``."""
    from refcut import __version__

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
    tmp = directory / (WEIGHTS_NAME + ".tmp")
    save_file(state, str(tmp), metadata={"format": "refcut", "format_version": str(FORMAT_VERSION)})
    tmp.replace(directory / WEIGHTS_NAME)
    config = {"format_version": FORMAT_VERSION, "refcut_version": __version__, "model": model.config.to_dict()}
    config.update(metadata or {})
    (directory / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    return directory
