"""Leave-one-category-out registration training: data plan, target isolation, checkpoints, resume, CLI."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from data_tools.datasets import DatasetError
from data_tools.synthetic import generate_synthetic_dataset
from fsad import train as train_module
from fsad.checkpoint import CHECKPOINT_FORMAT, CheckpointError, check_compatible, read_checkpoint
from fsad.train import (
    TrainConfig,
    TrainingInterrupted,
    build_model,
    epoch_plan,
    registration_step_loss,
    train,
    training_categories,
)

SIZE = 64


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_synthetic_dataset(
        tmp_path_factory.mktemp("syn"),
        seed=0,
        image_size=SIZE,
        n_train=6,
        n_test_good=2,
        n_test_per_defect=1,
        categories=["weave", "washer", "bracket"],
    )


def _config(root: Path, out: Path, **overrides) -> TrainConfig:
    options = dict(
        data_root=str(root),
        dataset="synthetic",
        target="weave",
        out=str(out),
        epochs=2,
        batch_size=2,
        image_size=SIZE,
        weights="random",
        device="cpu",
        lr=0.05,
    )
    options.update(overrides)
    return TrainConfig(**options)


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


# --------------------------------------------------------------------------- the epoch plan
def test_epoch_plan_covers_every_image_once_with_distinct_partners() -> None:
    counts = {"a": 7, "b": 4}
    plan = epoch_plan(counts, epoch=3, seed=5, batch_size=3, partners=2)
    assert [len(q) for c, q, _ in plan if c == "a"] and all(len(q) <= 3 for _, q, _ in plan)
    for category, n in counts.items():
        queries = np.concatenate([q for c, q, _ in plan if c == category])
        assert sorted(queries.tolist()) == list(range(n))  # every image is a query exactly once
    for category, queries, partners in plan:
        assert partners.shape == (len(queries), 2)
        assert (partners < counts[category]).all()
        assert not (partners == queries[:, None]).any()  # never paired with itself
        assert (partners[:, 0] != partners[:, 1]).all()  # distinct partners
    # Batches are category-homogeneous: ceil(7/3) + ceil(4/3) of them.
    assert len(plan) == 3 + 2


def test_epoch_plan_depends_only_on_seed_and_epoch() -> None:
    def flat(plan):
        return [(c, q.tolist(), p.tolist()) for c, q, p in plan]

    counts = {"a": 9, "b": 5}
    assert flat(epoch_plan(counts, 2, 0, 4, 1)) == flat(epoch_plan(counts, 2, 0, 4, 1))
    assert flat(epoch_plan(counts, 2, 0, 4, 1)) != flat(epoch_plan(counts, 3, 0, 4, 1))
    assert flat(epoch_plan(counts, 2, 0, 4, 1)) != flat(epoch_plan(counts, 2, 1, 4, 1))
    assert flat(epoch_plan(counts, 2, 0, 4, 1, max_steps=2)) == flat(epoch_plan(counts, 2, 0, 4, 1))[:2]


# --------------------------------------------------------------------------- the target is never used
def test_training_categories_leave_the_target_out(root: Path, tmp_path: Path) -> None:
    assert training_categories(_config(root, tmp_path)) == ["bracket", "washer"]
    assert training_categories(_config(root, tmp_path, target="washer")) == ["bracket", "weave"]
    with pytest.raises(ValueError, match="contains the target"):
        training_categories(_config(root, tmp_path, train_categories=["weave", "washer"]))
    with pytest.raises(ValueError, match="not under"):
        training_categories(_config(root, tmp_path, train_categories=["marble"]))
    with pytest.raises(DatasetError, match="missing"):
        training_categories(_config(root, tmp_path, target="marble"))


def test_training_never_reads_the_target(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A copy of the data whose target images are all unreadable: any read of them would raise.
    import shutil

    data = tmp_path / "data"
    shutil.copytree(root, data)
    for path in (data / "weave").rglob("*.png"):
        path.write_bytes(b"not a png")
    read: list[str] = []
    original = train_module.load_image

    def spy(path, *args, **kwargs):
        read.append(str(path))
        return original(path, *args, **kwargs)

    monkeypatch.setattr(train_module, "load_image", spy)
    last = train(_config(data, tmp_path / "out", epochs=1), progress=False)
    assert read and not any("/weave/" in p for p in read)
    assert {Path(p).parts[-4] for p in read} == {"washer", "bracket"}
    assert read_checkpoint(last)["train_categories"] == ["bracket", "washer"]


# --------------------------------------------------------------------------- training and checkpoints
def test_train_learns_and_writes_a_complete_checkpoint(root: Path, tmp_path: Path) -> None:
    config = _config(root, tmp_path / "out")
    last = train(config, progress=False)
    assert last == tmp_path / "out" / "last.pt"
    payload = read_checkpoint(last)
    assert payload["format"] == CHECKPOINT_FORMAT
    for key in (
        "model_config",
        "model_state",
        "target",
        "dataset",
        "train_categories",
        "epoch",
        "optimizer",
        "scheduler",
        "rng",
        "train_config",
        "weights",
        "history",
    ):
        assert key in payload, key
    assert payload["target"] == "weave" and payload["dataset"] == "synthetic" and payload["epoch"] == 2
    assert payload["model_config"]["stn_mode"] == "rotation_scale" and payload["model_config"]["image_size"] == SIZE
    assert payload["train_config"]["lr"] == 0.05 and payload["weights"]["kind"] == "random"
    assert set(payload["rng"]) == {"python", "numpy", "torch", "cuda"}
    assert not list((tmp_path / "out").glob("epoch_*.pt"))  # only last.pt by default

    # 12 training images / batch 2 = 6 steps per epoch; per-step and per-epoch logs.
    steps = _read_csv(tmp_path / "out" / "train_log.csv")
    epochs = _read_csv(tmp_path / "out" / "epochs.csv")
    assert len(steps) == 12 and [int(r["epoch"]) for r in epochs] == [1, 2]
    assert all(math.isfinite(float(r["loss"])) for r in steps)
    # Cosine schedule over 2 epochs: lr0, then lr0 * (1 + cos(pi / 2)) / 2.
    assert [float(r["lr"]) for r in epochs] == pytest.approx([0.05, 0.025])
    history = payload["history"]
    assert history[0]["mean_loss"] == pytest.approx(np.mean([float(r["loss"]) for r in steps[:6]]), abs=1e-5)

    # STNs and heads learnt; the frozen backbone (weights and BN statistics) did not move.
    fresh, _ = build_model(config)
    initial = fresh.state_dict()
    trained = payload["model_state"]
    moved = {k for k in initial if not torch.equal(initial[k], trained[k])}
    assert any(k.startswith("stns.") for k in moved) and any(k.startswith("encoder.") for k in moved)
    assert any(k.startswith("predictor.") for k in moved)
    assert not any(k.startswith("backbone.") for k in moved)
    # The registration loss went down (high lr on purpose, so two tiny epochs suffice to show it).
    assert history[1]["mean_loss"] < history[0]["mean_loss"]


def test_train_backbone_option_fine_tunes_it(root: Path, tmp_path: Path) -> None:
    config = _config(root, tmp_path / "out", epochs=1, max_steps_per_epoch=1, train_backbone=True, keep_epochs=True)
    payload = read_checkpoint(train(config, progress=False))
    initial = build_model(_config(root, tmp_path / "x", train_backbone=True))[0].state_dict()
    assert any(not torch.equal(initial[k], v) for k, v in payload["model_state"].items() if k.startswith("backbone."))
    assert (tmp_path / "out" / "epoch_001.pt").is_file()


@pytest.mark.parametrize("kill_at", [(1, None), (2, 1)], ids=["after-epoch-1", "mid-epoch-2"])
def test_resume_after_a_kill_reaches_identical_weights(root: Path, tmp_path: Path, kill_at) -> None:
    common = dict(epochs=3, max_steps_per_epoch=3)
    full = read_checkpoint(train(_config(root, tmp_path / "full", **common), progress=False))

    def kill(epoch: int, step: int | None) -> None:
        if (epoch, step) == kill_at:
            raise TrainingInterrupted("simulated kill")

    with pytest.raises(TrainingInterrupted):
        train(_config(root, tmp_path / "cut", **common), progress=False, callback=kill)
    assert read_checkpoint(tmp_path / "cut" / "last.pt")["epoch"] == 1
    resumed = read_checkpoint(train(_config(root, tmp_path / "cut", resume=True, **common), progress=False))

    assert resumed["epoch"] == 3
    assert full["model_state"].keys() == resumed["model_state"].keys()
    for key, value in full["model_state"].items():
        assert torch.equal(value, resumed["model_state"][key]), key
    assert [h["mean_loss"] for h in full["history"]] == [h["mean_loss"] for h in resumed["history"]]
    momentum = [s["momentum_buffer"] for s in full["optimizer"]["state"].values()]
    assert all(torch.equal(a, s["momentum_buffer"]) for a, s in zip(momentum, resumed["optimizer"]["state"].values()))
    # The logs of the interrupted run hold no duplicated or partial epoch.
    full_log = (tmp_path / "full" / "train_log.csv").read_text()
    assert (tmp_path / "cut" / "train_log.csv").read_text() == full_log
    assert len(_read_csv(tmp_path / "cut" / "epochs.csv")) == 3


def test_resume_and_overwrite_rules(root: Path, tmp_path: Path) -> None:
    config = _config(root, tmp_path / "out", epochs=1, max_steps_per_epoch=1)
    last = train(config, progress=False)
    with pytest.raises(FileExistsError, match="--resume"):
        train(config, progress=False)
    with pytest.raises(CheckpointError, match="lr"):
        train(_config(root, tmp_path / "out", epochs=1, max_steps_per_epoch=1, lr=0.01, resume=True), progress=False)
    stamp = last.stat().st_mtime_ns
    # A finished run resumed with the same settings does nothing.
    assert train(_config(root, tmp_path / "out", epochs=1, max_steps_per_epoch=1, resume=True)) == last
    assert last.stat().st_mtime_ns == stamp
    # --resume without a checkpoint starts fresh.
    assert train(
        _config(root, tmp_path / "new", epochs=1, max_steps_per_epoch=1, resume=True), progress=False
    ).is_file()


def test_mean_of_k_pairing(root: Path, tmp_path: Path) -> None:
    config = _config(root, tmp_path / "out", pairing="mean-of-k", support_k=3)
    model, _ = build_model(config)
    model.train()
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    y = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    # The mean of k copies of one image's features is that image's features: mean-of-k reduces to a pair.
    pair = registration_step_loss(model, x, y[:, None], "pair")
    mean = registration_step_loss(model, x, y[:, None].expand(2, 3, 3, SIZE, SIZE), "mean-of-k")
    assert mean.item() == pytest.approx(pair.item(), abs=1e-5)
    payload = read_checkpoint(
        train(_config(root, tmp_path / "run", pairing="mean-of-k", support_k=3, epochs=1), progress=False)
    )
    assert math.isfinite(payload["history"][0]["mean_loss"])
    with pytest.raises(ValueError, match="support-k"):
        train(_config(root, tmp_path / "bad", pairing="mean-of-k", support_k=6), progress=False)


def test_bad_options_get_clear_errors(root: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="pair, mean-of-k"):
        train(_config(root, tmp_path / "a", pairing="triplet"))
    with pytest.raises(ValueError, match="rotation_scale"):
        train(_config(root, tmp_path / "b", stn_mode="warp"))
    with pytest.raises(ValueError, match="epochs"):
        train(_config(root, tmp_path / "c", epochs=0))


# --------------------------------------------------------------------------- evaluation refuses mismatches
def test_evaluation_refuses_mismatched_checkpoints(root: Path, tmp_path: Path) -> None:
    from fsad.evaluate import EvaluationConfig, run_evaluation

    last = train(_config(root, tmp_path / "ck", epochs=1, max_steps_per_epoch=1), progress=False)
    payload = read_checkpoint(last)
    check_compatible(payload, last, stn_mode="rotation_scale", target="weave", image_size=SIZE)
    with pytest.raises(CheckpointError, match="stn_mode"):
        check_compatible(payload, last, stn_mode="affine")
    with pytest.raises(CheckpointError, match="target"):
        check_compatible(payload, last, target="washer")

    def evaluation(**overrides) -> EvaluationConfig:
        options = dict(
            data_root=str(root),
            dataset="synthetic",
            categories=["weave"],
            ks=[1],
            runs=1,
            out=str(tmp_path / "eval" / "e.json"),
            backbone="resnet18",
            weights="random",
            checkpoint=str(last),
            stn_mode="rotation_scale",
            augment_families=[],
            image_size=SIZE,
            device="cpu",
        )
        options.update(overrides)
        return EvaluationConfig(**options)

    with pytest.raises(CheckpointError, match="stn_mode"):
        run_evaluation(evaluation(stn_mode="affine"), progress=False)
    with pytest.raises(ValueError, match="leaving out 'weave'"):
        run_evaluation(evaluation(categories=["washer"]), progress=False)
    document = run_evaluation(evaluation(), progress=False)  # the matching checkpoint is accepted
    assert document["checkpoint"]["target"] == "weave" and len(document["cells"]) == 1


# --------------------------------------------------------------------------- CLI
def test_cli_parses_into_a_train_config(tmp_path: Path) -> None:
    from fsad import cli

    parser = cli.build_parser()
    args = parser.parse_args(
        [
            "train",
            "--data-root",
            "d",
            "--dataset",
            "mvtec",
            "--target",
            "bottle",
            "--out",
            str(tmp_path),
            "--no-stn",
            "--epochs",
            "3",
            "--pairing",
            "mean-of-k",
            "--support-k",
            "4",
            "--weights",
            "random",
            "--resume",
        ]
    )
    config = cli.train_config(args)
    assert config.stn_mode is None and config.epochs == 3 and config.pairing == "mean-of-k"
    assert config.support_k == 4 and config.resume and config.batch_size == 32 and config.lr == 1e-4
    assert config.momentum == 0.9 and config.weight_decay == 0.0 and args.func is cli.cmd_train
    args = parser.parse_args(["train", "--data-root", "d", "--dataset", "mvtec", "--target", "bottle", "--out", "o"])
    assert cli.train_config(args).stn_mode == "rotation_scale"


def test_cli_trains_end_to_end(root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from fsad import cli

    args = cli.build_parser().parse_args(
        [
            "train",
            "--data-root",
            str(root),
            "--dataset",
            "synthetic",
            "--target",
            "washer",
            "--out",
            str(tmp_path / "o"),
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--image-size",
            str(SIZE),
            "--weights",
            "random",
            "--device",
            "cpu",
            "--quiet",
            "--max-steps-per-epoch",
            "1",
        ]
    )
    assert args.func(args) == 0
    assert "left out washer" in capsys.readouterr().out
    assert read_checkpoint(tmp_path / "o" / "last.pt")["target"] == "washer"
