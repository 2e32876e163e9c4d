"""The shipped tutorial checkpoint: verified against its sidecar, loadable, leave-one-out, and exportable."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from data_tools.synthetic import generate_synthetic_dataset
from fsad import pretrained
from fsad.checkpoint import CheckpointError, load_model, read_checkpoint, save_checkpoint
from fsad.train import TrainConfig, train


def test_shipped_checkpoint_matches_its_sidecar_and_loads() -> None:
    side = pretrained.read_sidecar()
    assert pretrained.tutorial_checkpoint_path().stat().st_size == side["size"]
    payload = pretrained.load_tutorial_checkpoint()
    assert payload["target"] == "capsule" and "capsule" not in payload["train_categories"]
    assert payload["model_config"]["backbone"] == "mobilenet_v2" and payload["model_config"]["image_size"] == 128
    assert payload["weights"]["kind"] == "imagenet"
    assert not set(payload) & {"optimizer", "scheduler", "rng"}  # inference-only
    assert [h["epoch"] for h in side["training_log"]] == list(range(1, side["epochs"] + 1))
    assert side["command"].count("python -m fsad train") == 1
    model = load_model(payload).eval()
    # the STNs were trained: the last FC layer started at zero weights
    assert any(stn.fc[-1].weight.abs().max() > 0 for stn in model.stns)


def test_tampered_or_missing_checkpoint_is_refused(tmp_path: Path) -> None:
    copy = tmp_path / pretrained.TUTORIAL_CHECKPOINT.name
    shutil.copy(pretrained.TUTORIAL_CHECKPOINT, copy)
    shutil.copy(pretrained.sidecar_path(pretrained.TUTORIAL_CHECKPOINT), pretrained.sidecar_path(copy))
    assert pretrained.tutorial_checkpoint_path(copy) == copy
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="SHA-256"):
        pretrained.load_tutorial_checkpoint(copy)
    copy.write_bytes(bytes(data[:-10]))
    with pytest.raises(CheckpointError, match="bytes"):
        pretrained.tutorial_checkpoint_path(copy)
    with pytest.raises(CheckpointError, match="make tutorial-checkpoint"):
        pretrained.tutorial_checkpoint_path(tmp_path / "absent.pt")
    pretrained.sidecar_path(copy).unlink()
    with pytest.raises(CheckpointError, match="sidecar"):
        pretrained.tutorial_checkpoint_path(copy)


def test_export_writes_a_slim_verified_checkpoint(tmp_path: Path) -> None:
    root = generate_synthetic_dataset(
        tmp_path / "syn",
        seed=0,
        image_size=64,
        n_train=3,
        n_test_good=1,
        n_test_per_defect=1,
        categories=["weave", "washer"],
    )
    config = TrainConfig(
        data_root=str(root),
        dataset="synthetic",
        target="weave",
        out=str(tmp_path / "run"),
        epochs=1,
        batch_size=2,
        image_size=64,
        weights="random",
        device="cpu",
        lr=0.05,
        max_steps_per_epoch=1,
    )
    last = train(config, progress=False)
    out = pretrained.export_tutorial_checkpoint(last, tmp_path / "tiny.pt", command="test")
    side = json.loads(pretrained.sidecar_path(out).read_text())
    assert side["command"] == "test" and side["epochs"] == 1 and len(side["training_log"]) == 1
    assert side["size"] < (last.stat().st_size) and side["format"] == read_checkpoint(last)["format"]
    payload = pretrained.load_tutorial_checkpoint(out)
    full = read_checkpoint(last)
    for key, value in load_model(payload).state_dict().items():
        assert torch.equal(value, full["model_state"][key])
    # an unfinished run is refused
    unfinished = {**full, "epoch": 0}
    save_checkpoint(unfinished, tmp_path / "unfinished.pt")
    with pytest.raises(CheckpointError, match="finish the run"):
        pretrained.export_tutorial_checkpoint(tmp_path / "unfinished.pt", tmp_path / "x.pt")
