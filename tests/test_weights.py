"""ResNet-18 weight lookup (torchvision cache, explicit path, $FSAD_WEIGHTS), verification, and
load_backbone_weights / default_backbone. Never touches the network: TORCH_HOME is a tmp dir and
torchvision's downloaders are patched to fail the test if called."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torchvision

import fsad.weights as W
from fsad.utils import sha256_file

SHARED_RESNET18 = Path(__file__).resolve().parents[2] / "shared" / "weights" / "resnet18-f37072fd.pth"


@pytest.fixture(autouse=True)
def offline_torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Empty torch cache in tmp_path, no $FSAD_WEIGHTS, and any download attempt fails the test."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.delenv(W.FSAD_WEIGHTS_ENV, raising=False)

    def no_download(*args, **kwargs):
        raise AssertionError("a test tried to download weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    return home


def _fake_resnet18(fill: float = 0.25, drop: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """A ResNet-18 state dict with the right keys and shapes that is tiny on disk: every float
    tensor is an expanded 0-d scalar, so torch.save stores one element per tensor."""
    fake = {}
    for key, value in torchvision.models.resnet18().state_dict().items():
        if key in drop:
            continue
        fake[key] = (
            torch.tensor(fill).expand(value.shape) if value.is_floating_point() else torch.zeros((), dtype=value.dtype)
        )
    return fake


def _write_hub_named(state_dict: dict, directory: Path) -> Path:
    """Save, hash, and rename to torchvision's rule: resnet18-<first 8 hex of own SHA-256>.pth."""
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / "tmp.pth"
    torch.save(state_dict, tmp)
    target = directory / f"resnet18-{sha256_file(tmp)[:8]}.pth"
    tmp.rename(target)
    return target


def test_fake_file_is_small_and_loads_into_torchvision(tmp_path: Path) -> None:
    path = tmp_path / "r.pth"
    torch.save(_fake_resnet18(), path)
    assert path.stat().st_size < 200_000  # 11.7 M parameters, but one stored element per tensor
    torchvision.models.resnet18().load_state_dict(torch.load(path, weights_only=True), strict=True)


def test_found_by_name_in_torch_cache(monkeypatch: pytest.MonkeyPatch, offline_torch_home: Path) -> None:
    target = _write_hub_named(_fake_resnet18(0.25), W.checkpoints_dir())
    assert W.checkpoints_dir() == offline_torch_home / "hub" / "checkpoints"
    # The loader only trusts torchvision's published names; register this file's name as one.
    monkeypatch.setattr(W, "RESNET18_FILENAMES", (target.name,) + W.RESNET18_FILENAMES)
    state_dict, info = W.resnet18_imagenet_state_dict()
    assert info.kind == "imagenet" and info.backbone == "resnet18"
    assert info.path == str(target) and info.sha256 == sha256_file(target)
    assert info.sha256.startswith(target.name[len("resnet18-") : -len(".pth")])
    model = torchvision.models.resnet18()
    model.load_state_dict(state_dict, strict=True)
    assert torch.all(model.fc.weight == 0.25)
    assert W.resnet18_imagenet_available() and W.default_backbone() == "resnet18"


def test_unknown_but_self_consistent_name_is_not_called_imagenet(offline_torch_home: Path) -> None:
    target = _write_hub_named(_fake_resnet18(), offline_torch_home / "elsewhere")
    _, info = W.resnet18_imagenet_state_dict(target)
    assert info.kind == "file" and "verified" in info.note
    # ...and it is not picked up from the cache, because its name is not torchvision's.
    W.checkpoints_dir().mkdir(parents=True, exist_ok=True)
    target.rename(W.checkpoints_dir() / target.name)
    assert not W.resnet18_imagenet_available()
    with pytest.raises(W.WeightsError, match="not found"):
        W.resnet18_imagenet_state_dict()


@pytest.mark.parametrize("name", W.RESNET18_FILENAMES)
def test_wrong_hash_prefix_is_rejected(name: str) -> None:
    W.checkpoints_dir().mkdir(parents=True)
    bad = W.checkpoints_dir() / name
    torch.save(_fake_resnet18(), bad)
    prefix = name[len("resnet18-") : -len(".pth")]
    with pytest.raises(W.WeightsError, match=f"SHA-256 check failed.*{prefix}") as caught:
        W.resnet18_imagenet_state_dict()
    assert str(bad) in str(caught.value) and sha256_file(bad) in str(caught.value)
    assert not W.resnet18_imagenet_available()
    assert W.default_backbone() == "mobilenet_v2"


def test_missing_lists_every_way_to_provide_it(offline_torch_home: Path) -> None:
    with pytest.raises(W.WeightsError) as caught:
        W.resnet18_imagenet_state_dict()
    message = str(caught.value)
    cache = str(offline_torch_home / "hub" / "checkpoints")
    for needle in (
        cache,
        "resnet18-f37072fd.pth",
        "network",
        "--weights PATH",
        "FSAD_WEIGHTS",
        "--weights random",
        "--backbone mobilenet_v2",
        "TORCH_HOME",
    ):
        assert needle in message, needle
    assert not W.resnet18_imagenet_available()
    assert W.default_backbone() == "mobilenet_v2"


def test_fsad_weights_env_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "my_resnet18.pth"  # no hash suffix: recorded by full SHA-256, not rejected
    torch.save(_fake_resnet18(0.5), path)
    monkeypatch.setenv(W.FSAD_WEIGHTS_ENV, str(path))
    state_dict, info = W.resnet18_imagenet_state_dict()
    assert info.kind == "file" and info.path == str(path) and info.sha256 == sha256_file(path)
    assert "$FSAD_WEIGHTS" in info.note
    assert torch.all(state_dict["conv1.weight"] == 0.5)
    # Via the generic entry point too.
    _, info2 = W.load_backbone_weights("resnet18", "imagenet")
    assert info2.sha256 == info.sha256


def test_fsad_weights_env_pointing_nowhere_does_not_fall_back(tmp_path: Path, monkeypatch) -> None:
    _write_hub_named(_fake_resnet18(), W.checkpoints_dir())
    monkeypatch.setenv(W.FSAD_WEIGHTS_ENV, str(tmp_path / "absent.pth"))
    with pytest.raises(W.WeightsError, match=r"FSAD_WEIGHTS.*does not exist"):
        W.resnet18_imagenet_state_dict()


def test_old_checkpoint_without_num_batches_tracked_is_accepted(tmp_path: Path) -> None:
    drop = tuple(k for k in torchvision.models.resnet18().state_dict() if k.endswith("num_batches_tracked"))
    assert len(drop) == 20
    path = tmp_path / "old.pth"
    torch.save(_fake_resnet18(drop=drop), path)
    state_dict, _ = W.resnet18_imagenet_state_dict(path)
    torchvision.models.resnet18().load_state_dict(state_dict, strict=True)


def test_wrong_keys_and_shapes_are_rejected(tmp_path: Path) -> None:
    prefixed = {f"module.{k}": v for k, v in _fake_resnet18().items()}
    torch.save(prefixed, tmp_path / "prefixed.pth")
    with pytest.raises(W.WeightsError, match=r"missing keys.*unexpected keys \[module\."):
        W.resnet18_imagenet_state_dict(tmp_path / "prefixed.pth")
    wrapped = {"state_dict": _fake_resnet18(), "epoch": 3}
    torch.save(wrapped, tmp_path / "wrapped.pth")
    with pytest.raises(W.WeightsError, match="not a state dict"):
        W.resnet18_imagenet_state_dict(tmp_path / "wrapped.pth")
    wrong = _fake_resnet18()
    wrong["fc.weight"] = torch.zeros(10, 512)
    torch.save(wrong, tmp_path / "wrong.pth")
    with pytest.raises(W.WeightsError, match=r"wrong shape.*fc.weight: \(10, 512\) != \(1000, 512\)"):
        W.resnet18_imagenet_state_dict(tmp_path / "wrong.pth")


def test_corrupt_and_missing_explicit_files(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00not a zip archive" * 10)
    with pytest.raises(W.WeightsError, match=f"Cannot read weights file {garbage}"):
        W.resnet18_imagenet_state_dict(garbage)
    with pytest.raises(W.WeightsError, match="does not exist"):
        W.resnet18_imagenet_state_dict(tmp_path / "nope.pth")


def test_download_only_when_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def offline(self, *args, **kwargs):
        calls.append(self.url)
        raise OSError("no network")

    monkeypatch.setattr(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.__class__, "get_state_dict", offline)
    with pytest.raises(W.WeightsError, match="not found"):
        W.resnet18_imagenet_state_dict()
    assert calls == []  # default: never try the network
    with pytest.raises(
        W.WeightsError, match=r"Downloading https://download.pytorch.org/models/resnet18-f37072fd.pth failed"
    ):
        W.resnet18_imagenet_state_dict(allow_download=True)
    assert calls == ["https://download.pytorch.org/models/resnet18-f37072fd.pth"]


def test_load_backbone_weights_choices(tmp_path: Path) -> None:
    state_dict, info = W.load_backbone_weights("resnet18", "random", seed=7)
    assert state_dict is None
    assert info.to_dict() == {
        "backbone": "resnet18",
        "kind": "random",
        "path": None,
        "sha256": None,
        "seed": 7,
        "note": info.note,
    }
    json.dumps(info.to_dict())
    with pytest.raises(ValueError, match="resnet18, mobilenet_v2"):
        W.load_backbone_weights("resnet50")
    with pytest.raises(W.WeightsError, match="imagenet, random"):
        W.load_backbone_weights("resnet18", "imagnet")
    with pytest.raises(W.WeightsError, match="--backbone mobilenet_v2"):
        W.load_backbone_weights("resnet18", "imagenet")
    # A resnet18 file offered to mobilenet_v2 is refused by key check.
    torch.save(_fake_resnet18(), tmp_path / "r.pth")
    with pytest.raises(W.WeightsError, match="does not fit torchvision.models.mobilenet_v2"):
        W.load_backbone_weights("mobilenet_v2", tmp_path / "r.pth")
    # A resnet18 file by path goes through the verified loader.
    state_dict, info = W.load_backbone_weights("resnet18", str(tmp_path / "r.pth"))
    assert info.kind == "file" and set(state_dict) == set(torchvision.models.resnet18().state_dict())


@pytest.mark.skipif(
    not SHARED_RESNET18.is_file(),
    reason=f"genuine torchvision file absent: {SHARED_RESNET18} (see shared/weights/PROVENANCE.md)",
)
def test_genuine_shared_resnet18_loads_strictly() -> None:
    state_dict, info = W.resnet18_imagenet_state_dict(SHARED_RESNET18)
    assert info.kind == "imagenet" and info.sha256.startswith("f37072fd")
    torchvision.models.resnet18().load_state_dict(state_dict, strict=True)
