"""`refcut episodes` on the real car-parts and Clothing Co-Parsing folders, checked against counts
computed here independently (straight from the json / .mat, adjacency via a chessboard distance
transform instead of dilation, references by a plain quadratic scan)."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io
import typer
from pycocotools import mask as mask_utils
from typer.testing import CliRunner

from refcut.cli import episodes as episodes_cli

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CAR = DATA / "car-parts" / "trainingset"
CCP = DATA / "clothing-co-parsing"
ADJ = 2


def run_cli(args: list[str]) -> str:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """test app"""

    episodes_cli.register(app)
    result = CliRunner().invoke(app, ["episodes", *args])
    assert result.exit_code == 0, result.output
    return result.output


def close_pairs(masks: dict[str, np.ndarray], px: int) -> set[tuple[str, str]]:
    """Pairs whose chessboard distance is <= px (distance transform of each part's complement)."""
    pairs = set()
    names = sorted(n for n in masks if masks[n].any())
    if not names:
        return pairs
    union = np.logical_or.reduce([masks[n] for n in names])
    ys, xs = np.nonzero(union)  # the chessboard distance inside the object's box equals the true one
    masks = {n: masks[n][ys.min():ys.max() + 1, xs.min():xs.max() + 1] for n in names}
    for a in names:
        dist = cv2.distanceTransform((~masks[a]).astype(np.uint8), cv2.DIST_C, 3)
        for b in names:
            if a < b and dist[masks[b]].min() <= px:
                pairs.add((a, b))
    return pairs


def expected_counts(samples: list[tuple[str, str, set[str], set[tuple[str, str]]]]) -> dict[str, tuple[int, int]]:
    """{kind: (total, skipped)} by a quadratic scan; samples = (sample_id, image, parts, pairs)."""
    samples = sorted(samples)
    n = len(samples)
    out = {"single": [0, 0], "pair": [0, 0], "whole": [0, 0]}
    for i, (_, image, parts, pairs) in enumerate(samples):
        combos = [("single", {p}) for p in parts] + [("pair", set(p)) for p in pairs] + [("whole", set(parts))]
        for kind, needed in combos:
            found = any(samples[(i + d) % n][1] != image and needed <= samples[(i + d) % n][2] for d in range(1, n))
            out[kind][0] += 1
            out[kind][1] += not found
    return {k: tuple(v) for k, v in out.items()}


def parse(output: str) -> tuple[int, dict[str, int], dict[str, tuple[int, int]]]:
    samples = int(re.search(r"^samples: (\d+)$", output, re.M).group(1))
    parts = {m.group(1): int(m.group(2)) for m in re.finditer(r"^  part (.+): (\d+)$", output, re.M)}
    kinds = {m.group(1): (int(m.group(2)), int(m.group(3)))
             for m in re.finditer(r"^episodes (\w+): (\d+) \(with reference \d+, skipped (\d+)\)$", output, re.M)}
    return samples, parts, kinds


def check(output: str, samples: list, category: str) -> None:
    n, parts, kinds = parse(output)
    assert n == len(samples)
    assert f"category {category}: {len(samples)} samples" in output
    assert parts == dict(Counter(p for s in samples for p in s[2]))
    expected = expected_counts(samples)
    for kind in ("single", "pair", "whole"):
        assert kinds[kind] == expected[kind], kind
    assert kinds["object"] == (0, 0)
    assert f"episodes skipped: {sum(v[1] for v in expected.values())}" in output


@pytest.mark.skipif(not CAR.is_dir(), reason=f"real car-parts data not found at {CAR}")
def test_car_parts_counts(tmp_path):
    data = json.loads((CAR / "annotations.json").read_text())
    names = {c["id"]: c["name"] for c in data["categories"] if c["name"] != "_background_"}
    by_image: dict[int, dict[str, list]] = {}
    for ann in data["annotations"]:
        if ann["category_id"] in names:
            by_image.setdefault(ann["image_id"], {}).setdefault(names[ann["category_id"]], []).extend(ann["segmentation"])
    samples = []
    for image in data["images"]:
        parts = by_image.get(image["id"])
        if not parts:
            continue
        h, w = image["height"], image["width"]
        masks = {p: mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polys, h, w))).astype(bool)
                 for p, polys in parts.items()}
        samples.append((f"{image['file_name']}#car", image["file_name"], set(parts), close_pairs(masks, ADJ)))
    output = run_cli([str(DATA / "car-parts"), "--out", str(tmp_path / "car.json")])
    check(output, samples, "car")
    assert json.loads((tmp_path / "car.json").read_text())["meta"]["samples"] == len(samples)


def ccp_samples(stems: list[str]) -> list:
    names = [str(np.asarray(x).ravel()[0]) for x in scipy.io.loadmat(CCP / "label_list.mat")["label_list"].ravel()]
    samples = []
    for stem in stems:
        labels = scipy.io.loadmat(CCP / "annotations" / "pixel-level" / f"{stem}.mat")["groundtruth"]
        present = [v for v in np.unique(labels) if v != 0]
        if not present:
            continue
        masks = {names[v]: labels == v for v in present}
        samples.append((f"{stem}#person", stem, set(masks), close_pairs(masks, ADJ)))
    return samples


@pytest.mark.skipif(not CCP.is_dir(), reason=f"real Clothing Co-Parsing data not found at {CCP}")
def test_ccp_counts_on_a_subset(tmp_path):
    """First 120 photos, linked into a folder of the real layout (fast)."""
    stems = [p.stem for p in sorted((CCP / "annotations" / "pixel-level").glob("*.mat"))][:120]
    root = tmp_path / "ccp-subset"
    (root / "annotations" / "pixel-level").mkdir(parents=True)
    (root / "photos").mkdir()
    (root / "label_list.mat").symlink_to(CCP / "label_list.mat")
    for stem in stems:
        (root / "annotations" / "pixel-level" / f"{stem}.mat").symlink_to(CCP / "annotations" / "pixel-level" / f"{stem}.mat")
        (root / "photos" / f"{stem}.jpg").symlink_to(CCP / "photos" / f"{stem}.jpg")
    output = run_cli([str(root), "--out", str(tmp_path / "ccp.json")])
    check(output, ccp_samples(stems), "person")


@pytest.mark.slow
@pytest.mark.skipif(not CCP.is_dir(), reason=f"real Clothing Co-Parsing data not found at {CCP}")
def test_ccp_counts_full(tmp_path):
    stems = [p.stem for p in sorted((CCP / "annotations" / "pixel-level").glob("*.mat"))]
    output = run_cli([str(CCP), "--out", str(tmp_path / "ccp.json"), "--show", "3", "--show-out", str(tmp_path / "s.png")])
    check(output, ccp_samples(stems), "person")
    assert (tmp_path / "s.png").stat().st_size > 10_000
