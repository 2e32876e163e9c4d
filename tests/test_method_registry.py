"""A new method is one class plus one registry call: a toy method registered here, in the test itself, runs
through run_evaluation, the CLI (`evaluate` and `report`), a figure column and the widgets' method list."""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import fsad
from data_tools.synthetic import generate_synthetic_dataset
from fsad import figures
from fsad.cli import build_parser, main
from fsad.config import option
from fsad.errors import ConfigError
from fsad.evaluate import METHOD_OPTIONS, EvaluationConfig, build_method, evaluation_config_class, run_evaluation
from fsad.methods import FewShotMethod, MethodSpec, method_names, method_spec, register_method, unregister_method


# ------------------------------------------------- the whole toy method: one class, its options, one call
@dataclass(kw_only=True)
class NearestMeanOptions:
    toy_norm: int = option("--toy-norm", "p of the p-norm distance to the support mean", default=2, type=int)


class NearestMeanMethod:
    """Distance (p-norm) of each test patch to the mean of the support patches at the same position."""

    name = "toy"

    def __init__(self, model: torch.nn.Module, p: int = 2) -> None:
        self.model = model.eval()
        self.p = p
        self.mean: torch.Tensor | None = None

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.embed(images)

    @torch.no_grad()
    def fit(self, supports: torch.Tensor) -> None:
        self.mean = self.embed(supports).mean(dim=0)

    @torch.no_grad()
    def score_features(self, features: torch.Tensor) -> torch.Tensor:
        return torch.linalg.vector_norm(features - self.mean, ord=self.p, dim=1)

    def describe(self) -> dict:
        return {"method": self.name}


@pytest.fixture
def toy():
    spec = register_method(
        MethodSpec(
            name="toy",
            build=lambda config, model: NearestMeanMethod(model, config.toy_norm),
            options_class=NearestMeanOptions,
            augments_by_default=False,
        )
    )
    yield spec
    unregister_method("toy")


# -----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn")
    generate_synthetic_dataset(
        root, seed=1, image_size=64, n_train=4, n_test_good=3, n_test_per_defect=2, categories=["washer"]
    )
    return root


def _config(root, out, **overrides) -> EvaluationConfig:
    options = dict(
        data_root=str(root),
        dataset="synthetic",
        categories=["washer"],
        ks=[1],
        runs=1,
        out=str(out),
        backbone="resnet18",
        weights="random",
        image_size=64,
        augment_families=[],
    )
    options.update(overrides)
    return EvaluationConfig(**options)


def _cli_args(root, out) -> list[str]:
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
        "--image-size",
        "64",
        "--backbone",
        "resnet18",
        "--weights",
        "random",
        "--method",
        "toy",
        "--out",
        str(out),
        "--quiet",
    ]


def test_adding_the_toy_is_one_class_and_one_registry_call() -> None:
    """The count, by construction: this file defines the toy with one class (and its options dataclass) and one
    register_method call, and no file of the package names it (so nothing else was touched to make the tests
    below pass)."""
    tree = ast.parse(Path(__file__).read_text())
    classes = [node for node in tree.body if isinstance(node, ast.ClassDef)]
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)]
    specs = [call for call in calls if call.func.id == "MethodSpec"]
    registrations = [call for call in calls if call.func.id == "register_method" and call.args[0] in specs]
    assert [c.name for c in classes] == ["NearestMeanOptions", "NearestMeanMethod"]
    assert len(specs) == len(registrations) == 1
    package = Path(fsad.__file__).parent
    mentions = [p for p in package.rglob("*.py") if any(w in p.read_text() for w in ('"toy"', "'toy'", "toy_norm"))]
    assert mentions == []
    assert "toy" not in method_names()


def test_registry_lookup_and_errors(toy) -> None:
    assert method_names() == ("regad", "padim", "patchcore", "toy")
    assert method_spec("toy") is toy and toy.label == "toy"
    with pytest.raises(ConfigError, match="Unknown method 'nope'; choose one of regad, padim, patchcore, toy"):
        method_spec("nope")
    with pytest.raises(ConfigError, match="already registered"):
        register_method(toy)
    # The options table is the specs' options: the built-in rows, and the toy's own option.
    assert METHOD_OPTIONS["channel_subset"] == (("regad", "padim"), "--channel-subset")
    assert METHOD_OPTIONS["coreset_ratio"] == (("patchcore",), "--coreset-ratio")
    assert METHOD_OPTIONS["stn_mode"] == (("regad",), "--stn-mode / --no-stn")
    assert METHOD_OPTIONS["toy_norm"] == (("toy",), "--toy-norm")
    assert [name for name, (methods, _) in METHOD_OPTIONS.items() if "toy" in methods] == ["toy_norm"]
    assert toy.options == (("toy_norm", "--toy-norm"),) and method_spec("padim").options == METHOD_OPTIONS_PADIM


METHOD_OPTIONS_PADIM = (("channel_subset", "--channel-subset"),)


def test_toy_runs_through_run_evaluation(toy, root, tmp_path) -> None:
    document = run_evaluation(_config(root, tmp_path / "toy.json", method="toy"), progress=False)
    assert [(c["method"], c["k"], c["run"]) for c in document["cells"]] == [("toy", 1, 0)]
    cell = document["cells"][0]
    assert 0.0 <= cell["image_auroc"] <= 1.0 and 0.0 <= cell["pixel_auroc"] <= 1.0
    written = json.loads((tmp_path / "toy.json").read_text())
    assert written["config"]["method"] == "toy" and written["method_options"] == {"method": "toy"}
    # The toy gets the untrained, STN-free model (uses_stn False) and is a FewShotMethod.
    method, _ = build_method(_config(root, tmp_path / "x.json", method="toy"), torch.device("cpu"))
    assert isinstance(method, NearestMeanMethod) and isinstance(method, FewShotMethod)
    assert method.model.stn_mode is None
    # Options of other methods are refused for it, naming their owner.
    with pytest.raises(
        ConfigError, match="--channel-subset 8 applies to --method regad / padim only, not to --method toy"
    ):
        run_evaluation(_config(root, tmp_path / "y.json", method="toy", channel_subset=8), progress=False)


def test_toy_runs_through_the_cli_and_report(toy, root, tmp_path, capsys) -> None:
    parser = build_parser()
    assert parser.parse_args(_cli_args(root, tmp_path / "a.json")).method == "toy"
    out = tmp_path / "cli" / "toy.json"
    assert main(_cli_args(root, out)) == 0
    written = json.loads(out.read_text())
    # augments_by_default=False: the CLI gives the toy no augmentation unless --augment is passed.
    assert written["config"]["method"] == "toy" and written["config"]["augment_families"] == []
    assert [c["method"] for c in written["cells"]] == ["toy"]
    capsys.readouterr()
    assert main(["report", str(out.parent)]) == 0
    report = capsys.readouterr().out
    header = next(line for line in report.splitlines() if line.startswith("|"))
    assert "toy" in [column.strip() for column in header.split("|")]


def test_toy_figure_column_and_label(toy, root, tmp_path) -> None:
    assert figures.method_label({"augment_families": []}, "toy") == "toy"
    assert figures.method_label({"augment_families": ["flip"]}, "toy") == "toy_aug"
    assert figures.method_columns() == ("regad", "padim", "patchcore", "toy", "patchcore_aug", "toy_aug")
    base = _config(root, tmp_path / "base.json", augment_families=["flip"], attention="mam")
    plain = figures.method_config(base, "toy", "washer", out_dir=tmp_path)
    augmented = figures.method_config(base, "toy_aug", "washer", out_dir=tmp_path)
    assert (plain.method, plain.augment_families, plain.attention) == ("toy", [], "none")
    assert (augmented.method, augmented.augment_families) == ("toy", ["flip"])
    assert augmented.out == str(tmp_path / "toy_aug" / "washer.json")
    cells = figures.evaluate_methods(_config(root, tmp_path / "b.json"), ["toy"], tmp_path / "columns", progress=False)
    assert {c["method"] for c in cells} == {"toy"}
    assert {c["method"] for c in figures.load_cells(tmp_path / "columns")} == {"toy"}


def test_toy_in_the_widgets_method_list(toy, root, tmp_path) -> None:
    pytest.importorskip("ipywidgets")
    from fsad.widgets import ExplorerSession

    session = ExplorerSession(
        root, "synthetic", ["washer"], ks=(1,), image_size=64, backbone="resnet18", weights="random", device="cpu"
    )
    assert session.methods == ("regad", "padim", "patchcore", "toy")
    result = session.evaluate("washer", 1, (), None, method="toy")
    assert result.method == "toy" and result.maps.shape[1:] == (64, 64)
    # The same numbers as run_evaluation's cell (same run-0 supports, seeded random backbone).
    document = run_evaluation(_config(root, tmp_path / "w.json", method="toy"), progress=False)
    assert result.image_auroc == pytest.approx(document["cells"][0]["image_auroc"], abs=1e-6)
    assert result.pixel_auroc == pytest.approx(document["cells"][0]["pixel_auroc"], abs=1e-6)


def test_toy_option_is_a_flag_of_its_own_and_refused_for_other_methods(toy, root, tmp_path, capsys) -> None:
    """The toy's options dataclass is all it takes for `--toy-norm`: in `evaluate --help` (with its default and
    owner), in the config (recorded, in the resume key), refused with another method, ignored by none."""
    with pytest.raises(SystemExit) as help_exit:
        main(["evaluate", "--help"])
    assert help_exit.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--toy-norm TOY_NORM p of the p-norm distance to the support mean [--method toy only] (default: 2)" in text
    # Another method with the toy's option: refused by name before any work.
    regad = _cli_args(root, tmp_path / "regad.json")
    regad[regad.index("toy")] = "regad"
    assert main([*regad, "--toy-norm", "1"]) == 2
    assert "error: --toy-norm 1 applies to --method toy only, not to --method regad; drop --toy-norm" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "regad.json").exists()
    # The toy with it: used, recorded, part of the resume key; the default is recorded when it is not given.
    assert main([*_cli_args(root, tmp_path / "one.json"), "--toy-norm", "1"]) == 0
    written = json.loads((tmp_path / "one.json").read_text())
    assert written["config"]["toy_norm"] == 1 and written["resume_key"]["toy_norm"] == 1
    config = evaluation_config_class()(**{**written["config"], "out": str(tmp_path / "x.json")})
    assert build_method(config, torch.device("cpu"))[0].p == 1
    # A plain EvaluationConfig (a notebook's, the widgets') reads the toy's option as its default; other methods'
    # resume keys (files written before the toy existed) do not gain the toy's option.
    assert _config(root, tmp_path / "p.json", method="toy").toy_norm == 2
    assert build_method(_config(root, tmp_path / "p.json", method="toy"), torch.device("cpu"))[0].p == 2
    assert "toy_norm" not in evaluation_config_class()(**{**written["config"], "method": "regad"}).resume_key()
