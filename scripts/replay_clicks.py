"""Replay fixed clicks on one episode of a ``refcut eval`` run, in every reference mode, and print the IoU after each.

The episode is rebuilt as the run built it (``scripts/failure_cases.py``'s ``load_episodes``); each
click is fed with the previous prediction's probability, as in the evaluation. Use it to see how
one model reacts to a given click sequence with and without the reference (e.g. a negative click
that wipes out a mask only when a reference is set).

Usage: python scripts/replay_clicks.py --run RUN_DIR --dataset clothing-co-parsing --index 57 \
           --episode '0761#person|pair:coat+skin' --clicks 250,302,1 217,137,0 [--model DIR|SPEC]
``--clicks`` are ``x,y,label`` (1 positive, 0 negative) in image pixels; ``--model`` defaults to the
shipped model's network alone (``refine=None``); a method spec such as ``PATH+grabcut-fine`` works.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from failure_cases import load_episodes  # noqa: E402

from refcut.evaluation.baselines import load_predictor  # noqa: E402
from refcut.evaluation.protocol import apply_reference, iou  # noqa: E402

MODES = ("none", "positive", "negative", "both")


def parse_clicks(values: list[str]) -> np.ndarray:
    """``["x,y,label", ...]`` -> ``N x 3`` floats; a clear error for anything else."""
    try:
        clicks = np.array([[float(v) for v in value.split(",")] for value in values])
    except ValueError as error:
        raise SystemExit(f"--clicks must be x,y,label triples: {error}") from None
    if clicks.ndim != 2 or clicks.shape[1] != 3 or not np.isin(clicks[:, 2], (0, 1)).all():
        raise SystemExit("--clicks must be x,y,label triples with label 1 or 0, e.g. 250,302,1")
    return clicks


def replay(predictor, data, clicks: np.ndarray, modes=MODES) -> dict[str, list[float]]:
    """IoU after each of ``clicks`` (``N x 3`` x, y, label) per reference mode, feeding back the probability."""
    predictor.set_image(data.image)
    ious: dict[str, list[float]] = {}
    for mode in modes:
        apply_reference(predictor, data, mode)
        prev, ious[mode] = None, []
        for k in range(1, len(clicks) + 1):
            result = predictor.predict(clicks[:k, :2], clicks[:k, 2].astype(int), prev)
            prev = result.prob
            ious[mode].append(iou(result.mask, data.gt_mask, data.ignore_mask))
    return ious


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="eval run folder (run_config.json)")
    parser.add_argument("--dataset", required=True, help="dataset name in the run, e.g. clothing-co-parsing")
    parser.add_argument("--index", type=int, required=True, help="the episode_index column of per_episode.csv")
    parser.add_argument("--episode", required=True, help="the episode_id column (checked against the run)")
    parser.add_argument("--clicks", nargs="+", required=True, help="x,y,label per click")
    parser.add_argument("--model", default=None, help="model folder or method spec (default: shipped, no refine)")
    args = parser.parse_args()
    clicks = parse_clicks(args.clicks)
    row = {"dataset": args.dataset, "episode_index": str(args.index), "episode_id": args.episode, "mode": "both"}
    (_, data), = load_episodes(args.run, {args.dataset: [row]})
    if args.model is None:
        from refcut import RefCutPredictor

        predictor = RefCutPredictor.from_pretrained(refine=None)
    else:
        predictor = load_predictor(args.model)
    for mode, values in replay(predictor, data, clicks).items():
        print(f"{mode:9s} " + "  ".join(f"{v:.3f}" for v in values))


if __name__ == "__main__":
    main()
