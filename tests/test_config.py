"""Configs composed from option groups (fsad/config.py): the same fields, defaults and records as when each config
listed its own copy; derive() builds one config from another; committed results files still load and resume."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from fsad import ablation
from fsad.ablation import AblationConfig
from fsad.config import DataOptions, ModelOptions, RunOptions, TrainingOptions, cli_option, derive, option
from fsad.errors import ConfigError
from fsad.evaluate import EvaluationConfig, _validate
from fsad.results import check_resume
from fsad.train import TrainConfig

REPO = Path(__file__).resolve().parents[1]
FAMILIES = ["rotation", "translation", "flip", "gray", "rot90"]
REQUIRED = "<required>"
# Every field and default of the three configs before they were composed (as each declared them itself): results
# files, resume keys and checkpoints' train_config depend on exactly these.
BEFORE = {
    EvaluationConfig: {
        "data_root": REQUIRED,
        "dataset": REQUIRED,
        "categories": REQUIRED,
        "ks": [2, 4, 8],
        "runs": 10,
        "out": "results/evaluation.json",
        "method": "regad",
        "backbone": "resnet18",
        "weights": "imagenet",
        "checkpoint": None,
        "stn_mode": "rotation_scale",
        "augment_families": FAMILIES,
        "image_size": 224,
        "manifest": None,
        "channel_subset": None,
        "coreset_ratio": None,
        "patchcore_border": "include_padding",
        "patchcore_image_score": "patch_max",
        "attention": "none",
        "dcn": False,
        "device": "auto",
        "seed": 0,
        "resume": False,
        "overwrite": False,
    },
    TrainConfig: {
        "data_root": REQUIRED,
        "dataset": REQUIRED,
        "target": REQUIRED,
        "out": REQUIRED,
        "stn_mode": "rotation_scale",
        "epochs": 50,
        "batch_size": 32,
        "lr": 1e-4,
        "momentum": 0.9,
        "weight_decay": 0.0,
        "image_size": 224,
        "pairing": "pair",
        "support_k": 2,
        "backbone": "resnet18",
        "weights": "imagenet",
        "attention": "none",
        "dcn": False,
        "train_backbone": False,
        "train_categories": None,
        "device": "auto",
        "seed": 0,
        "resume": False,
        "max_steps_per_epoch": None,
        "keep_epochs": False,
        "num_workers": 0,
        "cache_images": True,
    },
    AblationConfig: {
        "data_root": REQUIRED,
        "dataset": REQUIRED,
        "out": REQUIRED,
        "categories": None,
        "ks": None,
        "runs": 10,
        "stn_mode": "rotation_scale",
        "epochs": 50,
        "batch_size": 32,
        "lr": 1e-4,
        "momentum": 0.9,
        "weight_decay": 0.0,
        "pairing": "pair",
        "support_k": 2,
        "train_backbone": False,
        "max_steps_per_epoch": None,
        "num_workers": 0,
        "image_size": 224,
        "backbone": "resnet18",
        "weights": "imagenet",
        "attention": "none",
        "dcn": False,
        "augment_families": FAMILIES,
        "manifest": None,
        "device": "auto",
        "seed": 0,
        "resume": False,
    },
}


def _defaults(cls: type) -> dict:
    values = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            values[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            values[f.name] = f.default_factory()
        else:
            values[f.name] = REQUIRED
    return values


@pytest.mark.parametrize("cls", list(BEFORE), ids=lambda c: c.__name__)
def test_composed_configs_keep_every_field_and_default(cls) -> None:
    assert _defaults(cls) == BEFORE[cls]
    # The groups are shared, not copied: one declaration of each option.
    assert issubclass(cls, (DataOptions, ModelOptions, RunOptions))
    assert (cls is not EvaluationConfig) == issubclass(cls, TrainingOptions)


def test_configs_are_keyword_only_and_flat() -> None:
    with pytest.raises(TypeError):
        EvaluationConfig("d", "mvtec", ["bottle"])  # type: ignore[misc]
    config = EvaluationConfig(data_root="d", dataset="mvtec", categories=["bottle"], coreset_ratio=0.5)
    record = dataclasses.asdict(config)
    assert record["coreset_ratio"] == 0.5 and config.backbone == "resnet18"
    assert all(not isinstance(value, dict) for value in record.values())  # flat, as results files hold it
    assert EvaluationConfig(**record) == config
    training = TrainConfig(data_root="d", dataset="mvtec", target="bottle", out="o", stn_mode=None)
    assert TrainConfig(**dataclasses.asdict(training)) == training  # a checkpoint's train_config loads back


def test_derive_copies_shared_fields_and_applies_overrides() -> None:
    grid = AblationConfig(
        data_root="d",
        dataset="mvtec",
        out="runs/t5",
        epochs=3,
        momentum=0.5,
        attention="mam",
        augment_families=["flip"],
        max_steps_per_epoch=2,
    )
    training = derive(TrainConfig, grid, target="bottle", out="runs/t5/bottle", resume=True)
    assert (training.epochs, training.momentum, training.attention, training.max_steps_per_epoch) == (3, 0.5, "mam", 2)
    assert (training.target, training.out, training.resume, training.data_root) == (
        "bottle",
        "runs/t5/bottle",
        True,
        "d",
    )
    assert training.keep_epochs is False and training.cache_images is True  # not in the source: target's defaults
    evaluation = derive(EvaluationConfig, grid, categories=["bottle"], ks=[2])
    assert evaluation.augment_families == ["flip"] and evaluation.augment_families is not grid.augment_families
    assert (evaluation.runs, evaluation.method, evaluation.out) == (10, "regad", "runs/t5")
    # Every shared field, by name, and nothing else.
    shared = {f.name for f in dataclasses.fields(TrainConfig)} & {f.name for f in dataclasses.fields(AblationConfig)}
    assert all(getattr(training, name) == getattr(grid, name) for name in shared - {"out", "resume"})


def test_derive_refuses_unknown_overrides_and_missing_required_fields() -> None:
    grid = AblationConfig(data_root="d", dataset="mvtec", out="o")
    with pytest.raises(TypeError, match="TrainConfig has no field epoch, tagret"):
        derive(TrainConfig, grid, target="bottle", tagret="x", epoch=2)
    with pytest.raises(TypeError, match="TrainConfig needs target, which AblationConfig does not have"):
        derive(TrainConfig, grid)


def test_ablation_builds_the_same_configs_as_field_by_field_copying(monkeypatch, tmp_path) -> None:
    grid = AblationConfig(
        data_root="d",
        dataset="mvtec",
        out=str(tmp_path),
        ks=[2],
        runs=3,
        stn_mode="affine",
        epochs=4,
        batch_size=8,
        lr=0.01,
        momentum=0.8,
        weight_decay=0.1,
        pairing="mean-of-k",
        support_k=3,
        train_backbone=True,
        max_steps_per_epoch=5,
        num_workers=1,
        image_size=64,
        backbone="mobilenet_v2",
        weights="random",
        attention="tam",
        dcn=True,
        augment_families=["flip", "gray"],
        manifest="m.json",
        device="cpu",
        seed=7,
    )
    expected_training = TrainConfig(
        data_root="d",
        dataset="mvtec",
        target="washer",
        out=str(tmp_path / "checkpoints" / "no_stn" / "washer"),
        stn_mode=None,
        epochs=4,
        batch_size=8,
        lr=0.01,
        momentum=0.8,
        weight_decay=0.1,
        image_size=64,
        pairing="mean-of-k",
        support_k=3,
        backbone="mobilenet_v2",
        weights="random",
        attention="tam",
        dcn=True,
        train_backbone=True,
        device="cpu",
        seed=7,
        resume=True,
        max_steps_per_epoch=5,
        num_workers=1,
    )
    assert ablation.train_config(grid, ablation.NO_STN, "washer") == expected_training
    seen = []
    monkeypatch.setattr(ablation, "run_evaluation", lambda config, progress: seen.append(config) or {})
    ablation.evaluate_cell(grid, "affine", True, "washer", [2, 4], Path("c.pt"), progress=False)
    ablation.evaluate_cell(grid, ablation.UNTRAINED, False, "washer", [2], None, progress=False)
    common = dict(
        data_root="d",
        dataset="mvtec",
        categories=["washer"],
        runs=3,
        method="regad",
        backbone="mobilenet_v2",
        weights="random",
        image_size=64,
        manifest="m.json",
        attention="tam",
        dcn=True,
        device="cpu",
        seed=7,
        resume=True,
    )
    assert seen == [
        EvaluationConfig(
            **common,
            ks=[2, 4],
            out=str(tmp_path / "cells" / "affine__aug" / "washer.json"),
            checkpoint="c.pt",
            stn_mode="affine",
            augment_families=["flip", "gray"],
        ),
        EvaluationConfig(
            **common,
            ks=[2],
            out=str(tmp_path / "cells" / "untrained__noaug" / "washer.json"),
            checkpoint=None,
            stn_mode=None,
            augment_families=[],
        ),
    ]


def test_committed_results_files_load_and_resume() -> None:
    """Every results file under figures/results/ rebuilds its config; a file that records every option of its
    method resumes with the rebuilt config's key; every ablation table's config rebuilds identically."""
    from fsad.methods import method_spec

    results = tables = resumable = 0
    for path in sorted((REPO / "figures" / "results").rglob("*.json")):
        document = json.loads(path.read_text())
        if document.get("format") == "fsad-ablation-v1":
            assert dataclasses.asdict(AblationConfig(**document["config"])) == document["config"], path
            tables += 1
        elif "resume_key" in document:
            config = EvaluationConfig(**document["config"])
            results += 1
            if all(name in document["config"] for name in method_spec(config.method).option_fields):
                check_resume(document, config.resume_key(), path)
                resumable += 1
    assert results >= 40 and tables >= 3 and resumable >= 40


@pytest.mark.parametrize(
    "option,message",
    [
        ({"patchcore_border": "x"}, "Unknown --patchcore-border 'x'; choose one of include_padding, exclude_padding."),
        ({"coreset_ratio": 1.5}, r"--coreset-ratio must be in \(0, 1\], e.g. 0.1 keeps 10% of the bank \(got 1.5\)."),
        ({"coreset_ratio": 0.0}, r"--coreset-ratio must be in \(0, 1\].* \(got 0.0\)."),
    ],
)
def test_method_option_values_are_checked_from_their_metadata(option, message) -> None:
    config = EvaluationConfig(data_root="d", dataset="mvtec", categories=["b"], method="patchcore", **option)
    with pytest.raises(ConfigError, match=message):
        _validate(config)
    fine = EvaluationConfig(data_root="d", dataset="mvtec", categories=["b"], method="padim", channel_subset=1)
    _validate(fine)  # d = 1 is valid; 0 is refused
    with pytest.raises(ConfigError, match=r"--channel-subset must be a positive number of channels \(got 0\)."):
        _validate(dataclasses.replace(fine, channel_subset=0))


def test_option_metadata_and_no_torch_import() -> None:
    @dataclass(kw_only=True)
    class Toy:
        radius: int = option("--toy-radius", "radius", default=1, type=int)

    assert cli_option(Toy, "radius").flag == "--toy-radius" and Toy().radius == 1
    assert cli_option(ModelOptions, "stn_mode").label == "--stn-mode / --no-stn"
    assert cli_option(ModelOptions, "backbone") is None
    code = "import sys, fsad.config; assert 'torch' not in sys.modules, 'fsad.config imported torch'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_reproduce_builds_the_same_configs_as_field_by_field_copying() -> None:
    from fsad.reproduce import ReproduceConfig, evaluation_config, train_config

    config = ReproduceConfig(
        data_root="d",
        dataset="mpdd",
        out="r",
        epochs=3,
        batch_size=4,
        max_steps_per_epoch=2,
        lr=0.5,
        ks=[2],
        runs=2,
        backbone="mobilenet_v2",
        weights="random",
        image_size=64,
        device="cpu",
        seed=3,
        threads=1,
    )
    model = dict(backbone="mobilenet_v2", weights="random", image_size=64, device="cpu", seed=3, resume=True)
    assert train_config(config, "tubes") == TrainConfig(
        data_root="d",
        dataset="mpdd",
        target="tubes",
        out=str(Path("r") / "checkpoints" / "tubes"),
        epochs=3,
        batch_size=4,
        lr=0.5,
        max_steps_per_epoch=2,
        **model,
    )
    assert evaluation_config(config, "tubes") == EvaluationConfig(
        data_root="d",
        dataset="mpdd",
        categories=["tubes"],
        ks=[2],
        runs=2,
        out=str(Path("r") / "results" / "tubes.json"),
        checkpoint=str(Path("r") / "checkpoints" / "tubes" / "last.pt"),
        **model,
    )
