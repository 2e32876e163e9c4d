"""Pretrained backbone weights: where they come from, how they are checked, what a run records.

Two ImageNet backbones are supported:

* ``resnet18`` — the paper's backbone (RegAD, ECCV 2022). Its weights are torchvision's own file
  ``resnet18-f37072fd.pth`` (``ResNet18_Weights.IMAGENET1K_V1``), looked up the torchvision way:
  an explicit path, the ``$FSAD_WEIGHTS`` environment variable, or torchvision's cache
  ``torch.hub.get_dir()/checkpoints/`` (which follows ``$TORCH_HOME``). The 8 hex digits in
  torchvision's file name are the first 8 of the file's SHA-256 and are checked. Nothing is
  downloaded unless ``allow_download=True`` is passed: the kit never hard-requires a network.
* ``mobilenet_v2`` — the offline alternative. The kit ships the ONNX Model Zoo's int8
  MobileNetV2 (``fsad/assets/mobilenetv2-12-int8.onnx``, Apache-2.0, SHA-256 checked). It is
  dequantised once into a float torchvision ``mobilenet_v2()`` state dict (recipe in
  ``fsad/assets/README.md`` and :func:`convert_mobilenet_v2_onnx`) and cached in
  torchvision's checkpoint directory keyed by the ONNX SHA-256, so later loads are a plain
  ``torch.load``. ``onnxruntime`` is not needed at run time (only the ``onnx`` reader).

Every loader returns a :class:`WeightsInfo` that results files record (backbone, kind, path,
SHA-256, seed), so no run ever uses other weights silently.

Example:
    >>> sd, info = load_backbone_weights("mobilenet_v2")           # offline, shipped file
    >>> info.kind, info.sha256[:8]
    ('imagenet', 'cc028fe6')
    >>> sd, info = load_backbone_weights("resnet18", "random", seed=3)
    >>> sd is None, info.seed
    (True, 3)
"""

from __future__ import annotations

import os
import re
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torchvision
from torch import nn

from fsad.errors import WeightsError
from fsad.models.backbone import backbone_spec
from fsad.utils import atomic_torch_save, sha256_file

__all__ = [
    "IMAGENET_SOURCES",
    "FSAD_WEIGHTS_ENV",
    "MOBILENET_V2_ONNX_SHA256",
    "MOBILENET_V2_ONNX_SIZE",
    "RESNET18_FILENAMES",
    "WeightsError",
    "WeightsInfo",
    "checkpoints_dir",
    "convert_mobilenet_v2_onnx",
    "default_backbone",
    "load_backbone_weights",
    "mobilenet_v2_cache_path",
    "mobilenet_v2_conv_bn_pairs",
    "mobilenet_v2_imagenet_state_dict",
    "pair_onnx_convs",
    "read_onnx_qconvs",
    "resnet18_imagenet_available",
    "resnet18_imagenet_state_dict",
    "shipped_mobilenet_v2_onnx",
]

WEIGHT_CHOICES = ("imagenet", "random", "<path to a torchvision state dict>")
FSAD_WEIGHTS_ENV = "FSAD_WEIGHTS"

# torchvision's file names: "<arch>-<first 8 hex of the file's SHA-256>.pth". f37072fd is the
# current ResNet18_Weights.IMAGENET1K_V1 file, 5c106cde the older release of the same weights.
RESNET18_FILENAMES = ("resnet18-f37072fd.pth", "resnet18-5c106cde.pth")
# Same rule torch.hub uses to find the hash in a checkpoint name (torch.hub.HASH_REGEX is
# "-([a-f0-9]*)\."), but requiring >= 8 digits so that ordinary names like "my-bad.pth" are not
# mistaken for hashes.
_HASH_SUFFIX = re.compile(r"-([0-9a-f]{8,64})\.[A-Za-z0-9]+$")

# ONNX Model Zoo, validated/vision/classification/mobilenet/model/mobilenetv2-12-int8.onnx
# (Git LFS oid and size; see fsad/assets/README.md).
MOBILENET_V2_ONNX_SHA256 = "cc028fe6cae7bc11a4ff53cfc9b79c920e8be65ce33a904ec3e2a8f66d77f95f"
MOBILENET_V2_ONNX_SIZE = 3_655_033
MOBILENET_V2_ONNX_NAME = "mobilenetv2-12-int8.onnx"
MOBILENET_V2_NUM_CONVS = 52  # 1 stem + 2 (block 1) + 16 blocks x 3 + 1 head conv
# Bumped whenever the conversion changes, so an old cache is never reused for a new recipe.
_MOBILENET_CACHE_FORMAT = 1


@dataclass
class WeightsInfo:
    """What a run used as backbone weights (recorded in every results file).

    Attributes:
        backbone: a name in :data:`fsad.models.backbone.BACKBONE_TABLE`.
        kind: ``"imagenet"`` (verified ImageNet file), ``"random"`` (torchvision's init with
            ``seed``) or ``"file"`` (a user state dict the kit cannot verify as ImageNet).
        path: the file that was read, or None.
        sha256: full SHA-256 of that file (for mobilenet_v2: of the ONNX source), or None.
        seed: the initialisation seed for ``"random"``, else None.
        note: a human-readable sentence (where it came from, cache hits, caveats).
    """

    backbone: str
    kind: str
    path: str | None
    sha256: str | None
    seed: int | None
    note: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------------------------
# locations
# --------------------------------------------------------------------------------------------
def checkpoints_dir() -> Path:
    """torchvision's checkpoint cache, ``torch.hub.get_dir()/checkpoints`` (follows $TORCH_HOME)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def shipped_mobilenet_v2_onnx() -> Path:
    """Path of the int8 MobileNetV2 ONNX file shipped inside the package."""
    return Path(__file__).resolve().parent / "assets" / MOBILENET_V2_ONNX_NAME


def mobilenet_v2_cache_path(onnx_sha256: str = MOBILENET_V2_ONNX_SHA256) -> Path:
    """Where the dequantised float state dict is cached, keyed by the ONNX file's SHA-256."""
    return checkpoints_dir() / f"mobilenet_v2-imagenet-int8onnx-{onnx_sha256[:8]}.pth"


def _build(backbone: str) -> nn.Module:
    return backbone_spec(backbone).build()


def _check_backbone(backbone: str) -> None:
    backbone_spec(backbone)  # raises ValueError naming the valid backbones


# --------------------------------------------------------------------------------------------
# state-dict validation
# --------------------------------------------------------------------------------------------
def _validate_state_dict(state_dict: Any, backbone: str, source: str) -> dict[str, torch.Tensor]:
    """Check keys and shapes against torchvision's model; return a dict that loads strictly.

    Missing ``*.num_batches_tracked`` buffers are filled with 0: torchvision's older checkpoints
    (e.g. resnet18-5c106cde.pth) predate that buffer and torchvision itself accepts them.
    """
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise WeightsError(
            f"{source} is not a state dict (a mapping of parameter names to tensors) for {backbone}; "
            "save one with torch.save(model.state_dict(), path)."
        )
    reference = _build(backbone).state_dict()
    state_dict = dict(state_dict)
    for key, value in reference.items():
        if key.endswith("num_batches_tracked") and key not in state_dict:
            state_dict[key] = torch.zeros_like(value)
    missing = sorted(set(reference) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(reference))
    if missing or unexpected:
        raise WeightsError(
            f"{source} does not fit torchvision.models.{backbone}(): {len(missing)} missing keys "
            f"{_preview(missing)}, {len(unexpected)} unexpected keys {_preview(unexpected)}. "
            f"It must be a plain torchvision {backbone} state dict (not a whole checkpoint with "
            "'state_dict'/'model' entries, and without 'module.' prefixes)."
        )
    wrong = [
        f"{k}: {tuple(state_dict[k].shape)} != {tuple(v.shape)}"
        for k, v in reference.items()
        if tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if wrong:
        raise WeightsError(f"{source} has tensors of the wrong shape for {backbone}: {_preview(wrong)}.")
    return state_dict


def _preview(items: list[str], n: int = 4) -> str:
    return "[" + ", ".join(items[:n]) + (", ..." if len(items) > n else "") + "]"


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # zip errors, pickle errors, truncation: all mean "unreadable"
        raise WeightsError(
            f"Cannot read weights file {path}: {type(error).__name__}: {error}. The file is corrupt, "
            "truncated or not a torch.save'd state dict; delete it and provide it again."
        ) from error


# --------------------------------------------------------------------------------------------
# ResNet-18 (torchvision's ImageNet file)
# --------------------------------------------------------------------------------------------
def _resnet18_how_to(searched: list[str]) -> str:
    cache = checkpoints_dir()
    return (
        "ImageNet ResNet-18 weights were not found (searched: " + "; ".join(searched) + "). "
        "Ways to provide them:\n"
        f"  1. run once with network access and allow the download (e.g. "
        f"fsad.weights.resnet18_imagenet_state_dict(allow_download=True), or "
        f"torchvision.models.resnet18(weights='IMAGENET1K_V1')): torchvision saves "
        f"{RESNET18_FILENAMES[0]} to {cache};\n"
        f"  2. copy torchvision's file {RESNET18_FILENAMES[0]} (from another machine's "
        f"~/.cache/torch/hub/checkpoints) into {cache} (set TORCH_HOME to use another cache root);\n"
        "  3. pass --weights PATH (Python: weights=PATH) with the file's path;\n"
        f"  4. set the environment variable {FSAD_WEIGHTS_ENV}=PATH;\n"
        "  5. use --weights random (randomly initialised ResNet-18, seeded; not ImageNet features);\n"
        "  6. use --backbone mobilenet_v2: genuine ImageNet MobileNetV2 weights ship with the kit "
        "and work offline."
    )


def _find_resnet18(path: str | os.PathLike | None) -> tuple[Path | None, str, list[str]]:
    """Locate the file: explicit path, then $FSAD_WEIGHTS, then torchvision's cache."""
    if path is not None:
        return Path(path).expanduser(), "explicit path", [str(path)]
    env = os.environ.get(FSAD_WEIGHTS_ENV)
    if env:
        return Path(env).expanduser(), f"${FSAD_WEIGHTS_ENV}", [f"${FSAD_WEIGHTS_ENV}={env}"]
    searched = [str(checkpoints_dir() / name) for name in RESNET18_FILENAMES]
    for candidate in searched:
        if Path(candidate).is_file():
            return Path(candidate), "torchvision cache", searched
    return None, "", searched


def _check_hash_suffix(path: Path, digest: str) -> bool:
    """True if the name carries a hash and it matches; WeightsError if it does not; False if none."""
    match = _HASH_SUFFIX.search(path.name)
    if match is None:
        return False
    prefix = match.group(1)
    if not digest.startswith(prefix):
        raise WeightsError(
            f"SHA-256 check failed for {path}: the name says the hash starts with {prefix!r} "
            f"(torchvision's naming rule) but the file's SHA-256 is {digest} (starts with "
            f"{digest[: len(prefix)]!r}). The file is corrupt, truncated or not the published one; "
            "delete it and obtain torchvision's file again."
        )
    return True


def resnet18_imagenet_state_dict(
    path: str | os.PathLike | None = None, allow_download: bool = False
) -> tuple[dict[str, torch.Tensor], WeightsInfo]:
    """torchvision's ImageNet ResNet-18 state dict, found offline and verified.

    Args:
        path: explicit file. Default: ``$FSAD_WEIGHTS``, else ``resnet18-f37072fd.pth`` or
            ``resnet18-5c106cde.pth`` in :func:`checkpoints_dir`.
        allow_download: only when True and nothing is found, let torchvision download
            ``ResNet18_Weights.IMAGENET1K_V1`` into its cache (needs network). Default False.

    Returns:
        ``(state_dict, info)``; the state dict loads strictly into ``torchvision.models.resnet18()``.
        ``info.kind`` is ``"imagenet"`` when the file's name carries torchvision's hash and it
        matches, ``"file"`` for an explicit file whose name has no hash (full SHA-256 recorded).

    Raises:
        WeightsError: not found (the message lists every way to provide the file), hash mismatch,
            unreadable file, or keys/shapes that do not fit ResNet-18.

    Example:
        >>> sd, info = resnet18_imagenet_state_dict("resnet18-f37072fd.pth")  # doctest: +SKIP
        >>> info.sha256[:8], sd["fc.weight"].shape
        ('f37072fd', torch.Size([1000, 512]))
    """
    found, source, searched = _find_resnet18(path)
    if found is None or not found.is_file():
        if found is None and allow_download:
            return _download_resnet18()
        if found is not None:
            raise WeightsError(
                f"The ResNet-18 weights file given by {source} does not exist: {found}.\n" + _resnet18_how_to(searched)
            )
        raise WeightsError(_resnet18_how_to(searched))
    digest = sha256_file(found)
    verified = _check_hash_suffix(found, digest)
    state_dict = _validate_state_dict(_torch_load(found), "resnet18", f"Weights file {found}")
    if verified and found.name in RESNET18_FILENAMES:
        kind = "imagenet"
        note = f"torchvision ImageNet ResNet-18 {found.name} from {source}; SHA-256 prefix in the name verified"
    elif verified:
        # A self-consistent hub-style name proves integrity, not that these are ImageNet weights.
        kind = "file"
        note = (
            f"ResNet-18 state dict from {source}; SHA-256 prefix in the name verified, but "
            f"{found.name} is not one of torchvision's ImageNet files {RESNET18_FILENAMES}"
        )
    else:
        kind = "file"
        note = (
            f"ResNet-18 state dict from {source}; its name has no torchvision hash suffix, so it "
            "cannot be verified as torchvision's ImageNet file (full SHA-256 recorded)"
        )
    return state_dict, WeightsInfo("resnet18", kind, str(found), digest, None, note)


def _download_resnet18() -> tuple[dict[str, torch.Tensor], WeightsInfo]:
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    try:
        # torchvision's own downloader: saves into checkpoints_dir() and checks the hash prefix.
        weights.get_state_dict(progress=True, check_hash=True)
    except Exception as error:
        raise WeightsError(
            f"Downloading {weights.url} failed ({type(error).__name__}: {error}).\n"
            + _resnet18_how_to([str(checkpoints_dir())])
        ) from error
    return resnet18_imagenet_state_dict(checkpoints_dir() / Path(weights.url).name)


def resnet18_imagenet_available() -> bool:
    """True if torchvision's ImageNet ResNet-18 file is found offline and its hash checks out.

    Looks where :func:`resnet18_imagenet_state_dict` looks ($FSAD_WEIGHTS, then the torch cache).
    Hashes the file (~0.1 s for 47 MB) but does not unpickle it.
    """
    found, _, _ = _find_resnet18(None)
    if found is None or not found.is_file():
        return False
    if found.name not in RESNET18_FILENAMES:
        return False  # e.g. $FSAD_WEIGHTS names a fine-tuned file: usable, but not "ImageNet available"
    try:
        return _check_hash_suffix(found, sha256_file(found))
    except (WeightsError, OSError):
        return False


def default_backbone() -> str:
    """``"resnet18"`` (the paper's backbone) if its ImageNet file is here, else ``"mobilenet_v2"``.

    MobileNetV2's ImageNet weights ship with the kit, so the default always has genuine
    pretrained features; nothing falls back to random weights unless asked.
    """
    return "resnet18" if resnet18_imagenet_available() else "mobilenet_v2"


# --------------------------------------------------------------------------------------------
# MobileNetV2 from the shipped int8 ONNX file
# --------------------------------------------------------------------------------------------
@dataclass
class QConv:
    """One dequantised ``QLinearConv`` node of the ONNX graph (float32 weight and bias)."""

    name: str
    weight: torch.Tensor  # [out, in/groups, kh, kw]
    bias: torch.Tensor  # [out]
    group: int
    stride: tuple[int, ...]
    pads: tuple[int, ...]


def mobilenet_v2_conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """``(conv_name, bn_name)`` for every Conv2d directly followed by a BatchNorm2d, in module order.

    torchvision's ``mobilenet_v2()`` has 52: the stem, the two convs of block 1, three per block
    for blocks 2–17, and the 1×1 head conv to 1280 channels.
    """
    modules = list(model.named_modules())
    pairs = []
    for (name, module), (next_name, next_module) in zip(modules, modules[1:]):
        if isinstance(module, nn.Conv2d):
            if not isinstance(next_module, nn.BatchNorm2d):
                raise WeightsError(
                    f"Conv2d {name} is not followed by a BatchNorm2d (got {next_name}); "
                    "this is not torchvision's mobilenet_v2 layout."
                )
            pairs.append((name, next_name))
    return pairs


def _onnx_array(inits: dict[str, Any], name: str) -> np.ndarray:
    from onnx import numpy_helper

    if name not in inits:
        raise WeightsError(f"ONNX initializer {name!r} is missing; not the expected int8 MobileNetV2 graph.")
    return numpy_helper.to_array(inits[name])


def _dequantize(values: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, axis: int) -> np.ndarray:
    """``(q - zero_point) * scale``, per-tensor or per-channel along ``axis`` (ONNX DequantizeLinear)."""
    shape = [1] * values.ndim
    if np.ndim(scale) == 1:
        shape[axis] = -1
    scale = np.asarray(scale, dtype=np.float64).reshape(shape)
    zero_point = np.asarray(zero_point, dtype=np.float64).reshape(shape)
    return ((values.astype(np.float64) - zero_point) * scale).astype(np.float32)


def _load_onnx(onnx_path: Path) -> Any:
    try:
        import onnx
    except ImportError as error:  # pragma: no cover - onnx is a core dependency
        raise WeightsError(
            "The 'onnx' package is needed to convert the shipped MobileNetV2 file: "
            "pip install onnx (it is pinned in the kit's dependency files)."
        ) from error
    try:
        model = onnx.load(str(onnx_path))
        onnx.checker.check_model(model)
    except Exception as error:  # protobuf DecodeError, checker ValidationError, OSError
        raise WeightsError(
            f"Cannot read ONNX file {onnx_path}: {type(error).__name__}: {error}. "
            "The file is corrupt or truncated; restore fsad/assets/"
            f"{MOBILENET_V2_ONNX_NAME} from the repository."
        ) from error
    return model


def read_onnx_qconvs(onnx_model: Any) -> tuple[list[QConv], torch.Tensor, torch.Tensor]:
    """Dequantise every ``QLinearConv`` (graph order) and the ``QLinearMatMul`` classifier.

    QLinearConv inputs are (x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, bias): the weight is
    int8 per output channel, the bias int32 with scale ``x_scale * w_scale`` and zero point 0
    (ONNX operator spec). The classifier is ``QLinearMatMul`` with a 1280×1000 int8 weight
    (per output column) followed by a ``QLinearAdd`` with a uint8 bias.

    Returns:
        ``(convs, classifier_weight [1000, 1280], classifier_bias [1000])`` in float32.
    """
    graph = onnx_model.graph
    inits = {init.name: init for init in graph.initializer}
    convs: list[QConv] = []
    matmul = None
    add_after = {}
    for node in graph.node:
        if node.op_type == "QLinearConv":
            x_scale = _onnx_array(inits, node.input[1])
            w_q = _onnx_array(inits, node.input[3])
            w_scale = _onnx_array(inits, node.input[4])
            w_zp = _onnx_array(inits, node.input[5])
            if len(node.input) < 9 or not node.input[8]:
                raise WeightsError(f"QLinearConv {node.name} has no bias; batch norm was expected to be folded in.")
            b_q = _onnx_array(inits, node.input[8])
            weight = _dequantize(w_q, w_scale, w_zp, axis=0)
            bias_scale = np.asarray(x_scale, np.float64) * np.asarray(w_scale, np.float64)
            bias = (b_q.astype(np.float64) * bias_scale).astype(np.float32)
            attrs = {a.name: a for a in node.attribute}
            group = attrs["group"].i if "group" in attrs else 1
            stride = tuple(attrs["strides"].ints) if "strides" in attrs else (1, 1)
            pads = tuple(attrs["pads"].ints) if "pads" in attrs else (0, 0, 0, 0)
            convs.append(QConv(node.name, torch.from_numpy(weight), torch.from_numpy(bias), group, stride, pads))
        elif node.op_type == "QLinearMatMul":
            matmul = node
        elif node.op_type == "QLinearAdd":
            add_after[node.input[0]] = node
    if matmul is None:
        raise WeightsError("The ONNX graph has no QLinearMatMul classifier; not the expected int8 MobileNetV2.")
    w_q = _onnx_array(inits, matmul.input[3])
    fc_weight = _dequantize(w_q, _onnx_array(inits, matmul.input[4]), _onnx_array(inits, matmul.input[5]), axis=1)
    add = add_after.get(matmul.output[0])
    if add is None:
        raise WeightsError(f"No QLinearAdd (classifier bias) follows {matmul.name} in the ONNX graph.")
    # The bias is the Add's operand that is an initializer (inputs 0-2 are the MatMul output).
    fc_bias = _dequantize(
        _onnx_array(inits, add.input[3]), _onnx_array(inits, add.input[4]), _onnx_array(inits, add.input[5]), axis=0
    )
    # MatMul computes x @ W with W stored [in=1280, out=1000]; nn.Linear stores [out, in].
    return convs, torch.from_numpy(np.ascontiguousarray(fc_weight.T)), torch.from_numpy(fc_bias)


def pair_onnx_convs(convs: list[QConv], model: nn.Module) -> list[tuple[str, str, QConv]]:
    """Pair ONNX convs (graph order) with the model's Conv2d→BatchNorm2d pairs (module order).

    Every pair is checked: weight shape (which encodes depthwise groups as ``in/groups == 1``),
    ``groups``, stride and padding. Any mismatch raises, so a wrong pairing cannot pass silently.

    Raises:
        WeightsError: different counts, or the first pair whose shapes/attributes disagree.
    """
    pairs = mobilenet_v2_conv_bn_pairs(model)
    modules = dict(model.named_modules())
    if len(pairs) != len(convs):
        raise WeightsError(
            f"The ONNX graph has {len(convs)} QLinearConv nodes but the model has "
            f"{len(pairs)} Conv2d→BatchNorm2d pairs; expected {MOBILENET_V2_NUM_CONVS} each."
        )
    paired = []
    for index, ((conv_name, bn_name), qconv) in enumerate(zip(pairs, convs)):
        conv = modules[conv_name]
        expected = (tuple(conv.weight.shape), conv.groups, tuple(conv.stride), tuple(conv.padding) * 2)
        actual = (tuple(qconv.weight.shape), qconv.group, tuple(qconv.stride), tuple(qconv.pads))
        if expected != actual:
            raise WeightsError(
                f"Conv pairing failed at index {index}: model {conv_name} has (weight shape, groups, "
                f"stride, pads) = {expected} but ONNX node {qconv.name} has {actual}. The ONNX graph "
                "order does not match torchvision's mobilenet_v2 module order."
            )
        paired.append((conv_name, bn_name, qconv))
    return paired


def convert_mobilenet_v2_onnx(onnx_path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Dequantise the int8 ONNX MobileNetV2 into a float ``torchvision.models.mobilenet_v2()`` state dict.

    Conv weights get the dequantised int8 weights; the BatchNorm after each conv becomes an exact
    identity that adds the folded bias (``weight=1, bias=b, running_mean=0, running_var=1-eps``,
    so ``(x-0)/sqrt(1-eps+eps)*1+b == x+b``); ReLU6 stays as in torchvision; the classifier is
    dequantised and transposed. Why by hand: no library converts quantised ONNX back to a float
    torch module (onnx2torch and friends do not support QLinearConv).

    Raises:
        WeightsError: unreadable/corrupt file, or a graph that does not pair with mobilenet_v2.

    Example:
        >>> sd = convert_mobilenet_v2_onnx(shipped_mobilenet_v2_onnx())
        >>> sd["features.18.0.weight"].shape, sd["classifier.1.weight"].shape
        (torch.Size([1280, 320, 1, 1]), torch.Size([1000, 1280]))
    """
    onnx_model = _load_onnx(Path(onnx_path))
    convs, fc_weight, fc_bias = read_onnx_qconvs(onnx_model)
    model = _build("mobilenet_v2")
    state_dict = {k: v.clone() for k, v in model.state_dict().items()}
    modules = dict(model.named_modules())
    for conv_name, bn_name, qconv in pair_onnx_convs(convs, model):
        eps = modules[bn_name].eps
        state_dict[f"{conv_name}.weight"] = qconv.weight.contiguous()
        state_dict[f"{bn_name}.weight"] = torch.ones_like(qconv.bias)
        state_dict[f"{bn_name}.bias"] = qconv.bias.contiguous()
        state_dict[f"{bn_name}.running_mean"] = torch.zeros_like(qconv.bias)
        state_dict[f"{bn_name}.running_var"] = torch.full_like(qconv.bias, 1.0 - eps)
        state_dict[f"{bn_name}.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    if tuple(fc_weight.shape) != tuple(state_dict["classifier.1.weight"].shape):
        raise WeightsError(
            f"Classifier weight {tuple(fc_weight.shape)} does not fit {tuple(state_dict['classifier.1.weight'].shape)}."
        )
    state_dict["classifier.1.weight"] = fc_weight
    state_dict["classifier.1.bias"] = fc_bias
    return _validate_state_dict(state_dict, "mobilenet_v2", f"Converted {onnx_path}")


def mobilenet_v2_imagenet_state_dict(
    onnx_path: str | os.PathLike | None = None,
    expected_sha256: str | None = MOBILENET_V2_ONNX_SHA256,
    use_cache: bool = True,
) -> tuple[dict[str, torch.Tensor], WeightsInfo]:
    """ImageNet MobileNetV2 float state dict from the shipped int8 ONNX file (offline).

    Args:
        onnx_path: the ONNX file; default the shipped ``fsad/assets/mobilenetv2-12-int8.onnx``.
        expected_sha256: refuse any other file (default: the Model Zoo file's hash). ``None``
            skips the check (for experiments with another export; still recorded in ``info``).
        use_cache: read/write the converted state dict at :func:`mobilenet_v2_cache_path`.

    Returns:
        ``(state_dict, info)``; the state dict loads strictly into ``torchvision.models.mobilenet_v2()``.

    Raises:
        WeightsError: missing file, SHA-256 mismatch (expected and actual named), corrupt file.
            Nothing is cached unless the conversion succeeded.

    Example:
        >>> sd, info = mobilenet_v2_imagenet_state_dict()
        >>> len(sd), info.kind, info.sha256[:8]
        (314, 'imagenet', 'cc028fe6')
    """
    path = Path(onnx_path) if onnx_path is not None else shipped_mobilenet_v2_onnx()
    if not path.is_file():
        raise WeightsError(
            f"MobileNetV2 ONNX file not found: {path}. It ships with the kit as "
            f"fsad/assets/{MOBILENET_V2_ONNX_NAME}; reinstall or restore it from the repository."
        )
    digest = sha256_file(path)
    if expected_sha256 is not None and digest != expected_sha256:
        raise WeightsError(
            f"SHA-256 mismatch for {path}: expected {expected_sha256}, got {digest} "
            f"({path.stat().st_size} bytes; the genuine file has {MOBILENET_V2_ONNX_SIZE}). "
            "The file is corrupt or was replaced; restore it from the repository."
        )
    cache = mobilenet_v2_cache_path(digest)
    note_source = f"int8 ONNX Model Zoo MobileNetV2 {path.name} dequantised to float"
    if use_cache and cache.is_file():
        state_dict = _read_cache(cache, digest)
        if state_dict is not None:
            return state_dict, WeightsInfo(
                "mobilenet_v2", "imagenet", str(path), digest, None, f"{note_source}; loaded from cache {cache}"
            )
    start = time.perf_counter()
    state_dict = convert_mobilenet_v2_onnx(path)
    seconds = time.perf_counter() - start
    if use_cache:
        # Written only after a successful conversion, atomically: a crash never leaves a bad cache.
        atomic_torch_save({"format": _MOBILENET_CACHE_FORMAT, "onnx_sha256": digest, "state_dict": state_dict}, cache)
    return state_dict, WeightsInfo(
        "mobilenet_v2",
        "imagenet",
        str(path),
        digest,
        None,
        f"{note_source}; converted in {seconds:.2f} s" + (f", cached at {cache}" if use_cache else ""),
    )


def _read_cache(cache: Path, digest: str) -> dict[str, torch.Tensor] | None:
    """The cached state dict, or None (with a warning) if it is stale or unreadable."""
    try:
        payload = torch.load(cache, map_location="cpu", weights_only=True)
        if payload.get("format") != _MOBILENET_CACHE_FORMAT or payload.get("onnx_sha256") != digest:
            raise ValueError("cache written by another conversion version or for another file")
        return _validate_state_dict(payload["state_dict"], "mobilenet_v2", f"Cache {cache}")
    except Exception as error:
        warnings.warn(f"Ignoring unusable MobileNetV2 cache {cache} ({error}); converting again.", stacklevel=3)
        return None


# --------------------------------------------------------------------------------------------
# one entry point for CLIs and notebooks
# --------------------------------------------------------------------------------------------
def load_backbone_weights(
    backbone: str, weights: str | os.PathLike | None = "imagenet", seed: int = 0
) -> tuple[dict[str, torch.Tensor] | None, WeightsInfo]:
    """Resolve ``--backbone``/``--weights`` into a state dict and the record of what was used.

    Args:
        backbone: ``"resnet18"`` or ``"mobilenet_v2"``.
        weights: ``"imagenet"`` (resnet18: torchvision's file found offline; mobilenet_v2: the
            shipped ONNX), ``"random"`` (no state dict: the caller builds torchvision's init after
            seeding with ``seed``), or a path to a torchvision state dict for that backbone.
        seed: recorded for ``"random"`` (the caller seeds before building the model).

    Returns:
        ``(state_dict or None, info)``.

    Raises:
        ValueError: unknown backbone. WeightsError: weights missing/invalid (actionable message).

    Example:
        >>> sd, info = load_backbone_weights("mobilenet_v2", "imagenet")
        >>> sd["features.0.0.weight"].shape, info.backbone
        (torch.Size([32, 3, 3, 3]), 'mobilenet_v2')
    """
    _check_backbone(backbone)
    if weights is None:
        weights = "imagenet"
    if isinstance(weights, str) and weights.lower() in {"imagenet", "random"}:
        if weights.lower() == "random":
            return None, WeightsInfo(
                backbone,
                "random",
                None,
                None,
                int(seed),
                f"random torchvision initialisation of {backbone} with seed {seed}",
            )
        if backbone not in IMAGENET_SOURCES:
            raise WeightsError(
                f"--weights imagenet: the kit knows no ImageNet weights source for backbone {backbone!r} (it has "
                f"one for {', '.join(IMAGENET_SOURCES)}). Pass --weights PATH (a torchvision state dict for it) or "
                "--weights random (an explicitly random backbone)."
            )
        return IMAGENET_SOURCES[backbone]()
    path = Path(weights).expanduser()
    if not path.is_file():
        raise WeightsError(
            f"--weights {str(weights)!r} is neither one of {', '.join(WEIGHT_CHOICES)} "
            f"nor an existing file ({path} does not exist)."
        )
    if backbone == "resnet18":
        return resnet18_imagenet_state_dict(path)
    digest = sha256_file(path)
    state_dict = _validate_state_dict(_torch_load(path), backbone, f"Weights file {path}")
    return state_dict, WeightsInfo(
        backbone, "file", str(path), digest, None, f"user-supplied {backbone} state dict (not verified as ImageNet)"
    )


# How ``--weights imagenet`` is obtained, per backbone: one row per backbone with a genuine ImageNet source. A
# backbone without a row refuses ``imagenet`` with a clear message instead of borrowing another's weights.
IMAGENET_SOURCES: dict[str, Callable[[], tuple[dict[str, torch.Tensor], WeightsInfo]]] = {
    "resnet18": resnet18_imagenet_state_dict,
    "mobilenet_v2": mobilenet_v2_imagenet_state_dict,
}
