"""Click-to-mask latency in the annotation app, in headless Chromium: the shipped encode-once model vs early fusion.

For each model this starts ``refcut annotate`` on a fresh copy of the demo project (as
``tests/test_e2e_app.py`` does), opens the project's last image (so the app's encode-ahead of
"the next image" has nothing to do), makes one warm-up click (it encodes the image and the
label's reference), clears it and waits ``--settle`` s, then makes ``--clicks`` timed clicks:
objects of ``--per-object`` clicks each (a positive click at a random point of the image's
central half, then alternating negative (right) and positive (left) corrections near it;
Escape between objects). Each time is the wall time from issuing the click to the page showing
its mask (``body[data-busy='0']`` with ``#canvas[data-clicks=k]``: selectors, no
``wait_for_function``, as the app's CSP forbids eval). Playwright polls selectors every ~100 ms
after the first few tries, so that wall time comes in ~100-ms steps; the page's own figure,
``shownMs`` of the step (``performance.now()`` from the click handler to the mask drawn), is
reported beside it ("in-page"), and so is the server's time per prediction (``elapsed_ms``). Both models run one after the other in
one run, so the ratio is the figure to compare across machines.

- **encode-once**: the shipped default model (no ``--model``; its GrabCut boundary step included).
- **early fusion**: the CPU candidate ``vit_small_dinov2`` at 224 px with flip averaging,
  random weights (timing does not depend on them), as in ``bench_encode_once.py``.

    python benchmarks/bench_app_latency.py --clicks 24
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from app_browser import CHROMIUM, annotate_server, launch_chromium  # noqa: E402

MODELS = {"encode-once": "encode-once (shipped default)",
          "early-fusion": "early fusion (vit_small_dinov2, 224 px, flip, random weights)"}


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or the platform's machine type)."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def save_early_fusion(directory: Path) -> Path:
    """A random-weight early-fusion model folder (``vit_small_dinov2`` at 224 px; flip is its default)."""
    import torch

    from refcut import RefCutPredictor
    from refcut.model import ModelConfig, build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig.from_preset("vit_small_dinov2", image_size=224))
    return RefCutPredictor(model, flip=True).save_pretrained(directory)


def click_plan(width: int, height: int, clicks: int, per_object: int, seed: int = 0) -> list[tuple[float, float, bool]]:
    """(x, y, positive) image pixels: objects of ``per_object`` clicks, corrections within 10% of the first."""
    rng = np.random.default_rng(seed)
    plan: list[tuple[float, float, bool]] = []
    while len(plan) < clicks:
        cx, cy = rng.uniform(0.25, 0.75) * width, rng.uniform(0.25, 0.75) * height
        for index in range(min(per_object, clicks - len(plan))):
            dx, dy = (0.0, 0.0) if index == 0 else rng.uniform(-0.1, 0.1, 2) * (width, height)
            plan.append((float(np.clip(cx + dx, 0.05 * width, 0.95 * width)),
                         float(np.clip(cy + dy, 0.05 * height, 0.95 * height)), index % 2 == 0))
    return plan


def measure(page, url: str, clicks: int, per_object: int, settle: float) -> dict[str, list[float]]:
    """Page and server seconds per timed click (plus the warm-up's) on the project's last image."""
    with urllib.request.urlopen(url + "api/images") as response:
        last = json.load(response)["images"][-1]
    page.goto(f"{url}#image={last['id']}")
    page.wait_for_selector("body[data-ready='1'][data-image-loaded='1']", state="attached", timeout=60_000)
    left, top, ox, oy, scale, k = page.evaluate(
        """() => { const v = window.refcutViewer; const r = v.canvas.getBoundingClientRect();
                   return [r.left, r.top, v.ox, v.oy, v.scale, v.canvas.width / r.width]; }""")

    def click(x: float, y: float, positive: bool, count: int) -> tuple[float, float]:
        start = time.perf_counter()
        page.mouse.click(left + (ox + x * scale) / k, top + (oy + y * scale) / k, button="left" if positive else "right")
        page.wait_for_selector(f"body[data-busy='0'] #canvas[data-clicks='{count}']", state="attached", timeout=180_000)
        elapsed = time.perf_counter() - start
        step = page.evaluate("(n) => { const s = window.refcutState.steps[n]; return s ? [s.elapsedMs, s.shownMs] : null; }",
                             count - 1)
        if step is None:
            raise RuntimeError(f"click {count} showed no mask (see the app's toast)")
        return elapsed, step[0] / 1000, step[1] / 1000

    def clear() -> None:
        page.keyboard.press("Escape")
        page.wait_for_selector("#canvas[data-clicks='0']", state="attached")

    width, height = last["width"], last["height"]
    times: dict[str, list[float]] = {"page": [], "server": [], "in_page": []}
    times["warmup"] = list(click(width / 2, height / 2, True, 1))
    clear()
    time.sleep(settle)
    count = 0
    for index, (x, y, positive) in enumerate(click_plan(width, height, clicks, per_object)):
        if index and index % per_object == 0:
            clear()
            count = 0
        count += 1
        page_s, server_s, in_page_s = click(x, y, positive, count)
        times["page"].append(page_s)
        times["server"].append(server_s)
        times["in_page"].append(in_page_s)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clicks", type=int, default=24, help="timed clicks per model (>= 20 for the p50 target)")
    parser.add_argument("--per-object", type=int, default=4, help="clicks per object before Escape clears them")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the app (torch intra-op threads)")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--settle", type=float, default=2.0, help="seconds to wait after the warm-up click")
    args = parser.parse_args()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("skipped: needs the playwright Python package (pip install playwright; no browser download)")
        return
    if not CHROMIUM.exists():
        print(f"skipped: needs Chromium at {CHROMIUM} (apt-get install chromium)")
        return
    env = {"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}
    os.environ.update(env)  # before torch is imported, so this process reports the app's thread count
    import torch

    results: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        for name in args.models:
            model = save_early_fusion(Path(tmp) / "early-fusion") if name == "early-fusion" else None
            with annotate_server(Path(tmp) / f"demo-{name}", model, env) as url:
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                results[name] = measure(page, url, args.clicks, args.per_object, args.settle)
                page.close()
            print(f"done {name}", flush=True)
        browser.close()

    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads, {cpu_model()}, "
          f"{args.clicks} timed clicks per model ({args.per_object} per object) after 1 warm-up click\n")
    print("| model | click-to-mask p50 ms | p90 ms | mean ms | in-page p50 ms | server p50 ms | warm-up click ms |\n"
          "|---|---:|---:|---:|---:|---:|---:|")
    for name, times in results.items():
        page_ms = 1000 * np.array(times["page"])
        print(f"| {MODELS[name]} | {np.percentile(page_ms, 50):.0f} | {np.percentile(page_ms, 90):.0f} | "
              f"{page_ms.mean():.0f} | {1000 * statistics.median(times['in_page']):.0f} | "
              f"{1000 * statistics.median(times['server']):.0f} | {1000 * times['warmup'][0]:.0f} |")
    if len(results) == 2:
        ratio = statistics.median(results["early-fusion"]["page"]) / statistics.median(results["encode-once"]["page"])
        print(f"\nearly fusion / encode-once, click-to-mask p50: {ratio:.1f}x")


if __name__ == "__main__":
    main()
