"""Label Studio's data formats: the labeling config, interactive keypoints, brush regions in LS RLE.

Masks travel in Label Studio's own brush RLE, written and read with its converter
(``label_studio_sdk.converter.brush``); nothing here encodes RLE by hand. Keypoints come in
percent of the image's width and height (0..100), as the Label Studio frontend sends them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import numpy as np

from label_studio_sdk.converter import brush
from label_studio_sdk.label_interface import LabelInterface

EXAMPLE_LABEL_CONFIG = """<View>
  <Image name="image" value="$image" zoom="true"/>
  <BrushLabels name="mask" toName="image">
    <Label value="hair" background="#e6194b"/>
    <Label value="skin" background="#3cb44b"/>
  </BrushLabels>
  <KeyPointLabels name="click" toName="image" smart="true">
    <Label value="hair" smart="true" background="#e6194b" showInline="true"/>
    <Label value="skin" smart="true" background="#3cb44b" showInline="true"/>
  </KeyPointLabels>
</View>"""
"""The labeling config RefCut expects: an Image, a BrushLabels and a smart KeyPointLabels with the same labels."""


class ProtocolError(ValueError):
    """A request Label Studio sent (or a stored annotation) that RefCut cannot use; the message says why."""


@dataclass(frozen=True)
class LabelingConfig:
    """The parts of a project's labeling config the backend uses."""

    image_name: str
    """``name`` of the ``<Image>`` tag (the brush regions' ``to_name``)."""
    image_field: str
    """Task data key holding the image URL (``$image`` -> ``image``)."""
    brush_name: str
    """``name`` of the ``<BrushLabels>`` tag (the regions' ``from_name``)."""
    labels: tuple[str, ...]
    """The BrushLabels label names, in config order."""
    keypoint_names: tuple[str, ...]
    """Names of the KeyPointLabels tags on the same image (their labels must be brush labels)."""

    @classmethod
    def parse(cls, label_config: str | None) -> "LabelingConfig":
        """Read a labeling config (XML); raise :class:`ProtocolError` naming what is missing."""
        if not label_config or not label_config.strip():
            raise ProtocolError("the request carries no labeling config")
        try:
            interface = LabelInterface(label_config)
            brush_name, image_name, image_field = interface.get_first_tag_occurence("BrushLabels", "Image")
        except ValueError as error:
            raise ProtocolError(
                "the labeling config needs an <Image> with a <BrushLabels> on it (RefCut returns brush masks), "
                f"and a smart <KeyPointLabels> with the same labels for clicks: {error}") from error
        except Exception as error:  # noqa: BLE001 - the SDK raises its own XML error types
            raise ProtocolError(f"the labeling config is not valid XML: {error}") from error
        labels = tuple(interface.get_control(brush_name).labels)
        keypoints = tuple(
            control.name for control in interface.controls
            if control.tag.lower() == "keypointlabels" and image_name in (control.to_name or [])
        )
        return cls(image_name=image_name, image_field=image_field, brush_name=brush_name, labels=labels,
                   keypoint_names=keypoints)


@dataclass(frozen=True)
class Keypoint:
    """One click in percent of the image size (0..100), as Label Studio stores keypoints."""

    x: float
    y: float
    positive: bool

    def to_pixels(self, width: int, height: int) -> tuple[float, float]:
        """(x, y) in pixels of a ``width`` x ``height`` image, clamped onto the last pixel row/column."""
        return min(self.x * width / 100.0, width - 1), min(self.y * height / 100.0, height - 1)


@dataclass(frozen=True)
class ClickContext:
    """The keypoints of one label from an interactive request, and the size Label Studio shows the image at."""

    label: str
    keypoints: tuple[Keypoint, ...]
    width: int
    height: int


def parse_context(context: dict | None, config: LabelingConfig) -> ClickContext | None:
    """The label of the newest keypoint and all keypoints of that label, or None without keypoints.

    Label Studio sends every smart region of the current annotation in ``context["result"]``; the
    last one is the click just made. Raises :class:`ProtocolError` for malformed keypoints, labels
    that are not brush labels, and keypoints outside the image.
    """
    if not context or not context.get("result"):
        return None
    items = context["result"]
    if not isinstance(items, list):
        raise ProtocolError("context.result must be a list of regions")
    parsed: list[tuple[str, Keypoint, int, int]] = []
    for item in items:
        if not isinstance(item, dict) or item.get("type") != "keypointlabels":
            continue  # rectangles or other smart tools: RefCut only takes clicks
        value = item.get("value") or {}
        names = value.get("keypointlabels") or value.get("labels") or []
        try:
            x, y = float(value["x"]), float(value["y"])
            width, height = int(item["original_width"]), int(item["original_height"])
        except (KeyError, TypeError, ValueError) as error:
            raise ProtocolError(f"keypoint {item.get('id', '?')} lacks x/y (percent) or original_width/height") from error
        if not names:
            raise ProtocolError(f"keypoint {item.get('id', '?')} has no label")
        if not (np.isfinite(x) and np.isfinite(y)) or not (0 <= x <= 100 and 0 <= y <= 100):
            raise ProtocolError(f"keypoint at ({x:g} %, {y:g} %) lies outside the image (0..100 %)")
        if width <= 0 or height <= 0:
            raise ProtocolError(f"keypoint {item.get('id', '?')} has an invalid image size {width}x{height}")
        parsed.append((str(names[0]), Keypoint(x, y, bool(item.get("is_positive", True))), width, height))
    if not parsed:
        return None
    label, _, width, height = parsed[-1]
    if label not in config.labels:
        raise ProtocolError(f"keypoint label {label!r} is not a label of <BrushLabels name=\"{config.brush_name}\"> "
                            f"({', '.join(config.labels)}): give both tags the same labels")
    keypoints = tuple(point for name, point, _, _ in parsed if name == label)
    return ClickContext(label=label, keypoints=keypoints, width=width, height=height)


def brush_region(mask: np.ndarray, label: str, config: LabelingConfig, score: float) -> dict:
    """A Label Studio ``brushlabels`` region for a HxW bool mask, in LS RLE (``brush.mask2rle``)."""
    height, width = mask.shape
    return {
        "id": uuid.uuid4().hex[:10],
        "from_name": config.brush_name,
        "to_name": config.image_name,
        "type": "brushlabels",
        "original_width": int(width),
        "original_height": int(height),
        "image_rotation": 0,
        "value": {"format": "rle", "rle": brush.mask2rle(mask.astype(np.uint8) * 255), "brushlabels": [label]},
        "score": float(score),
        "readonly": False,
    }


def decode_brush(region: dict) -> np.ndarray:
    """HxW bool mask of a ``brushlabels`` region (painted where its alpha is at least 128)."""
    value = region.get("value") or {}
    rle = value.get("rle")
    try:
        width, height = int(region["original_width"]), int(region["original_height"])
    except (KeyError, TypeError, ValueError) as error:
        raise ProtocolError("brush region lacks original_width/original_height") from error
    if value.get("format", "rle") != "rle" or not isinstance(rle, list) or not rle:
        raise ProtocolError("brush region has no RLE (value.format 'rle' with value.rle)")
    try:
        flat = brush.decode_rle(rle)
    except (ValueError, IndexError) as error:
        raise ProtocolError(f"brush RLE does not decode: {error}") from error
    if flat.size != width * height * 4:
        raise ProtocolError(f"brush RLE holds {flat.size // 4} pixels, but the region says {width}x{height}")
    return flat.reshape(height, width, 4)[:, :, 3] >= 128


def region_labels(region: dict) -> list[str]:
    """The labels of a ``brushlabels`` region (empty for other region types)."""
    if region.get("type") != "brushlabels":
        return []
    return [str(name) for name in (region.get("value") or {}).get("brushlabels") or []]


def prediction(regions: list[dict], model_version: str, **extra: object) -> dict:
    """One Label Studio prediction: its regions, their mean score, the model version, plus ``extra`` keys."""
    score = float(np.mean([region["score"] for region in regions])) if regions else 0.0
    return {"result": regions, "score": score, "model_version": model_version, **extra}
