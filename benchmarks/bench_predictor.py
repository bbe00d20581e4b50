"""Per-click latency and reference-encoding time of ``RefCutPredictor`` next to the FLOP-bound time.

For each model preset and precision this measures, in one run:

- the GEMM throughput of this machine (a large ``F.linear`` matmul, median of several),
  measured right before that row's timings so load changes on a shared machine hit both;
- the network FLOPs, counted with ``torch.utils.flop_counter.FlopCounterMode`` (plus the
  attention matmuls, which the counter does not see on CPU) for one click pass (x2 with
  flip averaging) and for one reference encoding;
- the median wall time per click (``predict`` with the growing click list and the previous
  probability, so clicks 2+ take the zoom-in path) with flip averaging on and off, and the
  median wall time of ``set_reference`` on a new image (cache miss).

The FLOP-bound time is FLOPs / measured GEMM FLOP/s: what the network would take if every
operation ran at large-GEMM speed. Weights are random (timing does not depend on them).

    python benchmarks/bench_predictor.py --clicks 20 --refs 10
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from refcut import RefCutPredictor
from refcut.model import ModelConfig, build_model

DEMO_IMAGE = Path(__file__).resolve().parents[1] / "refcut" / "assets" / "demo" / "images" / "ccp_0001.jpg"


def gemm_gflops(dtype: torch.dtype, shape: tuple[int, int, int] = (1024, 768, 3072), repeats: int = 5) -> float:
    """Median GFLOP/s of ``F.linear`` on an ``M x K`` input and ``N x K`` weight in ``dtype``.

    The default is the ViT-B MLP shape at ~1000 tokens: the op that dominates the network,
    on the same code path (a square 2048^3 bf16 ``torch.matmul`` took ~100 s on an AVX2
    CPU without bf16 instructions, far slower than the network's own bf16 linears).
    """
    m, k, n = shape
    a = torch.randn(m, k).to(dtype)
    w = torch.randn(n, k).to(dtype)
    torch.nn.functional.linear(a, w)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.nn.functional.linear(a, w)
        times.append(time.perf_counter() - start)
    return 2 * m * k * n / statistics.median(times) / 1e9


def _sdpa_formula(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def count_flops(fn) -> int:
    """FLOPs of ``fn()`` (matmuls, convolutions and CPU attention)."""
    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_formula}
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        fn()
    return counter.get_total_flops()


def load_image() -> np.ndarray:
    """A real photo (the packaged demo image) or, if absent, a fixed random one."""
    try:
        import cv2

        image = cv2.imread(str(DEMO_IMAGE))
        if image is not None:
            return np.ascontiguousarray(image[:, :, ::-1])
    except ImportError:  # pragma: no cover
        pass
    return np.random.default_rng(0).integers(0, 256, (600, 400, 3), dtype=np.uint8)


def click_latencies(predictor: RefCutPredictor, image: np.ndarray, clicks: int, warmup: int) -> list[float]:
    """Wall seconds of each of ``clicks`` successive ``predict`` calls after ``warmup`` calls."""
    rng = np.random.default_rng(1)
    height, width = image.shape[:2]
    predictor.set_image(image)
    coords, labels, prev, times = [], [], None, []
    for step in range(warmup + clicks):
        if step == warmup:  # timed clicks start a fresh object: first click full image, then zoom-in
            coords, labels, prev = [], [], None
        coords.append((rng.uniform(0.3, 0.7) * (width - 1), rng.uniform(0.3, 0.7) * (height - 1)))
        labels.append(1 if len(labels) % 3 != 2 else 0)
        start = time.perf_counter()
        result = predictor.predict(np.array(coords), np.array(labels), prev)
        elapsed = time.perf_counter() - start
        prev = result.prob
        if step >= warmup:
            times.append(elapsed)
    return times


def reference_latencies(predictor: RefCutPredictor, image: np.ndarray, count: int) -> list[float]:
    """Wall seconds of ``set_reference`` on ``count`` new images (every call encodes)."""
    mask = np.zeros(image.shape[:2], bool)
    mask[image.shape[0] // 4 : image.shape[0] // 2, image.shape[1] // 4 : image.shape[1] // 2] = True
    times = []
    for index in range(count + 1):
        variant = image.copy()
        variant[0, 0, 0] = index % 256  # new content -> cache miss
        start = time.perf_counter()
        predictor.set_reference(variant, mask, ~mask)
        if index:  # the first one is a warm-up
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["vit_small_dinov2", "vit_base"])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--image-size", type=int, default=448)
    parser.add_argument("--clicks", type=int, default=20, help="timed clicks per setting (median reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--refs", type=int, default=10, help="timed reference encodings (median reported)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    image = load_image()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, image {image.shape[1]}x{image.shape[0]}, "
        f"{args.clicks} timed clicks (+{args.warmup} warm-up), {args.refs} reference encodings (+1 warm-up)\n"
    )
    rows = []
    for preset in args.presets:
        config = ModelConfig.from_preset(preset, image_size=args.image_size)
        torch.manual_seed(0)
        model = build_model(config).eval()
        size = args.image_size
        x, prev = torch.rand(1, 3, size, size), torch.zeros(1, 1, size, size)
        points = torch.tensor([[[size / 2, size / 2, 1.0]]])
        click_flops = count_flops(lambda: model(x, prev, points))
        ref_flops = count_flops(lambda: model.encode_reference(x))
        for precision in args.precisions:
            dtype = torch.float32 if precision == "fp32" else torch.bfloat16
            gflops = gemm_gflops(dtype)
            row = {"model": preset, "precision": precision, "gemm": gflops}
            for flip in (True, False):
                predictor = RefCutPredictor(model, flip=flip, precision=precision)
                times = click_latencies(predictor, image, args.clicks, args.warmup)
                row[f"click_{flip}"] = statistics.median(times)
                row[f"bound_{flip}"] = click_flops * (2 if flip else 1) / (gflops * 1e9)
            predictor = RefCutPredictor(model, precision=precision)
            row["ref"] = statistics.median(reference_latencies(predictor, image, args.refs))
            row["ref_bound"] = ref_flops / (gflops * 1e9)
            row["click_gflop"], row["ref_gflop"] = click_flops / 1e9, ref_flops / 1e9
            rows.append(row)
            print(f"done {preset} {precision}", flush=True)

    print()
    print("| model | precision | GEMM GFLOP/s | network GFLOP per pass (click / reference) "
          "| click, flip on: median ms (FLOP-bound, ratio) | click, flip off: median ms (FLOP-bound, ratio) "
          "| reference encoding: median ms (FLOP-bound, ratio) |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        cells = [
            f"{1e3 * r[t]:.0f} ({1e3 * r[b]:.0f}, {r[t] / r[b]:.1f}x)"
            for t, b in (("click_True", "bound_True"), ("click_False", "bound_False"), ("ref", "ref_bound"))
        ]
        print(f"| {r['model']} | {r['precision']} | {r['gemm']:.0f} | {r['click_gflop']:.1f} / {r['ref_gflop']:.1f} | "
              + " | ".join(cells) + " |")  # fmt: skip


if __name__ == "__main__":
    main()
