"""RefCut as a Label Studio ML backend: interactive keypoints -> brush masks, one reference per label.

``refcut label-studio-backend`` starts it; :func:`create_app` builds the FastAPI app around a
:class:`RefCutBackend`. See docs/label-studio.md.
"""

from refcut.integrations.label_studio.protocol import EXAMPLE_LABEL_CONFIG, LabelingConfig

__all__ = ["EXAMPLE_LABEL_CONFIG", "LabelingConfig"]
