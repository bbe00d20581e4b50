"""NoC@85 with and without the reference, averaged over the seeds of each recipe.

One training run's held-out numbers move by up to ~0.7 clicks with its seed (docs/training.md,
"Seeds"), so recipes are compared on the mean over their runs. Each ``RECIPE=EVAL_DIR[,EVAL_DIR...]``
names the evaluation folders (``refcut eval --modes none,both``, the same episodes) of one
recipe's runs; the model's method label is ``refcut`` unless ``--method`` says otherwise. Prints,
per dataset, every run's ``both`` / ``none`` and the recipe's mean ``both`` / mean ``none``
(their ratio is issue 13's "reference effect"). Usage::

    python scripts/seed_means.py eo_v8b=runs/eval_main_v8b,runs/eval_v8b_s1 eo_v12=runs/eval_v12_s0,runs/eval_v12_s1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from paired_episodes import paired_table, read_rows  # noqa: E402


def run_means(folder: Path, method: str) -> dict[str, tuple[float, float, int]]:
    """Per dataset: mean NoC@85 ``both``, ``none`` and the number of episodes both modes ran."""
    table = paired_table(read_rows(folder / "per_episode.csv"), f"{method}:both", f"{method}:none")
    return {s["dataset"]: (s["noc_a"], s["noc_b"], s["episodes"]) for s in table}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recipes", nargs="+", help="RECIPE=EVAL_DIR[,EVAL_DIR...]")
    parser.add_argument("--method", default="refcut", help="the model's method label in the runs")
    args = parser.parse_args()
    print("| recipe | dataset | runs: `both` / `none` | mean `both` / `none` (ratio) |")
    print("|---|---|---|---|")
    for recipe in args.recipes:
        name, _, folders = recipe.partition("=")
        if not folders:
            raise SystemExit(f"{recipe!r}: expected RECIPE=EVAL_DIR[,EVAL_DIR...]")
        runs = [run_means(Path(f), args.method) for f in folders.split(",")]
        for dataset in sorted(set.intersection(*(set(r) for r in runs))):
            if len({r[dataset][2] for r in runs}) != 1:
                raise SystemExit(f"{name}: the runs evaluated different numbers of {dataset} episodes")
            both = sum(r[dataset][0] for r in runs) / len(runs)
            none = sum(r[dataset][1] for r in runs) / len(runs)
            each = ", ".join(f"{r[dataset][0]:.2f} / {r[dataset][1]:.2f}" for r in runs)
            print(f"| {name} | {dataset} | {each} | {both:.2f} / {none:.2f} ({both / none:.3f}) |")


if __name__ == "__main__":
    main()
