"""``refcut episodes DATASET``: count samples, parts and evaluation episodes, and write the list."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import typer

from refcut.data.episodes import EPISODE_KINDS


def print_dataset_summary(dataset) -> None:
    """Samples, categories and parts per category."""
    typer.echo(f"dataset: {dataset.name} (format {dataset.format}, kind {dataset.kind}, root {dataset.root})")
    typer.echo(f"samples: {len(dataset)}")
    groups = dataset.categories()
    for category in sorted(groups, key=lambda c: (c is None, str(c))):
        members = groups[category]
        counts = Counter(p for s in members for p in s.part_names)
        typer.echo(f"category {category}: {len(members)} samples, {len(counts)} parts")
        for part, count in sorted(counts.items()):
            typer.echo(f"  part {part}: {count}")


def print_episode_summary(summary: dict) -> None:
    """One line per kind (single / pair / whole / object) and the skipped total."""
    for kind in EPISODE_KINDS:
        row = summary.get(kind, {"total": 0, "with_reference": 0, "skipped": 0})
        typer.echo(f"episodes {kind}: {row['total']} (with reference {row['with_reference']}, skipped {row['skipped']})")
    total = summary.get("all", {"total": 0, "skipped": 0})
    typer.echo(f"episodes skipped: {total['skipped']}")
    typer.echo(f"episodes total: {total['total']}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""

    @app.command("episodes")
    def episodes_command(
        dataset_path: Path = typer.Argument(..., metavar="DATASET", help="Dataset folder (or COCO .json)."),
        format: str = typer.Option(None, "--format", help="Force a format: parts_folder, coco_parts, "
                                   "partimagenet_png, pascal_part, ccp, object_folder."),
        split: str = typer.Option("all", "--split", help="all | train | heldout (held out: sha1(image stem) % 5 == 0)."),
        out: Path = typer.Option(Path("episodes.json"), "--out", help="Where to write the episode list (json)."),
        show: int = typer.Option(0, "--show", help="Draw N episodes into --show-out."),
        show_out: Path = typer.Option(Path("episodes.png"), "--show-out", help="PNG for --show."),
        adjacency_px: int = typer.Option(2, "--adjacency-px", help="Parts within this many px (square dilation) form a pair."),
    ) -> None:
        """Print counts of samples, parts per category and episodes per kind; write the episode list."""
        from refcut import __version__
        from refcut.data.dataset import open_dataset
        from refcut.data.episodes import build_episodes, episode_list_hash, save_episodes, summarize_episodes

        start = time.perf_counter()
        try:
            dataset = open_dataset(dataset_path, format=format, split=split)
        except (FileNotFoundError, ValueError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(code=2) from exc
        opened = time.perf_counter()
        print_dataset_summary(dataset)
        typer.echo(f"split: {split}")
        episodes = build_episodes(dataset, adjacency_px=adjacency_px)
        built = time.perf_counter()
        summary = summarize_episodes(episodes)
        print_episode_summary(summary)
        for note in dataset.notes:
            typer.echo(f"note: {note}")
        if dataset.problems:
            typer.echo(f"problems: {len(dataset.problems)} (files skipped)")
            for problem in dataset.problems[:20]:
                typer.echo(f"  {problem}")
        meta = {
            "dataset": dataset.name, "path": str(dataset_path), "format": dataset.format, "split": split,
            "adjacency_px": adjacency_px, "samples": len(dataset), "summary": summary, "refcut_version": __version__,
        }
        save_episodes(out, episodes, meta)
        typer.echo(f"wrote {len(episodes)} episodes to {out} (hash {episode_list_hash(episodes)[:12]})")
        if show > 0:
            from refcut.data.visualize import draw_episodes

            typer.echo(f"picture: {draw_episodes(dataset, episodes, show_out, show)}")
        typer.echo(f"time: open {opened - start:.1f}s, episodes {built - opened:.1f}s")
