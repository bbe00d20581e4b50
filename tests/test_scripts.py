"""The diagnostics in scripts/: the reference probe's read-outs, the paired run comparison, click replays."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from refcut.data import Episode
from refcut.data.episodes import EpisodeData



def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


probe = _script("reference_probe")
compare_runs = _script("compare_runs")

GRID, SIZE = 8, 64  # an 8x8 feature grid over 64x64 images: 8-px patches


class ColourFeatures:
    """Stands in for the backbone: one-hot of each patch's colour channel (R part, G other part, B background)."""

    def encode_reference(self, image: torch.Tensor) -> torch.Tensor:
        patches = torch.nn.functional.adaptive_avg_pool2d(image, GRID)
        return torch.nn.functional.one_hot(patches[0].argmax(dim=0), 3).permute(2, 0, 1)[None].float()


def _scene(part_box: tuple[int, int, int, int], other_box: tuple[int, int, int, int]):
    image = np.zeros((SIZE, SIZE, 3), np.uint8)
    image[..., 2] = 255
    part, other = np.zeros((SIZE, SIZE), bool), np.zeros((SIZE, SIZE), bool)
    for mask, box, channel in ((part, part_box, 0), (other, other_box, 1)):
        y0, y1, x0, x1 = box
        mask[y0:y1, x0:x1] = True
        image[y0:y1, x0:x1] = 0
        image[y0:y1, x0:x1, channel] = 255
    return image, part, other


def _episode_data(target_part_box, positive_mask_of_reference=True):
    target, target_part, _ = _scene(target_part_box, (40, 56, 40, 56))
    reference, ref_part, ref_other = _scene((8, 24, 8, 24), (40, 56, 8, 40))
    episode = Episode(episode_id="t", kind="single", target_id="t", target_parts=("part",),
                      reference_id="r", positive_parts=("part",), negative_parts=("other",))
    positive, negative = (ref_part, ref_other) if positive_mask_of_reference else (ref_other, ref_part)
    return EpisodeData(episode, target, target_part, None, reference, positive, negative)


def test_probe_finds_the_part_the_reference_marks():
    scores = probe.probe_episode(ColourFeatures(), _episode_data((16, 32, 24, 48)), SIZE)
    # Bilinear upsampling of the patch grid rounds the part's corners, hence not exactly 1.
    assert scores["proto"] > 0.9
    assert scores["proto+click"] == scores["proto"]
    assert scores["best-threshold"] >= scores["proto"]


def test_probe_follows_the_reference_not_the_target():
    # Same target, but the reference's positive mask marks the *other* part: the read-outs must miss.
    scores = probe.probe_episode(ColourFeatures(), _episode_data((16, 32, 24, 48), False), SIZE)
    assert scores["proto"] < 0.1
    assert scores["proto+click"] == pytest.approx(64 / 384)  # only the clicked 8x8 patch of the 16x24 part


def test_compare_runs_pairs_steps_and_windows(tmp_path):
    for name, ious in (("a", [0.5, 0.7, 0.2, 0.4, 0.9]), ("b", [0.4, 0.5, 0.2, 0.1])):
        (tmp_path / name).mkdir()
        rows = "".join(f"{step},0.3,1e-4,{iou},1.0\n" for step, iou in enumerate(ious, start=1))
        (tmp_path / name / "log.csv").write_text("step,loss,lr,iou,seconds\n" + rows)
    a, b = compare_runs.read_iou(tmp_path / "a"), compare_runs.read_iou(tmp_path / "b")
    first, second = compare_runs.paired_windows(a, b, window=2)  # step 5 exists only in run a
    assert (first["first"], first["last"], first["n"]) == (1, 2, 2)
    assert first["diff"] == pytest.approx(0.15) and first["sem"] == pytest.approx(0.05)
    assert (second["first"], second["last"]) == (3, 4) and second["diff"] == pytest.approx(0.15)
    with pytest.raises(SystemExit, match="log.csv"):
        compare_runs.read_iou(tmp_path / "missing")


def test_pack_training_data_keeps_the_training_split_ids_and_parts(tmp_path, monkeypatch):
    import sys
    import tarfile

    from refcut.data import open_dataset
    from test_encode_once import write_parts_folder

    pack = _script("pack_training_data")
    data = write_parts_folder(tmp_path / "tiny", count=12)
    out = tmp_path / "pack.tar.gz"
    monkeypatch.setattr(sys, "argv", ["pack", str(data), "--out", str(out), "--max-side", "32"])
    pack.main()
    with tarfile.open(out) as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    original = open_dataset(data, split="train")
    packed = open_dataset(tmp_path / "unpacked" / "training_pack" / "tiny", split="train")
    assert sorted(s.sample_id for s in packed.samples) == sorted(s.sample_id for s in original.samples)
    sample = packed.samples[0]
    image = sample.load_image()
    assert max(image.shape[:2]) == 32
    masks = sample.load_part_masks()
    assert set(masks) == {"top", "bottom"} and all(m.any() for m in masks.values())


def test_paired_episodes_differences_per_dataset():
    paired = _script("paired_episodes")
    rows = []
    for dataset, values in (("cars", [(3, 5, 0.6, 0.4), (7, 6, 0.5, 0.5)]), ("people", [(10, 12, 0.2, 0.1)])):
        for index, (noc_a, noc_b, iou_a, iou_b) in enumerate(values):
            for method, mode, noc, iou in (("m=path", "both", noc_a, iou_a), ("m=path", "none", noc_b, iou_b)):
                rows.append({"dataset": dataset, "episode_id": f"e{index}", "method": method, "mode": mode,
                             "study": "main", "NoC@85": str(noc), "iou_1": str(iou)})
    rows.append({**rows[0], "study": "polygon_step", "NoC@85": "99"})  # ablation rows do not count
    cars, people = paired.paired_table(rows, "m:both", "m:none")
    assert cars["episodes"] == 2 and cars["noc_diff"] == pytest.approx(-0.5) and (cars["fewer"], cars["more"]) == (1, 1)
    assert cars["noc_se"] == pytest.approx(1.5) and cars["iou_diff"] == pytest.approx(0.1)
    assert people["noc_diff"] == pytest.approx(-2) and people["noc_se"] == 0.0
    with pytest.raises(SystemExit, match="more than one row"):
        paired.paired_table(rows, "m", "m:none")


def test_replay_clicks_gives_one_iou_per_click_and_mode():
    from refcut.evaluation.protocol import EpisodeData as LoadedEpisode
    from refcut.predictor.baselines import GrabCutPredictor

    replay_clicks = _script("replay_clicks")
    image = np.full((80, 100, 3), 60, np.uint8)
    image[20:60, 20:70] = (200, 40, 40)
    gt = np.zeros((80, 100), bool)
    gt[20:60, 20:70] = True
    data = LoadedEpisode(episode_id="box", kind="single", image=image, gt_mask=gt)
    clicks = replay_clicks.parse_clicks(["45,40,1", "90,10,0"])
    ious = replay_clicks.replay(GrabCutPredictor(), data, clicks, modes=("none", "both"))
    assert list(ious) == ["none", "both"] and all(len(v) == 2 for v in ious.values())
    assert ious["none"] == ious["both"] and ious["none"][0] > 0.8  # GrabCut ignores the (absent) reference
    for bad in (["45,40"], ["a,b,1"], ["45,40,2"]):
        with pytest.raises(SystemExit, match="x,y,label"):
            replay_clicks.parse_clicks(bad)


def _per_episode_csv(path: Path, nocs: dict[str, list[tuple[int, int]]]) -> Path:
    """A per_episode.csv with NoC@85 (both, none) per episode of each dataset, method ``refcut``."""
    lines = ["dataset,episode_id,method,mode,study,NoC@85,iou_1"]
    for dataset, values in nocs.items():
        for index, (both, none) in enumerate(values):
            lines += [f"{dataset},e{index},refcut=pack,both,main,{both},0.5", f"{dataset},e{index},refcut=pack,none,main,{none},0.4"]
    path.mkdir(parents=True)
    (path / "per_episode.csv").write_text("\n".join(lines) + "\n")
    return path


def test_seed_means_and_pairing_across_runs(tmp_path):
    paired, seeds = _script("paired_episodes"), _script("seed_means")
    first = _per_episode_csv(tmp_path / "a", {"cars": [(4, 6), (6, 8)], "people": [(10, 10)]})
    second = _per_episode_csv(tmp_path / "b", {"cars": [(2, 6), (6, 6)], "people": [(12, 10)]})
    assert seeds.run_means(first, "refcut") == {"cars": (5.0, 7.0, 2), "people": (10.0, 10.0, 1)}
    assert seeds.run_means(second, "refcut")["cars"] == (4.0, 6.0, 2)
    cars, people = paired.paired_table(paired.read_rows(second / "per_episode.csv"), "refcut:both", "refcut:both",
                                       paired.read_rows(first / "per_episode.csv"))
    assert cars["noc_diff"] == pytest.approx(-1.0) and (cars["fewer"], cars["more"]) == (1, 0)
    assert people["noc_diff"] == pytest.approx(2.0)


def test_negative_click_probe_predicts_the_click_with_and_without_the_reference():
    from refcut.evaluation.protocol import EpisodeData as LoadedEpisode
    from refcut.predictor.base import PredictionResult

    probe_module = _script("negative_click_probe")
    gt = np.zeros((40, 40), bool)
    gt[10:30, 10:30] = True

    class FollowsTheReference:
        """Predicts the ground truth with a reference set, and its left half without; a negative click erases 5 columns."""

        def set_reference(self, image, positive, negative=None):
            self.reference = True

        def clear_reference(self):
            self.reference = False

        def predict(self, coords, labels, prev_mask=None):
            mask = gt.copy() if self.reference else gt & (np.arange(40) < 20)[None]
            if (labels == 0).any():
                mask[:, 10:15] = False
            return PredictionResult(mask=mask, prob=mask.astype(np.float32))

    data = LoadedEpisode(episode_id="box", kind="single", image=np.zeros((40, 40, 3), np.uint8), gt_mask=gt,
                         reference_image=np.zeros((40, 40, 3), np.uint8), positive_mask=gt)
    before, kept, cleared = probe_module.step_ious(FollowsTheReference(), data, np.array([[20, 20, 1], [12, 20, 0]], float))
    assert before == pytest.approx(1.0) and kept == pytest.approx(0.75) and cleared == pytest.approx(0.25)
