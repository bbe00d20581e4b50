"""Paired differences between two method/mode columns of an evaluation's ``per_episode.csv``.

Both arms run on the same episodes, so the per-episode difference A - B is a paired measurement.
Prints, per dataset, the mean of A and B and the mean difference with its standard error for
NoC@85 and the IoU after one click, and how many episodes A needs fewer / more clicks. Usage::

    python scripts/paired_episodes.py runs/eval_main/per_episode.csv --a refcut:both --b refcut:none
    python scripts/paired_episodes.py runs/eval_main/per_episode.csv --a refcut:both --b grabcut
    python scripts/paired_episodes.py runs/eval_new/per_episode.csv --a refcut:both --b refcut:both \
        --b-csv runs/eval_old/per_episode.csv     # two runs on the same episodes

A side is ``METHOD[:MODE]``; METHOD is the run's method label (``method_label``: the NAME of
``--method NAME=PATH``, else a model's folder name) or the whole method string; MODE defaults
to any (baselines have one mode). Only main-study rows count.
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

from refcut.evaluation.baselines import method_label


def read_side(rows: list[dict[str, str]], side: str) -> dict[tuple[str, str], dict[str, str]]:
    """The main-study rows of one ``METHOD[:MODE]`` side, keyed by (dataset, episode id)."""
    method, _, mode = side.partition(":")
    chosen = {}
    for row in rows:
        if row.get("study", "main") != "main" or method not in (row["method"], method_label(row["method"])):
            continue
        if mode and row["mode"] != mode:
            continue
        key = (row["dataset"], row["episode_id"])
        if key in chosen:
            raise SystemExit(f"{side!r} matches more than one row for {key}: give a mode")
        chosen[key] = row
    if not chosen:
        raise SystemExit(f"no main-study rows for {side!r}")
    return chosen


def mean_and_error(values: list[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (0 for a single value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    variance = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(variance / n)


def read_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a ``per_episode.csv``."""
    with Path(path).open(newline="") as handle:
        return list(csv.DictReader(handle))


def paired_table(
    rows: list[dict[str, str]], side_a: str, side_b: str, rows_b: list[dict[str, str]] | None = None
) -> list[dict[str, float | str]]:
    """One summary per dataset over the episodes both sides ran (side B from ``rows_b`` when given)."""
    a, b = read_side(rows, side_a), read_side(rows if rows_b is None else rows_b, side_b)
    summaries = []
    for dataset in sorted({key[0] for key in a}):
        keys = sorted(key for key in a if key[0] == dataset and key in b)
        if not keys:
            continue
        noc_a = [float(a[k]["NoC@85"]) for k in keys]
        noc_b = [float(b[k]["NoC@85"]) for k in keys]
        iou_a = [float(a[k]["iou_1"]) for k in keys]
        iou_b = [float(b[k]["iou_1"]) for k in keys]
        noc_diff = mean_and_error([x - y for x, y in zip(noc_a, noc_b)])
        iou_diff = mean_and_error([x - y for x, y in zip(iou_a, iou_b)])
        summaries.append({
            "dataset": dataset, "episodes": len(keys),
            "noc_a": sum(noc_a) / len(keys), "noc_b": sum(noc_b) / len(keys),
            "noc_diff": noc_diff[0], "noc_se": noc_diff[1],
            "fewer": sum(x < y for x, y in zip(noc_a, noc_b)), "more": sum(x > y for x, y in zip(noc_a, noc_b)),
            "iou_a": sum(iou_a) / len(keys), "iou_b": sum(iou_b) / len(keys),
            "iou_diff": iou_diff[0], "iou_se": iou_diff[1],
        })
    return summaries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("per_episode", type=Path, help="an evaluation's per_episode.csv")
    parser.add_argument("--a", required=True, help="METHOD[:MODE], e.g. refcut:both")
    parser.add_argument("--b", required=True, help="METHOD[:MODE], e.g. refcut:none or grabcut")
    parser.add_argument("--b-csv", type=Path, help="read side B from this per_episode.csv (another run)")
    args = parser.parse_args()
    rows = read_rows(args.per_episode)
    rows_b = None if args.b_csv is None else read_rows(args.b_csv)
    print(f"| dataset | episodes | NoC@85 {args.a} | NoC@85 {args.b} | A - B (+- s.e.) | A fewer / more | "
          f"IoU@1 A | IoU@1 B | A - B (+- s.e.) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for s in paired_table(rows, args.a, args.b, rows_b):
        print(f"| {s['dataset']} | {s['episodes']} | {s['noc_a']:.2f} | {s['noc_b']:.2f} | "
              f"{s['noc_diff']:+.2f} +- {s['noc_se']:.2f} | {s['fewer']} / {s['more']} | {s['iou_a']:.3f} | "
              f"{s['iou_b']:.3f} | {s['iou_diff']:+.3f} +- {s['iou_se']:.3f} |")


if __name__ == "__main__":
    main()
