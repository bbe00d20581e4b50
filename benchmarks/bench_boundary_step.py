"""Time of the predictors' boundary steps (``GRABCUT_STEPS``, ``GUIDED_STEPS``) on their own, medians from one run.

Inputs: the bundled demo photos (``refcut/assets/demo/images``, clothing, 550 px wide) with an
elliptic "network probability" of three sizes (8 / 20 / 40 % of the shorter side) around the image
centre and one positive click in it, so each step sees the same small, medium and large masks.
Each (step, input) is timed ``--repeats`` times after one warm-up; the table gives the median
and the ratio to ``grabcut-band`` in the same run. The guided steps get the decoder cell of the
whole image as the predictor's first click does (the longer side / 84 at 336 px).

    python benchmarks/bench_boundary_step.py [--steps grabcut-band grabcut-fine ...] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import cv2
import numpy as np

from refcut.predictor.baselines import GRABCUT_STEPS, grabcut_refine
from refcut.predictor.guided import GUIDED_STEPS, guided_step

DEMO_IMAGES = Path(__file__).resolve().parents[1] / "refcut" / "assets" / "demo" / "images"


def inputs() -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """(image, probability, clicks, labels) for every demo image and mask size."""
    cases = []
    for path in sorted(DEMO_IMAGES.glob("*.jpg")):
        image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        height, width = image.shape[:2]
        for fraction in (0.08, 0.2, 0.4):
            prob = np.zeros((height, width), np.float32)
            radius = int(fraction * min(height, width))
            cv2.ellipse(prob, (width // 2, height // 2), (radius, int(radius * 1.3)), 0, 0, 360, 0.9, -1)
            cases.append((image, prob, np.array([[width // 2, height // 2]]), np.array([1])))
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", nargs="+", choices=[*GRABCUT_STEPS, *GUIDED_STEPS],
                        default=["grabcut-band", "grabcut-fine-it4", "grabcut-fine-it2", "grabcut-fine", "guided",
                                 "guided-grabcut"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="cv2.setNumThreads")
    args = parser.parse_args()
    cv2.setNumThreads(args.threads)
    cases = inputs()
    medians = {}
    for step in args.steps:
        if step in GUIDED_STEPS:
            run = lambda image, *rest: guided_step(step, image, *rest, cell_px=max(image.shape[:2]) / 84)  # noqa: E731
        else:
            run = lambda *case: grabcut_refine(*case, **GRABCUT_STEPS[step])  # noqa: E731
        times = []
        for case in cases:
            run(*case)
            for _ in range(args.repeats):
                start = time.perf_counter()
                run(*case)
                times.append(time.perf_counter() - start)
        medians[step] = 1000 * statistics.median(times)
    base = medians.get("grabcut-band")
    print(f"{len(cases)} inputs x {args.repeats} repeats, cv2 threads {args.threads}\n")
    print("| step | median ms | ratio to grabcut-band |\n|---|---:|---:|")
    for step, ms in medians.items():
        print(f"| {step} | {ms:.1f} | {ms / base:.2f} |" if base else f"| {step} | {ms:.1f} | |")


if __name__ == "__main__":
    main()
