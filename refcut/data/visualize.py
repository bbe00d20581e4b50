"""A picture to check episode pairing by eye: reference (+ green / - red) beside target (GT in yellow)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import cv2
import numpy as np

from refcut.data.dataset import PartDataset
from refcut.data.episodes import load_episode
from refcut.data.sample import Episode

_GREEN, _RED, _YELLOW = (0, 220, 0), (235, 0, 0), (255, 230, 0)


def overlay(image: np.ndarray, masks_and_colors: list[tuple[np.ndarray | None, tuple[int, int, int]]],
            alpha: float = 0.5, max_side: int = 320) -> np.ndarray:
    """Image (shrunk to ``max_side``) with each mask tinted in its colour and outlined."""
    scale = min(1.0, max_side / max(image.shape[:2]))
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    out = cv2.resize(image, size, interpolation=cv2.INTER_AREA).astype(np.float32)
    for mask, color in masks_and_colors:
        if mask is None:
            continue
        small = cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
        out[small] = (1 - alpha) * out[small] + alpha * np.array(color, np.float32)
        contours, _ = cv2.findContours(small.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, color, 2)
    return out.clip(0, 255).astype(np.uint8)


def _short(parts: tuple[str, ...], limit: int = 4) -> str:
    if not parts:
        return "-"
    return ", ".join(parts[:limit]) + (f" +{len(parts) - limit}" if len(parts) > limit else "")


def _wrap(*lines: str, width: int = 60) -> str:
    return "\n".join(textwrap.fill(line, width) for line in lines)


def draw_episodes(dataset: PartDataset, episodes: list[Episode], out_png: Path, n: int) -> Path:
    """Draw ``n`` episodes spread evenly over the list, one row each, and save a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if n < 1:
        raise ValueError(f"number of episodes to show must be >= 1, got {n}")
    if not episodes:
        raise ValueError("no episodes to draw")
    n = min(n, len(episodes))
    picks = sorted({int(round(i)) for i in np.linspace(0, len(episodes) - 1, n)})
    fig, axes = plt.subplots(len(picks), 2, figsize=(9, 3.8 * len(picks)), squeeze=False)
    for row, index in enumerate(picks):
        episode = episodes[index]
        data = load_episode(dataset, episode, "both")
        left, right = axes[row]
        if data.reference_image is not None:
            left.imshow(overlay(data.reference_image, [(data.negative_mask, _RED), (data.positive_mask, _GREEN)]))
            left.set_title(_wrap(f"reference {episode.reference_id}", f"+ {_short(episode.positive_parts)}",
                                 f"- {_short(episode.negative_parts)}"), fontsize=7)
        else:
            left.text(0.5, 0.5, _wrap("skipped:", str(episode.skipped_reason)), ha="center", va="center", fontsize=7)
        right.imshow(overlay(data.target_image, [(data.gt_mask, _YELLOW)]))
        right.set_title(_wrap(f"target {episode.target_id} [{episode.kind}]", f"GT: {_short(episode.target_parts)}"),
                        fontsize=7)
        for ax in (left, right):
            ax.axis("off")
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=80)
    plt.close(fig)
    return out_png
