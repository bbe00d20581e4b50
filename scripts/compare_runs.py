"""Paired comparison of two training runs' logged IoU, step by step.

Two runs with the same seed and data draw the same pairs at every step (a ``--no-reference``
baseline included), so the per-step difference of their logged training IoU (``log.csv``,
column ``iou``) is a paired measurement. Prints, per window of steps, both means, the mean
difference A - B and its standard error. Usage::

    python scripts/compare_runs.py RUN_A RUN_B [--window 100] [--markdown]
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
from pathlib import Path


def read_iou(run_dir: Path) -> dict[int, float]:
    """``step -> iou`` from a run folder's ``log.csv``."""
    path = run_dir / "log.csv"
    if not path.is_file():
        raise SystemExit(f"{path} does not exist (is {run_dir} a run folder of `refcut train`?)")
    with path.open(newline="") as handle:
        return {int(row["step"]): float(row["iou"]) for row in csv.DictReader(handle)}


def paired_windows(a: dict[int, float], b: dict[int, float], window: int) -> list[dict[str, float]]:
    """Per window of ``window`` steps (over the steps both runs logged): means and paired difference."""
    steps = sorted(set(a) & set(b))
    rows = []
    for start in range(steps[0] if steps else 1, (steps[-1] if steps else 0) + 1, window):
        chosen = [s for s in steps if start <= s < start + window]
        if not chosen:
            continue
        diffs = [a[s] - b[s] for s in chosen]
        sem = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else float("nan")
        rows.append({"first": chosen[0], "last": chosen[-1], "n": len(chosen),
                     "a": statistics.mean(a[s] for s in chosen), "b": statistics.mean(b[s] for s in chosen),
                     "diff": statistics.mean(diffs), "sem": sem})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    parser.add_argument("--window", type=int, default=100)
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args()
    rows = paired_windows(read_iou(args.run_a), read_iou(args.run_b), args.window)
    if args.markdown:
        print(f"| steps | {args.run_a.name} | {args.run_b.name} | difference ± s.e. |\n|---|---|---|---|")
    for r in rows:
        if args.markdown:
            print(f"| {r['first']}–{r['last']} | {r['a']:.3f} | {r['b']:.3f} | {r['diff']:+.3f} ± {r['sem']:.3f} |")
        else:
            print(f"steps {r['first']:>5}-{r['last']:<5} n={r['n']:<4} A {r['a']:.3f}  B {r['b']:.3f}  "
                  f"A-B {r['diff']:+.3f} ± {r['sem']:.3f}")


if __name__ == "__main__":
    main()
