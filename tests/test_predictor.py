"""RefCutPredictor: any image size, zoom-in geometry, flip averaging, caching, round trip, misuse."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from refcut import RefCutPredictor
from refcut.predictor.transforms import (
    ZoomInSettings,
    as_zoom_in_settings,
    box_iou,
    crop_resize,
    expand_box,
    paste_back,
    points_to_network,
    zoom_in_box,
)


@pytest.fixture
def predictor(tiny_model):
    return RefCutPredictor(tiny_model)


@pytest.mark.parametrize("shape", [(31, 517, 3), (600, 13, 3), (64, 64), (50, 70, 4), (47, 33, 1)])
def test_any_image_size_and_format(predictor, rng, shape):
    image = rng.integers(0, 256, size=shape, dtype=np.uint8)
    predictor.set_image(image)
    height, width = shape[:2]
    result = predictor.predict(np.array([[width // 2, height // 2]]), np.array([1]))
    assert result.mask.shape == (height, width) and result.mask.dtype == bool
    assert result.prob.dtype == np.float32 and 0 <= result.prob.min() <= result.prob.max() <= 1
    assert np.array_equal(result.mask, result.prob > 0.49)
    # A second step zooms in around the previous prediction; still full size.
    second = predictor.predict(np.array([[width // 2, height // 2], [0, 0]]), np.array([1, 0]), result.prob)
    assert second.prob.shape == (height, width)


def test_expand_box_min_size_and_clamp():
    y0, y1, x0, x1 = expand_box((100, 109, 50, 59), 1.4, 200, 1000, 1000)
    assert y1 - y0 >= 199 and x0 == 0  # at least 200 px high; clamped at the left border
    y0, y1, x0, x1 = expand_box((0, 499, 0, 99), 1.4, 10, 600, 120)
    assert (y0, y1, x0, x1) == (0, 599, 0, 119)
    y0, y1, x0, x1 = expand_box((200, 399, 300, 399), 1.4, 20, 1000, 1000)
    assert (y1 - y0, x1 - x0) == (280, 140)


def test_zoom_in_box_rules():
    settings = ZoomInSettings(min_crop_size=20)
    prob = np.zeros((200, 300), np.float32)
    assert zoom_in_box(None, np.zeros((0, 2)), None, settings) is None  # first click: whole image
    assert zoom_in_box(prob, np.array([[10, 10]]), None, settings) is None  # empty previous mask
    prob[50:100, 100:150] = 0.9
    box = zoom_in_box(prob, np.array([[75, 125]]), None, settings)
    assert box == expand_box((50, 99, 100, 149), 1.4, 20, 200, 300)
    # Same box reused while the positive clicks stay inside and the candidate overlaps it.
    prob[50:102, 100:152] = 0.9
    assert zoom_in_box(prob, np.array([[75, 125]]), box, settings) == box
    # A positive click outside the stored box forces a new one that contains it.
    new = zoom_in_box(prob, np.array([[75, 125], [190, 290]]), box, settings)
    assert new != box and new[1] >= 190 and new[3] >= 290
    assert zoom_in_box(prob, np.array([[75, 125]]), box, ZoomInSettings(enabled=False)) is None
    assert box_iou((0, 9, 0, 9), (5, 14, 0, 9)) == pytest.approx(50 / 150)


def test_zoom_in_settings_from_a_model_config(tiny_model, tmp_path):
    assert as_zoom_in_settings(False) == ZoomInSettings(enabled=False)
    assert as_zoom_in_settings({"expansion_ratio": 2.0}) == ZoomInSettings(expansion_ratio=2.0)
    with pytest.raises(ValueError, match="unknown field.*'ratio'"):
        as_zoom_in_settings({"ratio": 2.0})
    with pytest.raises(TypeError, match="zoom_in must be"):
        as_zoom_in_settings("yes")
    import json

    RefCutPredictor(tiny_model).save_pretrained(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config["predictor"] = {"zoom_in": {"expansion_ratio": 2.0, "min_crop_size": 300}}
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    loaded = RefCutPredictor.from_pretrained(tmp_path / "m")
    assert loaded.zoom_in == ZoomInSettings(expansion_ratio=2.0, min_crop_size=300)
    assert not RefCutPredictor.from_pretrained(tmp_path / "m", zoom_in=False).zoom_in.enabled


def test_crop_coordinates_and_paste_back_are_consistent():
    height, width, size = 90, 120, 64
    box = (10, 59, 20, 99)  # 50 x 80
    # A point maps to where its pixel lands after crop + resize, and paste_back inverts the crop.
    image = torch.zeros(1, 1, height, width)
    image[0, 0, 30, 60] = 1.0
    net = crop_resize(image, box, size)
    y, x = points_to_network(np.array([[30.0, 60.0]]), box, size)[0]
    peak = np.unravel_index(int(torch.argmax(net)), (size, size))
    assert abs(peak[0] - y) <= 1.5 and abs(peak[1] - x) <= 1.5
    canvas = paste_back(torch.ones(size, size), box, height, width)
    assert canvas[10:60, 20:100].min() == 1 and canvas.sum() == 50 * 80


def test_flip_averaging_makes_prediction_mirror_equivariant(tiny_model, rng):
    image = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)  # input size: no resampling
    clicks, labels = np.array([[10, 20], [40, 50]]), np.array([1, 0])
    mirrored_clicks = clicks.copy()
    mirrored_clicks[:, 0] = 63 - clicks[:, 0]

    def predict(flip, img, pts):
        p = RefCutPredictor(tiny_model, flip=flip, zoom_in=False)
        p.set_image(img)
        return p.predict(pts, labels).prob

    with_flip = predict(True, image, clicks)
    assert np.allclose(predict(True, image[:, ::-1], mirrored_clicks), with_flip[:, ::-1], atol=1e-5)
    without = predict(False, image, clicks)
    assert not np.allclose(predict(False, image[:, ::-1], mirrored_clicks), without[:, ::-1], atol=1e-5)


def test_reference_is_encoded_once_and_never_per_click(tiny_model, rng, monkeypatch):
    predictor = RefCutPredictor(tiny_model)
    reference = rng.integers(0, 256, size=(80, 60, 3), dtype=np.uint8)
    positive = np.zeros((80, 60), bool)
    positive[20:50, 10:40] = True
    calls = []
    original = tiny_model.encode_reference
    monkeypatch.setattr(tiny_model, "encode_reference", lambda x: calls.append(1) or original(x))
    predictor.set_reference(reference, positive)
    predictor.set_reference(reference, positive, ~positive)  # same image, other masks: cached
    assert len(calls) == 1 and predictor.reference_encodings == 1
    predictor.set_image(rng.integers(0, 256, size=(50, 50, 3), dtype=np.uint8))
    first = predictor.predict(np.array([[25, 25]]), np.array([1]))
    predictor.predict(np.array([[25, 25], [5, 5]]), np.array([1, 0]), first.prob)
    assert len(calls) == 1
    predictor.set_reference(rng.integers(0, 256, size=(80, 60, 3), dtype=np.uint8), positive)
    assert len(calls) == 2


def test_reference_crop_encodes_the_box_around_the_masks(tiny_model, rng, monkeypatch):
    reference = rng.integers(0, 256, size=(400, 300, 3), dtype=np.uint8)
    positive, negative = np.zeros((400, 300), bool), np.zeros((400, 300), bool)
    positive[100:150, 50:100] = True
    negative[150:260, 50:100] = True
    seen = []
    original = tiny_model.encode_reference
    monkeypatch.setattr(tiny_model, "encode_reference", lambda x: seen.append(x) or original(x))
    cropped = RefCutPredictor(tiny_model, reference_crop=1.5)
    assert cropped._reference_box(positive, negative, (400, 300)) == expand_box((100, 259, 50, 99), 1.5, 200, 400, 300)
    cropped.set_reference(reference, positive, negative)
    y0, y1, x0, x1 = expand_box((100, 259, 50, 99), 1.5, 200, 400, 300)
    expected = cropped._resize_input(cropped._to_tensor(np.ascontiguousarray(reference[y0 : y1 + 1, x0 : x1 + 1])))
    assert torch.equal(seen[-1], expected)
    whole = RefCutPredictor(tiny_model)
    whole.set_reference(reference, positive, negative)
    assert torch.equal(seen[-1], whole._resize_input(whole._to_tensor(reference)))
    assert not torch.allclose(cropped._positive_prototype, whole._positive_prototype)
    # Other masks on the same image are another crop: encoded again; the same masks are cached.
    cropped.set_reference(reference, positive, negative)
    assert cropped.reference_encodings == 1
    cropped.set_reference(reference, negative)
    assert cropped.reference_encodings == 2
    # No mask: nothing to crop around, the whole image is encoded.
    assert cropped._reference_box(None, np.zeros((400, 300), bool), (400, 300)) == (0, 399, 0, 299)
    with pytest.raises(ValueError, match="reference_crop"):
        RefCutPredictor(tiny_model, reference_crop=0.5)


def test_reference_changes_prediction_when_branch_is_trained(tiny_model, rng):
    torch.nn.init.normal_(tiny_model.reference.positive_mlp.fc2.weight, std=0.5)
    predictor = RefCutPredictor(tiny_model)
    target = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    predictor.set_image(target)
    plain = predictor.predict(np.array([[30, 30]]), np.array([1])).prob
    positive = np.zeros((64, 64), bool)
    positive[10:30, 10:30] = True
    predictor.set_reference(target, positive)
    assert predictor.has_reference
    guided = predictor.predict(np.array([[30, 30]]), np.array([1])).prob
    assert not np.allclose(plain, guided)
    predictor.clear_reference()
    assert np.allclose(predictor.predict(np.array([[30, 30]]), np.array([1])).prob, plain)
    # An empty positive mask and no negative is the same as no reference.
    predictor.set_reference(target, np.zeros((64, 64), bool))
    assert np.allclose(predictor.predict(np.array([[30, 30]]), np.array([1])).prob, plain)


def test_propose_point(tiny_model, rng):
    predictor = RefCutPredictor(tiny_model)
    image = rng.integers(0, 256, size=(90, 70, 3), dtype=np.uint8)
    predictor.set_image(image)
    assert predictor.propose_point() is None
    positive = np.zeros((90, 70), bool)
    positive[:30, :30] = True
    predictor.set_reference(image, positive)
    x, y = predictor.propose_point()
    assert 0 <= x < 70 and 0 <= y < 90


def test_save_load_round_trip(tiny_model, tmp_path, rng):
    torch.nn.init.normal_(tiny_model.reference.negative_mlp.fc2.weight)
    predictor = RefCutPredictor(tiny_model)
    predictor.save_pretrained(tmp_path / "model")
    loaded = RefCutPredictor.from_pretrained(tmp_path / "model")
    for (k1, v1), (k2, v2) in zip(tiny_model.state_dict().items(), loaded.model.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)
    assert loaded.model.config == tiny_model.config
    image = rng.integers(0, 256, size=(40, 50, 3), dtype=np.uint8)
    for p in (predictor, loaded):
        p.set_image(image)
    assert np.array_equal(predictor.predict(np.array([[3, 4]]), np.array([1])).prob,
                          loaded.predict(np.array([[3, 4]]), np.array([1])).prob)  # fmt: skip
    # fp16 storage loads back into float32 within fp16 precision
    predictor.save_pretrained(tmp_path / "half", dtype=torch.float16)
    half = RefCutPredictor.from_pretrained(tmp_path / "half" / "model.safetensors")
    weight = half.model.head.conv_seg.weight
    assert weight.dtype == torch.float32
    assert torch.allclose(weight, tiny_model.head.conv_seg.weight, atol=1e-3)


def test_loading_errors(tmp_path, tiny_model):
    with pytest.raises(FileNotFoundError, match="no model at"):
        RefCutPredictor.from_pretrained(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="missing config.json"):
        RefCutPredictor.from_pretrained(tmp_path / "empty")
    pth = tmp_path / "model.pth"
    pth.write_bytes(b"")
    with pytest.raises(ValueError, match="import-weights"):
        RefCutPredictor.from_pretrained(pth)
    RefCutPredictor(tiny_model).save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a RefCut model config"):
        RefCutPredictor.from_pretrained(tmp_path / "m")


def test_default_model_missing_gives_guidance(monkeypatch, tmp_path):
    import refcut.predictor.predictor as module

    monkeypatch.setattr(module, "DEFAULT_MODEL_DIR", tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match="pass a model directory"):
        RefCutPredictor.from_pretrained()


def test_misuse_raises_clear_errors(predictor, rng):
    image = rng.integers(0, 256, size=(40, 50, 3), dtype=np.uint8)
    with pytest.raises(RuntimeError, match="set_image"):
        predictor.predict(np.array([[1, 1]]), np.array([1]))
    predictor.set_image(image)
    cases = [
        ((np.zeros((0, 2)), np.zeros(0)), "empty"),
        ((np.array([[50, 10]]), np.array([1])), "outside the 50x40 image"),
        ((np.array([[10, -1]]), np.array([1])), "outside"),
        ((np.array([[1, 2, 3]]), np.array([1])), r"shape \(N, 2\)"),
        ((np.array([[1, 2]]), np.array([2])), "1 \\(positive\\) or 0"),
        ((np.array([[1, 2]]), np.array([1, 0])), "point_labels must have shape"),
        ((np.array([[np.nan, 2]]), np.array([1])), "NaN"),
    ]
    for (coords, labels), message in cases:
        with pytest.raises(ValueError, match=message):
            predictor.predict(coords, labels)
    with pytest.raises(ValueError, match="prev_mask has shape"):
        predictor.predict(np.array([[1, 1]]), np.array([1]), prev_mask=np.zeros((50, 40)))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        predictor.predict(np.array([[1, 1]]), np.array([1]), prev_mask=np.full((40, 50), 3.0))
    with pytest.raises(ValueError, match="uint8"):
        predictor.set_image(image.astype(np.float32))
    with pytest.raises(ValueError, match="shape"):
        predictor.set_image(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(ValueError, match="positive_mask has shape"):
        predictor.set_reference(image, np.zeros((10, 10), bool))
    with pytest.raises(ValueError, match="negative_mask has shape"):
        predictor.set_reference(image, None, np.zeros((40, 51), bool))
    with pytest.raises(ValueError, match="precision"):
        RefCutPredictor(predictor.model, precision="int4")


def test_bf16_precision_runs(tiny_model, rng):
    predictor = RefCutPredictor(tiny_model, precision="bf16")
    predictor.set_image(rng.integers(0, 256, size=(40, 50, 3), dtype=np.uint8))
    fp32 = RefCutPredictor(tiny_model)
    fp32.set_image(predictor._image.permute(0, 2, 3, 1)[0].mul(255).round().byte().numpy())
    a = predictor.predict(np.array([[10, 10]]), np.array([1])).prob
    b = fp32.predict(np.array([[10, 10]]), np.array([1])).prob
    assert a.dtype == np.float32 and np.abs(a - b).max() < 0.05


def test_the_shipped_default_model_loads_and_segments_the_demo_image():
    """``from_pretrained()`` with no argument: the packaged encode-once model (+ its guided-filter / GrabCut boundary step)."""
    import cv2

    from refcut.weights.native import DEFAULT_MODEL_DIR

    predictor = RefCutPredictor.from_pretrained()
    assert predictor.encode_once and predictor.refine == "guided-grabcut"
    assert (DEFAULT_MODEL_DIR / "model.safetensors").stat().st_size < 5 * 2**20  # the decoder only, fp16
    image = cv2.cvtColor(cv2.imread(str(DEFAULT_MODEL_DIR.parents[1] / "demo" / "images" / "ccp_0001.jpg")), cv2.COLOR_BGR2RGB)
    predictor.set_image(image)
    height, width = image.shape[:2]
    click = np.array([[width // 2, height // 2]])
    result = predictor.predict(click, np.array([1]))
    assert result.mask.shape == (height, width) and result.mask[height // 2, width // 2]
    assert 0.001 < result.mask.mean() < 0.9


@pytest.mark.parametrize("family", ["early_fusion", "encode_once"])
def test_reference_yields_to_repeated_overruled_clicks_until_they_are_undone(tiny_model, rng, monkeypatch, family):
    from refcut.model.encode_once import EncodeOnceConfig, EncodeOnceModel

    model = tiny_model if family == "early_fusion" else EncodeOnceModel(EncodeOnceConfig.from_preset("encode_once_tiny_test")).eval()
    size = model.config.image_size
    with_reference: list[bool] = []

    def network(*args):
        """A stand-in network: the reference draws everything, the clicks alone draw nothing."""
        prompt = args[3]
        with_reference.append(prompt is not None)
        return torch.full((1, 1, size, size), 5.0 if prompt is not None else -5.0)

    monkeypatch.setattr(model, "forward" if family == "early_fusion" else "decode", network)
    image = rng.integers(0, 256, size=(100, 100, 3), dtype=np.uint8)
    positive = np.zeros((100, 100), bool)
    positive[20:60, 30:70] = True
    clicks, labels = np.array([[50, 50], [10, 10], [12, 11], [90, 90]]), np.array([1, 0, 0, 1])

    def run(predictor: RefCutPredictor, n: int) -> tuple[bool, list[bool]]:
        with_reference.clear()
        everything = bool(predictor.predict(clicks[:n], labels[:n]).mask.all())
        return everything, list(with_reference)

    predictor = RefCutPredictor(model, zoom_in=False, flip=False, reference_yield=0.05)
    predictor.set_reference(image, positive)
    predictor.set_image(image)
    assert run(predictor, 1) == (True, [True])
    assert run(predictor, 2) == (True, [True])  # overruled once: the reference stands
    assert run(predictor, 3) == (False, [True, False])  # overruled again within 5 px: it yields ...
    assert run(predictor, 4) == (False, [False])  # ... for the later clicks too
    assert run(predictor, 2) == (True, [True])  # undone past the third click: the reference is back
    assert run(predictor, 3) == (False, [True, False])
    predictor.set_image(image)  # a new image starts with the reference
    assert run(predictor, 2) == (True, [True])
    far = clicks.copy()
    far[2] = [60, 90]  # the second negative click lands far from the first: no insisting
    predictor.set_image(image)
    with_reference.clear()
    assert predictor.predict(far[:3], labels[:3]).mask.all() and with_reference == [True]
    plain = RefCutPredictor(model, zoom_in=False, flip=False)  # off by default
    plain.set_reference(image, positive)
    plain.set_image(image)
    assert run(plain, 4) == (True, [True])
    with pytest.raises(ValueError, match="reference_yield"):
        RefCutPredictor(model, reference_yield=0.0)
