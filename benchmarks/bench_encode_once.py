"""Encode-once vs early fusion on this CPU, in one run: encoder per view, decoder per click, training pairs/s.

Medians of wall times, each family measured right after the other so that load changes on a
shared machine hit both; the ratios are the figures to compare across machines.

- **encoder per view**: ``model.encode`` (DINOv2 ViT-S/14 + EfficientNet-Lite0 stages) on one view;
  ``--view-sizes 448`` adds the same at other view sizes, as a ratio to 336 px (and the decoder alone).
- **decoder per click**: ``RefCutPredictor.predict`` on an already encoded view (clicks that
  re-encode a new zoom box are excluded and counted), and ``model.decode`` alone.
- **early fusion per click**: ``RefCutPredictor.predict`` of the early-fusion candidate
  (``vit_small_dinov2`` at 224 px, flip averaging on, as documented in docs/training.md).
- **training pairs/s**: ``refcut.training.trainer.training_step`` + backward + Adam step on
  synthetic batches (cached-view batches for encode-once, image batches for early fusion),
  with the trainer's default simulated clicks (0..3 extra decoder passes).

    python benchmarks/bench_encode_once.py --clicks 20 --steps 10
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import time
from dataclasses import replace

import numpy as np
import torch

from refcut import RefCutPredictor
from refcut.model import ModelConfig, build_model
from refcut.model.encode_once import EncodeOnceConfig, EncodeOnceModel
from refcut.training.config import TrainConfig
from refcut.training.trainer import build_param_groups, freeze_parameters, num_point_rows, training_step
from refcut.training.points import sample_initial_points

from bench_predictor import click_latencies, load_image


def median_ms(times: list[float]) -> float:
    return 1000 * statistics.median(times)


def encoder_times(model: EncodeOnceModel, views: int) -> list[float]:
    size = model.config.image_size
    model.encode(torch.rand(1, 3, size, size))  # warm-up
    times = []
    for _ in range(views):
        x = torch.rand(1, 3, size, size)
        start = time.perf_counter()
        model.encode(x)
        times.append(time.perf_counter() - start)
    return times


def decoder_times(predictor: RefCutPredictor, image: np.ndarray, clicks: int) -> tuple[list[float], list[float], int]:
    """(predict wall times on encoded views, model.decode-only times, clicks that re-encoded)."""
    rng = np.random.default_rng(1)
    height, width = image.shape[:2]
    predictor.set_image(image)
    coords, labels, prev, times, reencoded = [], [], None, [], 0
    for _ in range(clicks + 1):
        coords.append((rng.uniform(0.35, 0.65) * (width - 1), rng.uniform(0.35, 0.65) * (height - 1)))
        labels.append(1 if len(labels) % 3 != 2 else 0)
        calls = predictor.encoder_calls
        start = time.perf_counter()
        result = predictor.predict(np.array(coords), np.array(labels), prev)
        elapsed = time.perf_counter() - start
        prev = result.prob
        if predictor.encoder_calls != calls:
            reencoded += 1
        elif len(coords) > 1:  # the first call is a warm-up
            times.append(elapsed)
    return times, decode_times(predictor.model, clicks), reencoded


def decode_times(model: EncodeOnceModel, clicks: int) -> list[float]:
    """``model.decode`` alone on one encoded random view with three points, ``clicks`` timed calls after a warm-up."""
    size = model.config.image_size
    with torch.inference_mode():
        view = model.encode_view(model.encode(torch.rand(1, 3, size, size)))
        points = torch.tensor([[[size / 2, size / 2, 1.0], [size / 3, size / 3, 0.0], [size / 2 + 9, size / 2, 1.0]]])
        prev_t = torch.zeros(1, 1, size, size)
        decode = []
        for _ in range(clicks + 1):
            start = time.perf_counter()
            model.decode(view, prev_t, points, None)
            decode.append(time.perf_counter() - start)
    return decode[1:]


def synthetic_batch(model, config: TrainConfig, batch: int, rng: np.random.Generator) -> dict:
    size = model.config.image_size
    gt = np.zeros((batch, 1, size, size), np.float32)
    points = np.full((batch, num_point_rows(config), 3), -1.0, np.float32)
    for i in range(batch):
        y0, x0 = rng.integers(0, size // 2, size=2)
        gt[i, 0, y0 : y0 + size // 3, x0 : x0 + size // 4] = 1
        points[i, : 2 * config.data.max_initial_points] = sample_initial_points(gt[i, 0] > 0.5, rng, config.data.max_initial_points)
    masks = torch.from_numpy(gt)
    out = {"gt": masks, "points": torch.from_numpy(points), "has_reference": torch.ones(batch, dtype=torch.bool),
           "positive_mask": masks.flip(-1), "negative_mask": 1 - masks.flip(-1)}
    if isinstance(model, EncodeOnceModel):
        with torch.no_grad():
            features = model.encode(torch.rand(batch, 3, size, size))
        out.update(tokens=features.tokens.half(), edges4=features.edges4.half(), edges8=features.edges8.half(),
                   reference_tokens=features.tokens.flip(0).half())
    else:
        out.update(image=torch.rand(batch, 3, size, size), reference_image=torch.rand(batch, 3, size, size))
    return out


def pairs_per_second(model, config: TrainConfig, steps: int) -> float:
    freeze_parameters(model, 0, False)
    optimizer = torch.optim.Adam(build_param_groups(model, config), lr=1e-4)
    model.train()
    rng = np.random.default_rng(0)
    batches = [synthetic_batch(model, config, config.batch_size, rng) for _ in range(steps + 1)]
    times = []
    for index, batch in enumerate(batches):
        start = time.perf_counter()
        output = training_step(model, model, batch, config, np.random.default_rng(index), contextlib.nullcontext)
        optimizer.zero_grad(set_to_none=True)
        output.loss.backward()
        optimizer.step()
        if index:  # the first step is a warm-up
            times.append(time.perf_counter() - start)
    return config.batch_size / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clicks", type=int, default=20)
    parser.add_argument("--views", type=int, default=10)
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per family (median)")
    parser.add_argument("--batch-size", type=int, default=16, help="encode-once training batch")
    parser.add_argument("--early-fusion-batch-size", type=int, default=4, help="as the documented CPU candidates")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--view-sizes", "--encoder-sizes", type=int, nargs="*", default=[],
                        help="also time the encoders and the decoder at these view sizes (multiples of 56), e.g. 448")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    image = load_image()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
          f"image {image.shape[1]}x{image.shape[0]}")

    encode_once = EncodeOnceModel(EncodeOnceConfig.from_preset("encode_once_vits14")).eval()  # random weights
    early = build_model(ModelConfig.from_preset("vit_small_dinov2", image_size=224)).eval()
    rows = []
    enc = encoder_times(encode_once, args.views)
    pred, dec, reencoded = decoder_times(RefCutPredictor(encode_once), image, args.clicks)
    ef_clicks = click_latencies(RefCutPredictor(early, flip=True), image, args.clicks, warmup=1)
    rows.append(("encoder per view (336 px)", f"{median_ms(enc):.0f} ms", "(in every click)"))
    base = encode_once.config
    sized_rows = []
    for size in args.view_sizes:
        if size % 56:
            raise SystemExit(f"--view-sizes: {size} is not a multiple of 56 (patch 14, edge stride 8)")
        sized = EncodeOnceModel(replace(base, encoder=replace(base.encoder, image_size=size))).eval()
        times, decoder = encoder_times(sized, args.views), decode_times(sized, args.clicks)
        rows.append((f"encoder per view ({size} px, {size // 14}x{size // 14} tokens)",
                     f"{median_ms(times):.0f} ms ({median_ms(times) / median_ms(enc):.2f}x the 336-px view)", "-"))
        sized_rows.append((f"click, decoder alone ({size} px)",
                           f"{median_ms(decoder):.1f} ms ({median_ms(decoder) / median_ms(dec):.2f}x the 336-px view)", "-"))
    rows.append(("click, predict() on an encoded view", f"{median_ms(pred):.1f} ms ({reencoded} of {args.clicks} clicks re-encoded a zoom box)",
                 f"{median_ms(ef_clicks):.0f} ms"))
    rows.append(("click, decoder alone (336 px)", f"{median_ms(dec):.1f} ms", "-"))
    rows += sized_rows
    eo_config = TrainConfig().with_overrides({"batch_size": args.batch_size, "model.preset": "encode_once_vits14"})
    ef_config = TrainConfig().with_overrides({"batch_size": args.early_fusion_batch_size, "reference_grad": False})
    eo_rate = pairs_per_second(encode_once, eo_config, args.steps)
    ef_rate = pairs_per_second(early, ef_config, max(3, args.steps // 3))
    rows.append(("training pairs/s", f"{eo_rate:.1f} (batch {args.batch_size})", f"{ef_rate:.2f} (batch {args.early_fusion_batch_size}); ratio {eo_rate / ef_rate:.0f}x"))
    print("\n| measure | encode-once | early fusion (vit_small_dinov2, 224 px) |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
