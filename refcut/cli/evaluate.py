"""``refcut eval`` and ``refcut eval-merge``: the click protocol over datasets, with tables and plots."""

from __future__ import annotations

from pathlib import Path

import typer

from refcut.evaluation.protocol import REFERENCE_MODES


def _split_list(text: str | None, cast=str) -> list:
    if not text:
        return []
    try:
        return [cast(item.strip()) for item in text.split(",") if item.strip()]
    except ValueError as error:
        raise typer.BadParameter(f"cannot parse {text!r}: {error}") from error


def register(app: typer.Typer) -> None:
    """Add ``eval`` and ``eval-merge`` to ``app``."""

    @app.command("eval")
    def eval_command(
        datasets: list[Path] = typer.Argument(..., help="Dataset folder(s); one column group each in Table 1."),
        method: list[str] = typer.Option(
            ..., "--method", "-m",
            help="grabcut, oracle, empty, or a model folder, as [NAME=]SOURCE[@MODE+MODE] "
                 "(e.g. refcut=runs/a/final, baseline=runs/b/final@none); repeat for several methods.",
        ),
        modes: str = typer.Option(
            ",".join(REFERENCE_MODES), help="Reference modes for model methods (baselines always run 'none')."
        ),
        split: str = typer.Option("heldout", help="Dataset split to evaluate."),
        out: Path = typer.Option(..., "--out", "-o", help="Run folder (created; rerun the command to resume)."),
        limit: int = typer.Option(None, help="Evaluate only N evenly spaced episodes per dataset."),
        workers: int = typer.Option(1, help="Worker processes (each builds its own predictor)."),
        shard: str = typer.Option(None, help="Evaluate shard i of n (0-based 'i/n'); join with eval-merge."),
        max_clicks: int = typer.Option(20, help="Clicks per episode."),
        polygon_steps: str = typer.Option(None, help="Ablation: reference polygon steps, e.g. 0,4,16,64."),
        reference_scales: str = typer.Option(None, help="Ablation: reference scales, e.g. 1,0.5,0.25."),
        ablation_mode: str = typer.Option("both", help="Reference mode used by the ablations."),
        no_progress: bool = typer.Option(False, "--no-progress", help="Hide the progress bar."),
    ) -> None:
        """Evaluate methods with the standard click protocol and write results.json, table.md and plots."""
        from refcut.evaluation.runner import build_configs, parse_shard, run_evaluation

        try:
            configs = build_configs(
                method, _split_list(modes), max_clicks=max_clicks,
                polygon_steps=_split_list(polygon_steps, int), reference_scales=_split_list(reference_scales, float),
                ablation_mode=ablation_mode,
            )
            for path in datasets:
                if not path.exists():
                    raise FileNotFoundError(f"dataset folder {path} does not exist")
            run_dir = run_evaluation(
                [str(p) for p in datasets], configs, out, split=split, limit=limit, workers=workers,
                shard=parse_shard(shard), progress=not no_progress,
            )
        except (ValueError, FileNotFoundError) as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(2) from error
        typer.echo((run_dir / "table.md").read_text())
        typer.echo(f"results in {run_dir}")

    @app.command("eval-merge")
    def eval_merge_command(
        out: Path = typer.Argument(..., help="Folder for the merged run."),
        run_dirs: list[Path] = typer.Argument(..., help="Shard run folders of one 'refcut eval' run."),
    ) -> None:
        """Merge the shard folders of one run into a single results folder (checked complete)."""
        from refcut.evaluation.runner import merge_runs

        try:
            merged = merge_runs(out, run_dirs)
        except (ValueError, FileNotFoundError) as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(2) from error
        typer.echo((merged / "table.md").read_text())
        typer.echo(f"merged results in {merged}")
