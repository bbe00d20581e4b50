"""Draw a model's known failure cases (for docs/model-card.md) from a ``refcut eval`` run folder.

For each dataset of the run, the ``--per-dataset`` episodes of ``--method`` / ``--mode`` (study
``main``) with the highest NoC@85 (ties: lowest IoU after ``--clicks``) are rebuilt exactly as the
evaluation builds them (``plan_dataset`` + ``load_episode`` with the run's split and limit) and
replayed with the evaluation's click protocol (``iter_episode``) for ``--clicks`` clicks. One row per
episode: the reference with its positive (green) / negative (red) masks, the target with its ground
truth, and the prediction after K clicks with the clicks (green positive, red negative) and its IoU.
One line per episode is printed (dataset, episode id, kind, NoC@85, IoU after K).

Usage: python scripts/failure_cases.py --run RUN_DIR --method refcut [--mode both] [--per-dataset 2]
           [--clicks 3] [--model DIR|SPEC] [--out docs/screenshots/failure_cases.png]
``--model`` defaults to the shipped default model; a method spec such as ``PATH+grabcut-band`` works
(``refcut.evaluation.baselines.load_predictor``). Give the run's own method spec to reproduce its
numbers: a replayed IoU that differs from the csv is warned about. (``refcut eval --method PATH`` runs
the network without the ``predictor.refine`` step of the model's config.json, while the default
``from_pretrained()`` applies it, so the shipped model's row can differ from a run of its folder.)
"""

from __future__ import annotations

import argparse
import csv
import importlib
import io
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from refcut.evaluation.baselines import load_predictor, method_label  # noqa: E402
from refcut.evaluation.protocol import EpisodeData, iter_episode  # noqa: E402
from refcut.evaluation.runner import RUN_CONFIG_FILE, plan_dataset, to_episode_data  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MAX_PNG_BYTES = 1_500_000


def pick_rows(run: Path, method: str, mode: str, per_dataset: int, clicks: int) -> dict[str, list[dict]]:
    """The csv rows to draw, per dataset: highest NoC@85 first, ties by lowest ``iou_{clicks}``."""
    csv_path = run / "per_episode.csv"
    if not csv_path.exists():
        raise SystemExit(f"{csv_path} not found: --run must be a folder written by `refcut eval`")
    with csv_path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    labels = sorted({method_label(r["method"]) for r in rows} | {r["method"] for r in rows})
    rows = [r for r in rows if method in (r["method"], method_label(r["method"]))]
    if not rows:
        raise SystemExit(f"method {method!r} is not in {csv_path}; it has: {', '.join(labels)}")
    iou_column = f"iou_{clicks}"
    if iou_column not in rows[0]:
        raise SystemExit(f"{csv_path} has no {iou_column} column: the run made fewer than {clicks} clicks")
    rows = [r for r in rows if r["mode"] == mode and r["study"] == "main"]
    if not rows:
        raise SystemExit(f"{csv_path}: method {method!r} has no study 'main' rows in mode {mode!r}")
    picked: dict[str, list[dict]] = {}
    for r in sorted(rows, key=lambda r: (-int(r["NoC@85"]), float(r[iou_column]), int(r["episode_index"]))):
        if len(picked.setdefault(r["dataset"], [])) < per_dataset:
            picked[r["dataset"]].append(r)
    return picked


def load_episodes(run: Path, picked: dict[str, list[dict]]) -> list[tuple[dict, EpisodeData]]:
    """Rebuild the picked episodes as the run did (same split, limit and data module)."""
    config_path = run / RUN_CONFIG_FILE
    if not config_path.exists():
        raise SystemExit(f"{config_path} not found: --run must be a folder written by `refcut eval`")
    settings = json.loads(config_path.read_text())
    api = importlib.import_module(settings["data_module"])
    episodes = []
    for entry in settings["datasets"]:
        if entry["name"] not in picked:
            continue
        plan = plan_dataset(entry["path"], settings["split"], settings["limit"], None, settings["data_module"])
        dataset = api.open_dataset(entry["path"], split=settings["split"])
        selected = dict(plan.selected)
        for row in picked[entry["name"]]:
            episode = selected.get(int(row["episode_index"]))
            if episode is None or episode.episode_id != row["episode_id"]:
                raise SystemExit(f"{entry['path']}: episode {row['episode_index']} is no longer "
                                 f"{row['episode_id']!r}; the dataset changed since the run")
            loaded = api.load_episode(dataset, episode, reference_mode=row["mode"])
            episodes.append((row, to_episode_data(loaded, episode)))
    return episodes


def overlay(image: np.ndarray, *layers: tuple[np.ndarray | None, tuple[float, float, float]]) -> np.ndarray:
    """``image`` (HxWx3 uint8) with each (mask, rgb colour) blended in at 45 %."""
    out = np.asarray(image, dtype=np.float32)[..., :3] / 255.0
    for mask, colour in layers:
        if mask is not None:
            m = np.asarray(mask, dtype=bool)
            out[m] = 0.55 * out[m] + 0.45 * np.asarray(colour, dtype=np.float32)
    return out


def save_png(fig: plt.Figure, out: Path, dpi: int) -> None:
    """Save ``fig``; quantise to 256 colours when the plain PNG would exceed ~1.5 MB."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    data = buffer.getvalue()
    if len(data) > MAX_PNG_BYTES:
        from PIL import Image

        quantised = io.BytesIO()
        Image.open(io.BytesIO(data)).convert("RGB").quantize(256).save(quantised, format="png", optimize=True)
        data = quantised.getvalue()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="eval run folder (per_episode.csv, run_config.json)")
    parser.add_argument("--method", required=True, help="the csv's method (its label, e.g. refcut, or full spec)")
    parser.add_argument("--mode", default="both", help="reference mode (default both)")
    parser.add_argument("--per-dataset", type=int, default=2, help="episodes per dataset (default 2)")
    parser.add_argument("--clicks", type=int, default=3, help="show the mask after K clicks (default 3)")
    parser.add_argument("--model", default=None, help="model folder or method spec (default: the shipped model)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots" / "failure_cases.png")
    parser.add_argument("--dpi", type=int, default=80)
    args = parser.parse_args()
    if args.per_dataset < 1 or args.clicks < 1:
        raise SystemExit("--per-dataset and --clicks must be >= 1")
    if not args.run.is_dir():
        raise SystemExit(f"run folder {args.run} not found")
    episodes = load_episodes(args.run, pick_rows(args.run, args.method, args.mode, args.per_dataset, args.clicks))
    threshold = json.loads((args.run / RUN_CONFIG_FILE).read_text()).get("threshold", 0.49)
    if args.model is None:
        from refcut import RefCutPredictor

        predictor = RefCutPredictor.from_pretrained()
    else:
        predictor = load_predictor(args.model)

    fig, axes = plt.subplots(len(episodes), 3, figsize=(12, 3.2 * len(episodes)), squeeze=False)
    for (row, data), ax in zip(episodes, axes):
        steps = list(iter_episode(predictor, data, args.clicks, threshold, row["mode"]))
        last = steps[-1]
        csv_iou = float(row[f"iou_{args.clicks}"])
        print(f"{row['dataset']}\t{data.episode_id}\t{data.kind}\tNoC@85={row['NoC@85']}\t"
              f"IoU@{args.clicks}={last.iou:.3f}")
        if abs(last.iou - csv_iou) > 1e-3:
            print(f"warning: {data.episode_id}: replayed IoU {last.iou:.4f} != run's {csv_iou:.4f} "
                  "(--model is not the run's method?)", file=sys.stderr)
        if data.reference_image is not None:
            ax[0].imshow(overlay(data.reference_image, (data.positive_mask, (0, 1, 0)),
                                 (data.negative_mask, (1, 0, 0))))
        ax[0].set_title("no reference" if data.reference_image is None else "reference (green +, red −)", fontsize=9)
        ax[1].imshow(overlay(data.image, (data.gt_mask, (1, 0.85, 0)), (data.ignore_mask, (0.5, 0.5, 0.5))))
        ax[1].set_title("target, ground truth", fontsize=9)
        ax[2].imshow(overlay(data.image, (last.pred, (0, 0.6, 1))))
        for click in last.clicks:
            ax[2].plot(click.x, click.y, "o", ms=7, mec="white", mew=1.2, color="lime" if click.is_positive else "red")
        ax[2].set_title(f"after {len(last.clicks)} clicks: IoU {last.iou:.3f}", fontsize=9)
        for a in ax:
            a.set_xticks([])
            a.set_yticks([])
        ax[0].set_ylabel(f"{row['dataset']}\n{data.episode_id}\nNoC@85 = {row['NoC@85']}", fontsize=8)
    fig.tight_layout()
    save_png(fig, args.out, args.dpi)
    print(args.out)


if __name__ == "__main__":
    main()
