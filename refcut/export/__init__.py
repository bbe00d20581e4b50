"""Export annotations to COCO (RLE or polygons), YOLO-seg, index PNGs and LabelMe, and read them back.

Storage-independent: callers pass :class:`ExportImage` records with full-size boolean masks.
"""

from refcut.export.formats import FORMATS, READERS, export_dataset, export_dataset_with_summary
from refcut.export.geometry import mask_to_polygons, polygons_to_mask
from refcut.export.coco import read_coco
from refcut.export.labelme import read_labelme
from refcut.export.png import read_png
from refcut.export.records import ExportImage, ExportInstance, ExportSummary
from refcut.export.yolo import read_yolo_seg

__all__ = [
    "FORMATS",
    "READERS",
    "ExportImage",
    "ExportInstance",
    "ExportSummary",
    "export_dataset",
    "export_dataset_with_summary",
    "mask_to_polygons",
    "polygons_to_mask",
    "read_coco",
    "read_labelme",
    "read_png",
    "read_yolo_seg",
]
