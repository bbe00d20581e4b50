"""``refcut train``: train or fine-tune a RefCut model (one process, or one per GPU under torchrun)."""

from __future__ import annotations

import os
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add ``train`` to ``app``."""

    @app.command("train")
    def train_command(
        output: Path = typer.Option(None, "--output", "-o", help="New run folder (config, logs, checkpoints, final/)."),
        resume: Path = typer.Option(None, "--resume", help="Continue the run in this folder exactly where it stopped."),
        config: Path = typer.Option(None, "--config", "-c", help="YAML config to start from (defaults otherwise)."),
        overrides: list[str] = typer.Option(
            [], "--set", help="Override a config field, e.g. --set optim.lr=1e-4 --set data.num_workers=4."
        ),
        data: list[str] = typer.Option(
            [], "--data", "-d", help="Training dataset PATH or PATH:format (repeatable; the train split is used)."
        ),
        steps: int = typer.Option(None, help="Total optimizer steps."),
        batch_size: int = typer.Option(None, help="Batch size per process (effective = this x processes)."),
        lr: float = typer.Option(None, help="Base learning rate."),
        seed: int = typer.Option(None, help="Run seed (data, clicks, init)."),
        preset: str = typer.Option(None, help="Model preset (vit_small_dinov2, vit_base, tiny_test, encode_once_vits14, ...)."),
        image_size: int = typer.Option(None, help="Network input size (multiple of the patch size)."),
        init: str = typer.Option(None, help="scratch, dinov2, or a native model dir / SimpleClick .pth to start from."),
        freeze_blocks: int = typer.Option(None, help="Freeze the first K backbone blocks (and the embeddings)."),
        workers: int = typer.Option(None, help="DataLoader worker processes."),
        device: str = typer.Option(None, help="auto, cpu, cuda, cuda:N."),
        threads: int = typer.Option(None, help="CPU threads per process (torch intra-op)."),
        precision: str = typer.Option(None, help="auto (fp16 AMP on GPU, fp32 on CPU), fp32, bf16, fp16."),
        no_reference: bool = typer.Option(
            None, "--no-reference/--with-reference", help="Baseline: never use a reference (prompts always zero)."
        ),
        save_fp16: bool = typer.Option(None, "--fp16-weights/--fp32-weights", help="Store the final weights in fp16."),
        stop_at: int = typer.Option(None, help="Stop this invocation at this step (checkpoint kept; --resume later)."),
        print_config: bool = typer.Option(False, "--print-config", help="Print the effective config and exit."),
        no_progress: bool = typer.Option(False, "--no-progress", help="Hide the progress bar."),
    ) -> None:
        """Train with the reference-guided iterative click recipe; configs are saved as RUN/config.yaml."""
        from refcut.training.config import TrainConfig
        from refcut.training.trainer import CONFIG_YAML, train

        explicit = {
            "steps": steps, "batch_size": batch_size, "optim.lr": lr, "seed": seed, "model.preset": preset,
            "model.image_size": image_size, "model.init": init, "optim.freeze_blocks": freeze_blocks,
            "data.num_workers": workers, "device": device, "threads": threads, "precision": precision,
            "no_reference": no_reference,
            "save_fp16": save_fp16,
        }
        try:
            if (output is None) == (resume is None):
                raise ValueError("pass exactly one of --output RUN_DIR (new run) or --resume RUN_DIR")
            if resume is not None:
                if config is not None:
                    raise ValueError("--resume takes the config saved in the run folder; drop --config")
                run_dir, base = resume, TrainConfig.load_yaml(resume / CONFIG_YAML)
            else:
                run_dir = output
                if (run_dir / CONFIG_YAML).exists():
                    raise ValueError(f"{run_dir} already holds a run; use --resume {run_dir} or another --output")
                base = TrainConfig.load_yaml(config) if config is not None else TrainConfig()
            merged = base.with_overrides(list(overrides))
            merged = merged.with_overrides({k: v for k, v in explicit.items() if v is not None})
            if data:
                merged = merged.with_overrides({"data.datasets": list(data)})
        except (ValueError, FileNotFoundError) as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(2) from error
        if print_config:
            import yaml

            typer.echo(yaml.safe_dump(merged.to_dict(), sort_keys=False))
            return
        try:
            result = train(merged, run_dir, resume=resume is not None, progress=not no_progress, stop_at=stop_at)
        except (ValueError, FileNotFoundError) as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(2) from error
        if os.environ.get("RANK", "0") == "0":
            typer.echo(f"model written to {result}")

    @app.command("cache-views")
    def cache_views_command(
        data: list[str] = typer.Option(..., "--data", "-d", help="Training dataset PATH or PATH:format (repeatable)."),
        cache: Path = typer.Option(None, "--cache", help="Cache folder (default $REFCUT_CACHE/views-<size>px)."),
        views: str = typer.Option("full,flip,object,part", help="View kinds per object, comma-separated."),
        preset: str = typer.Option("encode_once_vits14", help="Encode-once preset (gives the encoders and input size)."),
        seed: int = typer.Option(0, help="Seed of the crop boxes (the training run's seed)."),
        threads: int = typer.Option(None, help="CPU threads (torch intra-op)."),
        shard: str = typer.Option("0/1", help="i/n: this process takes every n-th object from the i-th."),
        no_progress: bool = typer.Option(False, "--no-progress", help="Hide the progress bars."),
    ) -> None:
        """Encode the training views of the encode-once family once (resumable; `refcut train` reuses them)."""
        import torch

        from refcut.training.config import TrainConfig
        from refcut.training.trainer import build_initial_model, dataset_names, open_training_datasets, open_view_cache

        if threads:
            torch.set_num_threads(threads)
        try:
            from refcut.evaluation.runner import parse_shard

            shard_index, shard_count = parse_shard(shard)
            config = TrainConfig().with_overrides({
                "model.preset": preset, "data.datasets": list(data), "seed": seed,
                "data.views": [v.strip() for v in views.split(",") if v.strip()],
                "data.view_cache": str(cache) if cache is not None else None,
            })
            model = build_initial_model(config).eval()
            if not hasattr(model, "encode_view"):
                raise ValueError(f"preset {preset!r} is not an encode-once preset")
            datasets = open_training_datasets(config.data.datasets)
            store = open_view_cache(config, model)
            counts = store.build(list(zip(dataset_names(config.data.datasets), datasets)), config.data.views,
                                 seed=seed, progress=not no_progress, shard=(shard_index, shard_count))
        except (ValueError, FileNotFoundError, PermissionError) as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(2) from error
        typer.echo(f"view cache {store.root}: {counts}")
