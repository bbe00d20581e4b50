"""Does the reference make a model ignore negative clicks? A controlled replay of an evaluation run.

For every ``both``-mode episode of a ``refcut eval`` run whose click ``--click`` (default 2) was
negative, the recorded clicks up to that one are replayed with the reference (as the run did), and
the negative click's step is predicted twice from the same state: with the reference and with it
cleared. Prints, per dataset, the mean IoU before the click and after it in each variant, and how
often the click made the mask worse (IoU down by more than 0.05). Usage::

    python scripts/negative_click_probe.py --run runs/eval_main --model refcut/assets/models/default+grabcut-fine
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from failure_cases import load_episodes  # noqa: E402

from refcut.evaluation.baselines import load_predictor  # noqa: E402
from refcut.evaluation.protocol import apply_reference, iou  # noqa: E402


def step_ious(predictor, data, clicks: np.ndarray) -> tuple[float, float, float]:
    """IoU before the last of ``clicks`` (``N x 3`` x, y, label), and after it with / without the reference."""
    after = []
    for keep_reference in (True, False):
        apply_reference(predictor, data, "both")
        prev = None
        for k in range(1, len(clicks)):
            result = predictor.predict(clicks[:k, :2], clicks[:k, 2].astype(int), prev)
            prev = result.prob
        before = iou(result.mask, data.gt_mask, data.ignore_mask)
        if not keep_reference:
            predictor.clear_reference()
        last = predictor.predict(clicks[:, :2], clicks[:, 2].astype(int), prev)
        after.append(iou(last.mask, data.gt_mask, data.ignore_mask))
    return before, after[0], after[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="eval run folder (episodes.jsonl, run_config.json)")
    parser.add_argument("--model", required=True, help="the run's model spec, e.g. DIR+grabcut-fine")
    parser.add_argument("--method", default="refcut", help="the method label of the model in the run")
    parser.add_argument("--click", type=int, default=2, help="which click (1-based, > 1) to probe")
    parser.add_argument("--datasets", nargs="*", default=["car-parts", "clothing-co-parsing"])
    args = parser.parse_args()
    if args.click < 2:
        raise SystemExit("--click must be 2 or later (the first click has no previous state)")
    with (args.run / "per_episode.csv").open(newline="") as handle:
        index = {(r["dataset"], r["episode_id"]): r["episode_index"] for r in csv.DictReader(handle)}
    picked: dict[str, list[dict]] = defaultdict(list)
    for line in (args.run / "episodes.jsonl").open():
        record = json.loads(line)
        if (record["mode"] != "both" or record.get("study", "main") != "main" or record["dataset"] not in args.datasets
                or record["reference_scale"] != 1.0 or record["polygon_step"] != 0
                or not (record["method"] == args.method or record["method"].startswith(args.method + "="))
                or len(record["clicks"]) < args.click or record["clicks"][args.click - 1][2] != 0):
            continue
        picked[record["dataset"]].append({"episode_index": index[(record["dataset"], record["episode_id"])],
                                          "episode_id": record["episode_id"], "mode": "both",
                                          "clicks": record["clicks"][: args.click]})
    predictor = load_predictor(args.model)
    print(f"| dataset | episodes (click {args.click} negative) | IoU before | after, reference kept | after, reference "
          "cleared | worse by > 0.05: kept / cleared |")
    print("|---|---|---|---|---|---|")
    for dataset, rows in picked.items():
        results = []
        for row, data in load_episodes(args.run, {dataset: rows}):
            predictor.set_image(data.image)
            clicks = np.array(row["clicks"], dtype=float)  # the records' (x, y, label)
            results.append(step_ious(predictor, data, clicks))
        r = np.array(results)
        print(f"| {dataset} | {len(r)} | {r[:, 0].mean():.3f} | {r[:, 1].mean():.3f} | {r[:, 2].mean():.3f} | "
              f"{np.mean(r[:, 1] < r[:, 0] - 0.05):.2f} / {np.mean(r[:, 2] < r[:, 0] - 0.05):.2f} |")


if __name__ == "__main__":
    main()
