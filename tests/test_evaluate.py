"""Few-shot evaluation end to end on a tiny synthetic set: determinism, resume, results file, clear errors."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from data_tools.synthetic import generate_synthetic_dataset
from fsad.cli import main
from fsad.evaluate import EvaluationConfig, run_evaluation


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn")
    generate_synthetic_dataset(
        root, seed=1, image_size=64, n_train=6, n_test_good=3, n_test_per_defect=2, categories=["washer", "weave"]
    )
    return root


def _config(root, out, **overrides):
    options = dict(
        data_root=str(root),
        dataset="synthetic",
        categories=["washer"],
        ks=[1, 2],
        runs=2,
        out=str(out),
        backbone="resnet18",
        weights="random",
        image_size=64,
        augment_families=["flip", "gray"],
    )
    options.update(overrides)
    return EvaluationConfig(**options)


def test_same_seed_same_numbers_and_complete_record(tiny_root, tmp_path):
    first = run_evaluation(_config(tiny_root, tmp_path / "a.json"), progress=False)
    second = run_evaluation(_config(tiny_root, tmp_path / "b.json"), progress=False)
    aurocs = [(c["k"], c["run"], c["image_auroc"], c["pixel_auroc"], c["aupro"]) for c in first["cells"]]
    assert aurocs == [(c["k"], c["run"], c["image_auroc"], c["pixel_auroc"], c["aupro"]) for c in second["cells"]]
    assert len(first["cells"]) == 4
    cell = first["cells"][0]
    assert 0.0 <= cell["image_auroc"] <= 1.0 and cell["adaptation_s"] > 0 and cell["inference_images_per_s"] > 0
    assert len(cell["support_files"]) == cell["k"]
    written = json.loads((tmp_path / "a.json").read_text())
    assert written["weights"]["kind"] == "random" and written["weights"]["seed"] == 0
    assert written["config"]["seed"] == 0 and "torch" in written["environment"]
    assert written["manifest"]["path"].endswith("synthetic.json") or "manifest" in written["manifest"]["path"]
    assert (tmp_path / "a.csv").read_text().startswith("method,category,k")


def test_resume_skips_finished_cells(tiny_root, tmp_path, monkeypatch):
    out = tmp_path / "r.json"
    run_evaluation(_config(tiny_root, out, ks=[1]), progress=False)
    import fsad.evaluate as evaluate

    def no_more_fits(*args, **kwargs):
        raise AssertionError("a finished cell was recomputed")

    monkeypatch.setattr(evaluate, "fit_and_score", no_more_fits)
    document = run_evaluation(_config(tiny_root, out, ks=[1], resume=True), progress=False)
    assert len(document["cells"]) == 2


def test_methods_share_supports_and_differ_in_scores(tiny_root, tmp_path):
    padim = run_evaluation(_config(tiny_root, tmp_path / "p.json", method="padim", ks=[2], runs=1), progress=False)
    core = run_evaluation(
        _config(tiny_root, tmp_path / "c.json", method="patchcore", ks=[2], runs=1, augment_families=[]), progress=False
    )
    assert padim["cells"][0]["support_files"] == core["cells"][0]["support_files"]
    assert core["method_options"]["method"] == "patchcore"


def test_k_larger_than_pool_is_a_clear_error(tiny_root, tmp_path):
    with pytest.raises(ValueError, match="k=64 but only 6 train/good images"):
        run_evaluation(_config(tiny_root, tmp_path / "x.json", ks=[64]), progress=False)


def test_one_class_test_split_is_a_clear_error(tiny_root, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(tiny_root / "washer", root / "washer")
    for folder in (root / "washer" / "test").iterdir():
        if folder.name != "good":
            shutil.rmtree(folder)
    shutil.rmtree(root / "washer" / "ground_truth")
    with pytest.raises(ValueError, match="only good images, so AUROC is undefined"):
        run_evaluation(_config(root, tmp_path / "x.json"), progress=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cli_reports_cuda_absent_and_unknown_category(tiny_root, tmp_path, capsys):
    base = [
        "evaluate",
        "--data-root",
        str(tiny_root),
        "--dataset",
        "synthetic",
        "--k",
        "1",
        "--runs",
        "1",
        "--weights",
        "random",
        "--image-size",
        "64",
        "--out",
        str(tmp_path / "x.json"),
    ]
    assert main(base + ["--categories", "washer", "--device", "cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err
    assert main(base + ["--categories", "zipper"]) == 2
    err = capsys.readouterr().err
    assert "zipper" in err and "washer" in err  # names the valid categories


def test_checkpoint_mismatches_are_refused(tiny_root, tmp_path):
    from fsad.train import TrainConfig, train

    checkpoint = train(
        TrainConfig(
            data_root=str(tiny_root),
            dataset="synthetic",
            target="washer",
            epochs=1,
            batch_size=2,
            image_size=64,
            weights="random",
            out=str(tmp_path / "t"),
            max_steps_per_epoch=1,
        ),
        progress=False,
    )
    with pytest.raises(ValueError, match="stn_mode: checkpoint has 'rotation_scale', requested 'affine'"):
        run_evaluation(
            _config(tiny_root, tmp_path / "x.json", checkpoint=str(checkpoint), stn_mode="affine"), progress=False
        )
    with pytest.raises(ValueError, match="leaving out 'washer'"):
        run_evaluation(
            _config(tiny_root, tmp_path / "x.json", checkpoint=str(checkpoint), categories=["weave"]), progress=False
        )
    trained = run_evaluation(
        _config(tiny_root, tmp_path / "ok.json", checkpoint=str(checkpoint), ks=[1], runs=1), progress=False
    )
    assert trained["checkpoint"]["target"] == "washer"


def test_patchcore_rules_are_options_recorded_in_results(tiny_root, tmp_path):
    base = [
        "evaluate",
        "--data-root",
        str(tiny_root),
        "--dataset",
        "synthetic",
        "--k",
        "1",
        "--runs",
        "1",
        "--weights",
        "random",
        "--image-size",
        "64",
        "--categories",
        "washer",
        "--method",
        "patchcore",
        "--quiet",
    ]
    documents = {}
    for border, rule in (("include_padding", "patch_max"), ("exclude_padding", "map_max")):
        out = tmp_path / f"{border}_{rule}.json"
        extra = [] if rule == "patch_max" else ["--patchcore-border", border, "--patchcore-image-score", rule]
        assert main(base + ["--out", str(out)] + extra) == 0  # the first run: the defaults
        documents[rule] = json.loads(out.read_text())
        assert documents[rule]["config"]["patchcore_border"] == border
        assert documents[rule]["config"]["patchcore_image_score"] == rule
        assert documents[rule]["method_options"]["border"] == border
        assert documents[rule]["method_options"]["image_score"] == rule
        assert documents[rule]["resume_key"]["patchcore_image_score"] == rule
    assert documents["patch_max"]["cells"][0]["image_auroc"] is not None
    # the options belong to PatchCore only: other methods' resume keys do not carry them
    assert "patchcore_border" not in _config(tiny_root, tmp_path / "g.json").resume_key()
    with pytest.raises(ValueError, match="patchcore-image-score"):
        run_evaluation(
            _config(
                tiny_root, tmp_path / "bad.json", method="patchcore", augment_families=[], patchcore_image_score="mean"
            ),
            progress=False,
        )
