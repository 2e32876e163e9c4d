"""The bad-input matrix: every refusal of `python -m fsad` and `python -m data_tools` is one line, exit 2,
naming the offending path or option, and never writes or changes a results file. Plus property tests of the
image and mask loaders (random bytes, truncations, every PIL mode): a clear FsadError or a correct tensor.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from data_tools.__main__ import main as data_main
from data_tools.datasets import load_image, load_mask
from data_tools.synthetic import SYNTHETIC_MARKER_FILE, generate_synthetic_dataset
from fsad.checkpoint import CHECKPOINT_FORMAT, read_checkpoint, save_checkpoint
from fsad.cli import main as fsad_main
from fsad.errors import FsadError

SIZE = 64


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_synthetic_dataset(
        tmp_path_factory.mktemp("syn"),
        seed=2,
        image_size=SIZE,
        n_train=4,
        n_test_good=2,
        n_test_per_defect=1,
        categories=["washer", "weave"],
    )


def _evaluate(root: Path, out: Path, *extra: str) -> list[str]:
    return [
        "evaluate",
        "--data-root",
        str(root),
        "--dataset",
        "synthetic",
        "--categories",
        "washer",
        "--k",
        "1",
        "--runs",
        "1",
        "--weights",
        "random",
        "--image-size",
        str(SIZE),
        "--no-augment",
        "--device",
        "cpu",
        "--quiet",
        "--out",
        str(out),
        *extra,
    ]


@pytest.fixture(scope="module")
def finished(root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished results file; the same category and k are given twice and computed once."""
    out = tmp_path_factory.mktemp("done") / "R.json"
    args = _evaluate(root, out)
    args[args.index("--categories") + 1 : args.index("--categories") + 2] = ["washer", "washer"]
    args[args.index("--k") + 1 : args.index("--k") + 2] = ["1", "1"]
    with pytest.warns(UserWarning, match="duplicate categories or k removed"):
        assert fsad_main(args) == 0
    return out


def _refused(capsys: pytest.CaptureFixture, status: int, *names: str) -> str:
    """Exit 2, one plain line `error: ...` on stderr naming every string in ``names``."""
    err = capsys.readouterr().err.strip()
    assert status == 2, err
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    for name in names:
        assert str(name) in err, (name, err)
    return err


# --------------------------------------------------------------------------- results files are never lost
def test_a_finished_run_is_strict_json_with_deduplicated_cells(finished: Path) -> None:
    text = finished.read_text()

    def strict(constant: str) -> None:
        raise AssertionError(f"bare {constant} in the results JSON")

    document = json.loads(text, parse_constant=strict)  # NaN / Infinity are not JSON
    assert [(c["category"], c["k"], c["run"]) for c in document["cells"]] == [("washer", 1, 0)]
    assert document["config"]["categories"] == ["washer"] and document["config"]["ks"] == [1]
    macro = next(row for row in document["summary"] if row["category"] == "macro_average")
    assert macro["image_auroc_std"] is None  # undefined, written as null
    assert document["resume_key"]["method"] == "regad"


RESULTS_CASES: dict[str, tuple[Callable[[Path], list[str]], list[str]]] = {
    # name: (extra CLI args given the results path, strings the message must name)
    "existing --out without --resume": (lambda out: [], ["--out", "R.json", "--resume", "--overwrite"]),
    "--resume with another --method": (
        lambda out: ["--method", "padim", "--resume"],
        ["R.json", "method: file has 'regad', this run 'padim'"],
    ),
    "--resume with another seed": (lambda out: ["--resume", "--seed", "3"], ["R.json", "seed: file has 0, this run 3"]),
    "--resume and --overwrite": (lambda out: ["--resume", "--overwrite"], ["--resume", "--overwrite"]),
}


@pytest.mark.parametrize("case", list(RESULTS_CASES))
def test_results_file_is_never_replaced_implicitly(
    case: str, root: Path, finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "R.json"
    shutil.copy(finished, out)
    before = out.read_bytes()
    extra, names = RESULTS_CASES[case]
    _refused(capsys, fsad_main(_evaluate(root, out, *extra(out))), *names)
    assert out.read_bytes() == before
    assert not out.with_suffix(".csv").exists()


def test_corrupt_results_file_on_resume_is_named(root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "R.json"
    out.write_text('{"format": "fsad-results-v1", "cells": [')
    _refused(capsys, fsad_main(_evaluate(root, out, "--resume")), str(out), "--out results file", "corrupt")
    assert out.read_text() == '{"format": "fsad-results-v1", "cells": ['


def test_overwrite_replaces_and_resume_keeps(root: Path, finished: Path, tmp_path: Path) -> None:
    out = tmp_path / "R.json"
    shutil.copy(finished, out)
    assert fsad_main(_evaluate(root, out, "--resume")) == 0  # nothing to compute, the same cell kept
    assert json.loads(out.read_text())["cells"] == json.loads(finished.read_text())["cells"]
    out.write_text(out.read_text().replace('"run": 0', '"run": 0, "marker": 1', 1))
    assert fsad_main(_evaluate(root, out, "--overwrite")) == 0
    assert "marker" not in out.read_text()


# --------------------------------------------------------------------------- the evaluate matrix
def _truncate_first_test_image(root: Path) -> Path:
    path = sorted((root / "washer" / "test" / "good").glob("*.png"))[0]
    path.write_bytes(path.read_bytes()[:200])
    return path


def _resize_first_mask(root: Path) -> Path:
    path = sorted((root / "washer" / "ground_truth").rglob("*_mask.png"))[0]
    Image.open(path).resize((SIZE // 2, SIZE // 2)).save(path)
    return path


def _jpeg_mask(root: Path) -> Path:
    path = sorted((root / "washer" / "ground_truth").rglob("*_mask.png"))[0]
    buffer = io.BytesIO()
    Image.open(path).convert("L").save(buffer, format="JPEG", quality=60)
    path.write_bytes(buffer.getvalue())  # JPEG bytes under a .png name
    return path


def _bad_manifest(root: Path) -> Path:
    path = root / "bad_manifest.json"
    path.write_text("{not json")
    return path


def _text_checkpoint(root: Path) -> Path:
    path = root / "ckpt.pt"
    path.write_text("not a checkpoint")
    return path


def _tagged_checkpoint_without_keys(root: Path) -> Path:
    path = root / "tagged.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "metadata": json.dumps({"target": "washer"}), "tensors": {}}, path)
    return path


def _checkpoint_without_weights(root: Path) -> Path:
    path = root / "noweights.pt"
    config = {
        "backbone": "resnet18",
        "image_size": SIZE,
        "stn_mode": "rotation_scale",
        "attention": "none",
        "dcn": False,
    }
    save_checkpoint(
        {
            "model_config": config,
            "model_state": {"stray": torch.zeros(1)},
            "target": "washer",
            "dataset": "synthetic",
            "epoch": 1,
        },
        path,
    )
    return path


def _checkpoint_missing_a_tensor(root: Path) -> Path:
    path = root / "notensor.pt"
    metadata = {
        "model_config": {},
        "model_state": {"w": {"__tensor__": "model_state.w"}},
        "target": "washer",
        "dataset": "synthetic",
        "epoch": 1,
    }
    torch.save({"format": CHECKPOINT_FORMAT, "metadata": json.dumps(metadata), "tensors": {}}, path)
    return path


# name: (function(copy of the root) -> (args after the common ones, strings the message must name))
EVALUATE_CASES: dict[str, Callable[[Path], tuple[list[str], list[str]]]] = {
    "missing data root": lambda r: (["--data-root", str(r / "nope")], [str(r / "nope"), "does not exist"]),
    "data root is a category folder": lambda r: (["--data-root", str(r / "washer")], ["pass its parent", str(r)]),
    "unknown category lists the valid ones": lambda r: (["--categories", "zipper"], ["zipper", "washer", "weave"]),
    "k larger than the pool": lambda r: (["--k", "64"], ["k=64", "--k"]),
    "bad image size": lambda r: (["--image-size", "100"], ["--image-size", "100"]),
    "truncated test image": lambda r: ([], [str(_truncate_first_test_image(r))]),
    "mask size mismatch": lambda r: ([], [str(_resize_first_mask(r)), "size"]),
    "JPEG mask under a .png name": lambda r: ([], [str(_jpeg_mask(r)), "not binary"]),
    "bad manifest": lambda r: (["--manifest", str(_bad_manifest(r))], ["bad_manifest.json", "not valid JSON"]),
    "missing checkpoint": lambda r: (["--checkpoint", str(r / "none.pt")], ["none.pt", "does not exist"]),
    "checkpoint that is not one": lambda r: (["--checkpoint", str(_text_checkpoint(r))], ["ckpt.pt"]),
    "tagged checkpoint missing keys": lambda r: (
        ["--checkpoint", str(_tagged_checkpoint_without_keys(r))],
        ["tagged.pt", "model_config"],
    ),
    "checkpoint missing weights": lambda r: (
        ["--checkpoint", str(_checkpoint_without_weights(r))],
        ["noweights.pt", "weights do not fit", "Missing key"],
    ),
    "checkpoint missing a tensor": lambda r: (
        ["--checkpoint", str(_checkpoint_missing_a_tensor(r))],
        ["notensor.pt", "model_state.w", "missing"],
    ),
    "--attention with patchcore": lambda r: (
        ["--method", "patchcore", "--attention", "mam"],
        ["--attention", "--method regad", "patchcore"],
    ),
    "--stn-mode with padim": lambda r: (
        ["--method", "padim", "--stn-mode", "affine"],
        ["--stn-mode", "--method regad", "padim"],
    ),
    "--coreset-ratio with regad": lambda r: (["--coreset-ratio", "0.1"], ["--coreset-ratio", "--method patchcore"]),
    "--patchcore-border with regad": lambda r: (
        ["--patchcore-border", "exclude_padding"],
        ["--patchcore-border", "--method patchcore"],
    ),
    "--patchcore-image-score with padim": lambda r: (
        ["--method", "padim", "--patchcore-image-score", "map_max"],
        ["--patchcore-image-score", "--method patchcore"],
    ),
    "--channel-subset with patchcore": lambda r: (
        ["--method", "patchcore", "--channel-subset", "10"],
        ["--channel-subset", "--method regad / padim"],
    ),
    "--checkpoint with padim": lambda r: (
        ["--method", "padim", "--checkpoint", str(r / "x.pt")],
        ["--checkpoint", "--method regad"],
    ),
    "--dcn with padim": lambda r: (["--method", "padim", "--dcn"], ["--dcn", "--method regad"]),
    "coreset ratio out of range": lambda r: (["--method", "patchcore", "--coreset-ratio", "1.5"], ["--coreset-ratio"]),
    "--out is a folder": lambda r: (["--out", str(r)], ["--out", str(r), "is a folder"]),
    "--out under a file": lambda r: (
        ["--out", str(r / "washer" / "train" / "good" / "000.png" / "R.json")],
        ["--out", "000.png", "is a file"],
    ),
}
if not torch.cuda.is_available():
    EVALUATE_CASES["CUDA absent"] = lambda r: (["--device", "cuda"], ["--device cuda", "CUDA is not available"])


@pytest.mark.parametrize("case", list(EVALUATE_CASES))
def test_evaluate_refuses_bad_input_in_one_line(
    case: str, root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data = tmp_path / "data"
    shutil.copytree(root, data)
    out = tmp_path / "results" / "R.json"
    extra, names = EVALUATE_CASES[case](data)
    args = _evaluate(data, out)
    for i in range(0, len(extra)):  # options given in the case replace the common ones
        if extra[i].startswith("--") and extra[i] in args and extra[i] not in ("--dcn",):
            position = args.index(extra[i])
            width = 1
            while position + width < len(args) and not args[position + width].startswith("--"):
                width += 1
            del args[position : position + width]
    _refused(capsys, fsad_main(args + extra), *names)
    assert not out.exists() and not out.with_suffix(".csv").exists()


def test_unwritable_out_is_refused_before_any_work(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import fsad.evaluate
    import fsad.files

    def denied(*args, **kwargs):  # what a read-only folder gives (tests run as root, where chmod does not bite)
        raise PermissionError(13, "Permission denied")

    def no_work(*args, **kwargs):
        raise AssertionError("work started before the output was checked")

    monkeypatch.setattr(fsad.files.tempfile, "TemporaryFile", denied)
    monkeypatch.setattr(fsad.evaluate, "resolve_manifest", no_work)
    out = tmp_path / "ro" / "R.json"
    _refused(capsys, fsad_main(_evaluate(root, out)), "--out", str(tmp_path), "Permission denied")
    assert not out.exists()


# --------------------------------------------------------------------------- checkpoints cannot run code
class _CreatesAFile:
    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))  # unpickling this calls open(path, "w"): the file appears


def test_a_hostile_pickle_as_checkpoint_runs_nothing(root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    witness, hostile = tmp_path / "pwned", tmp_path / "hostile.pt"
    torch.save({"format": "fsad-checkpoint-v1", "model_config": _CreatesAFile(witness)}, hostile)
    torch.load(hostile, weights_only=False)  # the payload is real: an unsafe load creates the file ...
    assert witness.exists()
    witness.unlink()
    out = tmp_path / "R.json"
    _refused(
        capsys,
        fsad_main(_evaluate(root, out, "--checkpoint", str(hostile))),
        str(hostile),
        "python -m fsad checkpoint convert",
    )
    assert not witness.exists() and not out.exists()  # ... the kit's load does not
    _refused(capsys, fsad_main(["checkpoint", "convert", str(hostile), str(tmp_path / "new.pt")]), str(hostile))
    assert not witness.exists() and not (tmp_path / "new.pt").exists()


def test_old_checkpoint_is_refused_then_converted(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    v2 = tmp_path / "v2.pt"
    state = {
        "model_config": {"backbone": "resnet18"},
        "model_state": {"a.weight": torch.arange(6.0).view(2, 3)},
        "target": "washer",
        "dataset": "synthetic",
        "epoch": 3,
        "optimizer": {"state": {0: {"momentum_buffer": torch.ones(2)}}, "param_groups": [{"lr": 0.1, "params": [0]}]},
        "rng": {"numpy": np.random.RandomState(0).get_state(), "torch": torch.get_rng_state()},
    }
    old = tmp_path / "old.pt"
    torch.save({"format": "fsad-checkpoint-v1", **state}, old)  # the pickled v1 layout (NumPy arrays inside)
    with pytest.raises(FsadError, match=r"old\.pt.*python -m fsad checkpoint convert"):
        read_checkpoint(old)
    assert fsad_main(["checkpoint", "convert", str(old), str(v2)]) == 0
    payload = read_checkpoint(v2)
    assert payload["format"] == CHECKPOINT_FORMAT and payload["epoch"] == 3
    torch.testing.assert_close(payload["model_state"]["a.weight"], state["model_state"]["a.weight"])
    torch.testing.assert_close(payload["optimizer"]["state"][0]["momentum_buffer"], torch.ones(2))
    numpy_state = payload["rng"]["numpy"]
    np.testing.assert_array_equal(numpy_state[1], state["rng"]["numpy"][1])
    assert numpy_state[1].dtype == np.uint32
    _refused(capsys, fsad_main(["checkpoint", "convert", str(old), str(v2)]), str(v2), "--overwrite")


# --------------------------------------------------------------------------- train, batch, report
def test_train_existing_last_checkpoint_is_one_line(root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "last.pt").write_bytes(b"earlier run")
    status = fsad_main(
        [
            "train",
            "--data-root",
            str(root),
            "--dataset",
            "synthetic",
            "--target",
            "washer",
            "--out",
            str(out),
            "--weights",
            "random",
            "--image-size",
            str(SIZE),
            "--device",
            "cpu",
        ]
    )
    _refused(capsys, status, str(out / "last.pt"), "--resume")
    assert (out / "last.pt").read_bytes() == b"earlier run"


def test_train_out_under_a_file(root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    status = fsad_main(
        [
            "train",
            "--data-root",
            str(root),
            "--dataset",
            "synthetic",
            "--target",
            "washer",
            "--out",
            str(blocker / "run"),
            "--weights",
            "random",
            "--device",
            "cpu",
        ]
    )
    _refused(capsys, status, "--out", str(blocker))


def test_malformed_grid_yaml_names_the_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    grid = tmp_path / "grid.yaml"
    grid.write_text("name: x\njobs: [\n  - notebook: a.ipynb\n")
    _refused(capsys, fsad_main(["batch", str(grid), "--runs-dir", str(tmp_path / "runs")]), str(grid), "not valid YAML")
    assert not (tmp_path / "runs").exists()


def test_malformed_set_value_names_the_option(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _refused(capsys, fsad_main(["batch", str(tmp_path / "g.yaml"), "--set", "k=[2, 4"]), "--set", "k=[2, 4")
    _refused(capsys, fsad_main(["batch", str(tmp_path / "g.yaml"), "--set", "novalue"]), "--set", "novalue")


def test_runs_dir_under_a_file_is_refused_before_any_notebook(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    grid = tmp_path / "grid.yaml"
    grid.write_text("name: g\njobs:\n  - notebook: notebooks/00_quickstart.ipynb\n")
    _refused(capsys, fsad_main(["batch", str(grid), "--runs-dir", str(blocker / "runs")]), "--runs-dir", str(blocker))
    _refused(capsys, fsad_main(["demo", "--runs-dir", str(blocker)]), "--runs-dir", str(blocker))


def test_report_of_a_non_results_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "x.json"
    path.write_text("[1, 2")
    _refused(capsys, fsad_main(["report", str(path)]), str(path))
    _refused(capsys, fsad_main(["report", str(tmp_path / "missing.json")]), "missing.json")


def test_bugs_keep_their_traceback(monkeypatch: pytest.MonkeyPatch, root: Path, tmp_path: Path) -> None:
    import fsad.evaluate

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(fsad.evaluate, "run_evaluation", out_of_memory)
    with pytest.raises(RuntimeError, match="out of memory"):  # not swallowed into a one-line "error:"
        fsad_main(_evaluate(root, tmp_path / "R.json"))


# --------------------------------------------------------------------------- data_tools
def test_synthetic_refuses_a_folder_it_did_not_write(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "mine"
    (out / "washer").mkdir(parents=True)
    (out / "washer" / "thesis.txt").write_text("precious")
    args = [
        "synthetic",
        "--out",
        str(out),
        "--categories",
        "washer",
        "--image-size",
        "32",
        "--n-train",
        "1",
        "--n-test-good",
        "1",
        "--n-test-per-defect",
        "1",
    ]
    _refused(capsys, data_main(args), str(out), "--overwrite", "washer")
    assert (out / "washer" / "thesis.txt").read_text() == "precious"
    assert data_main(args + ["--overwrite"]) == 0
    assert (out / SYNTHETIC_MARKER_FILE).is_file() and not (out / "washer" / "thesis.txt").exists()
    assert data_main(args) == 0  # its own folder: regenerated without --overwrite


def test_verify_names_non_binary_masks_and_unconvertible_images(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data = tmp_path / "data"
    shutil.copytree(root, data)
    assert data_main(["verify", "--root", str(data), "--dataset", "synthetic"]) == 0
    capsys.readouterr()
    sixteen = sorted((data / "weave" / "train" / "good").glob("*.png"))[0]
    grey = np.asarray(Image.open(sixteen).convert("L"), dtype=np.uint16) * 257
    Image.fromarray(grey).save(sixteen)  # a 16-bit PNG: converted, not a problem
    assert Image.open(sixteen).mode == "I;16"
    mask = _jpeg_mask(data)
    floats = sorted((data / "weave" / "test" / "good").glob("*.png"))[0]
    floats.unlink()
    Image.fromarray(np.zeros((SIZE, SIZE), np.float32)).save(floats.with_suffix(".tif"))
    assert data_main(["verify", "--root", str(data), "--dataset", "synthetic"]) == 2
    err = capsys.readouterr().err
    assert f"Mask {mask} is not binary" in err and "mode F" in err and str(floats.with_suffix(".tif")) in err
    assert str(sixteen) not in err


def test_sixteen_bit_grey_is_scaled_not_white(tmp_path: Path) -> None:
    values = np.array([[0, 257 * 64], [257 * 128, 65535]], np.uint16)
    path = tmp_path / "g16.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode == "I;16"
    eight = tmp_path / "g8.png"
    Image.fromarray((values // 257).astype(np.uint8)).save(eight)
    torch.testing.assert_close(load_image(path, 2, normalize=False), load_image(eight, 2, normalize=False))


# Every mode PIL opens a file in, with a format that stores it: converted to the right RGB, or refused by name.
MODE_FILES = {
    "1": "PNG",
    "L": "PNG",
    "LA": "PNG",
    "P": "PNG",
    "PA": "TIFF",
    "RGB": "PNG",
    "RGBA": "PNG",
    "CMYK": "TIFF",
    "YCbCr": "TIFF",
    "LAB": "TIFF",
    "I": "TIFF",
    "I;16": "PNG",
    "I;16B": "TIFF",
    "F": "TIFF",
}
REFUSED_MODES = {"LAB", "F"}


@pytest.mark.parametrize("mode", list(MODE_FILES))
def test_every_pil_mode_is_converted_or_refused_by_name(mode: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    if mode.startswith("I;16"):
        image = Image.fromarray(rng.integers(0, 65536, (5, 5), dtype=np.uint16)).convert(mode)
    elif mode == "I":
        image = Image.fromarray(rng.integers(0, 65536, (5, 5)).astype(np.int32))
    else:
        image = Image.fromarray(rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)).convert(mode)
    path = tmp_path / f"x.{MODE_FILES[mode].lower()}"
    image.save(path, format=MODE_FILES[mode])
    stored = Image.open(path)
    assert stored.mode == mode  # the file really holds this mode
    if mode in REFUSED_MODES:
        with pytest.raises(FsadError, match=rf"{path.name}.*mode {mode}"):
            load_image(path, 5)
        return
    tensor = load_image(path, 5, normalize=False).permute(1, 2, 0).numpy()
    if stored.mode.startswith("I"):  # 16-bit: 0..65535 onto 0..255 (x / 257, rounded), grey in all 3 channels
        expected = np.repeat(np.round(np.asarray(stored).astype(np.float64) / 257)[..., None], 3, axis=2)
    else:
        expected = np.asarray(stored.convert("RGB")).astype(np.float64)
    np.testing.assert_allclose(tensor * 255, expected, atol=1e-4)


# --------------------------------------------------------------------------- property tests of the loaders
MODES = ["1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV", "I", "I;16", "F"]
SAVE_FORMATS = {"PNG": ".png", "TIFF": ".tif", "BMP": ".bmp", "JPEG": ".jpg"}


def _expected_rgb(image: Image.Image) -> np.ndarray | None:
    """What the loader must give for a PIL image (8-bit RGB), or None when it must refuse."""
    if image.mode in ("I;16", "I"):
        values = np.asarray(image).astype(np.int64)
        if values.min() < 0 or values.max() > 65535:
            return None
        return np.repeat(np.round(values / 257).astype(np.uint8)[..., None], 3, axis=2)
    if image.mode in ("F", "LAB", "HSV"):
        return None
    return np.asarray(image.convert("RGB"))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    mode=st.sampled_from(MODES),
    fmt=st.sampled_from(sorted(SAVE_FORMATS)),
    seed=st.integers(0, 2**16),
    cut=st.one_of(st.none(), st.floats(0.0, 0.95)),
    side=st.integers(1, 9),
)
def test_image_loader_gives_a_correct_tensor_or_a_clear_error(
    tmp_path: Path, mode: str, fmt: str, seed: int, cut: float | None, side: int
) -> None:
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65536, (side, side), dtype=np.uint16))
    elif mode == "I":
        image = Image.fromarray(rng.integers(-5, 70000, (side, side)).astype(np.int32))
    else:
        image = Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).convert(mode)
    path = tmp_path / f"img{seed}{SAVE_FORMATS[fmt]}"
    try:
        image.save(path, format=fmt)
    except (OSError, ValueError, KeyError):
        return  # PIL cannot write this mode in this format: nothing to load
    if cut is not None:
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * cut)])
    try:
        tensor = load_image(path, side, normalize=False)
    except FsadError as error:
        assert str(path) in str(error)
        if cut is None:  # an intact file is refused only for a mode without a faithful conversion
            assert _expected_rgb(Image.open(path)) is None, str(error)
        return
    stored = Image.open(path)
    expected = _expected_rgb(stored)
    assert expected is not None, f"mode {stored.mode} must be refused"
    assert tensor.shape == (3, side, side) and tensor.dtype == torch.float32
    np.testing.assert_allclose(tensor.permute(1, 2, 0).numpy(), expected / 255.0, atol=1e-6)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=400), png_prefix=st.booleans())
def test_random_bytes_give_a_clear_error(tmp_path: Path, data: bytes, png_prefix: bool) -> None:
    path = tmp_path / "random.png"
    path.write_bytes((b"\x89PNG\r\n\x1a\n" if png_prefix else b"") + data)
    for load in (load_image, load_mask):
        with pytest.raises(FsadError, match="random.png"):
            load(path, 4)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    mode=st.sampled_from(["1", "L", "LA", "P", "RGB", "RGBA", "I;16", "I"]),
    seed=st.integers(0, 2**16),
    values=st.sampled_from([(0, 255), (0, 1), (0,), (255,), (0, 3, 255), (0, 128), (0, 65535)]),
    fmt=st.sampled_from(["PNG", "TIFF", "JPEG"]),
)
def test_mask_loader_binary_or_refused(tmp_path: Path, mode: str, seed: int, values: tuple[int, ...], fmt: str) -> None:
    rng = np.random.default_rng(seed)
    raw = np.asarray(values)[rng.integers(0, len(values), (6, 6))]
    if mode in ("I;16", "I"):
        image = Image.fromarray(raw.astype(np.uint16 if mode == "I;16" else np.int32))
    elif max(values) > 255:
        return
    else:
        image = Image.fromarray(raw.astype(np.uint8)).convert(mode)
    path = tmp_path / f"mask{seed}.{fmt.lower()}"
    try:
        image.save(path, format=fmt)
    except (OSError, ValueError, KeyError):
        return
    stored = Image.open(path)
    if stored.mode in ("1", "L", "I", "I;16"):
        grey, colour = np.asarray(stored).astype(np.int64), False
    elif stored.mode == "LA":
        grey, colour = np.asarray(stored.getchannel("L")).astype(np.int64), False
    else:
        rgb = np.asarray(stored.convert("RGB")).astype(np.int64)
        grey = rgb[..., 0]
        colour = not ((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())
    present = set(np.unique(grey).tolist()) - {0}
    binary = not colour and (len(present) == 0 or (len(present) == 1 and present <= {1, 255, 65535}))
    try:
        mask = load_mask(path, 6)
    except FsadError as error:
        assert str(path) in str(error) and not binary, str(error)
        return
    assert binary, f"non-binary mask {sorted(present)} accepted"
    np.testing.assert_array_equal(mask[0].numpy(), (np.asarray(grey) > 0).astype(np.float32))
