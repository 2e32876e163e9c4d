"""The three dependency files agree: constraints.txt pins, environment.yml repeats them, pyproject lists them."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def constraints() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            assert "==" in line, f"constraints.txt line is not an exact pin: {line!r}"
            name, version = line.split("==")
            pins[_name(name)] = version.strip()
    return pins


def test_environment_yml_has_exactly_the_constraint_pins_of_the_course_install():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    env_pins = {}
    assert "-e .[lab]" in pip_section, "environment.yml must install the kit itself (with JupyterLab)"
    for requirement in pip_section:
        if requirement.startswith("-"):
            continue
        name, version = requirement.split("==")
        env_pins[_name(name)] = version.strip()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    course = {_name(r) for r in project["dependencies"] + project["optional-dependencies"]["lab"]}
    assert env_pins == {name: pin for name, pin in constraints().items() if name in course}


def test_every_direct_dependency_is_pinned():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    direct = {_name(r) for r in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        direct |= {_name(r) for r in extra}
    pins = constraints()
    assert direct - set(pins) == set(), "dependencies without a pin in constraints.txt"
    assert set(pins) - direct == set(), "pins for packages that pyproject does not depend on"
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"


def test_ci_script_fails_on_no_tests():
    makefile = (ROOT / "Makefile").read_text()
    assert "-eq 5" in makefile and (ROOT / ".ci" / "run").stat().st_mode & 0o111


def test_metadata_lets_courses_install_it():
    """Ranges, not pins, for torch/torchvision; no Python upper cap; one version source; extras for the rest."""
    import fsad

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=3.11.4"
    deps = {_name(r): r for r in project["dependencies"]}
    for name in ("torch", "torchvision"):
        assert "==" not in deps[name] and ">=" in deps[name], deps[name]
    assert "jupyterlab" not in deps and "threadpoolctl" not in deps and "pytest" not in deps
    assert {"lab", "dev", "bench"} <= set(project["optional-dependencies"])
    assert project["dynamic"] == ["version"] and fsad.__version__ in (ROOT / "CHANGELOG.md").read_text()
    for name in ("LICENSE", "CITATION.cff", "CONTRIBUTING.md", "CHANGELOG.md", "docs/design.md"):
        assert (ROOT / name).is_file(), f"{name} missing"
    assert (ROOT / "fsad" / "assets" / "LICENSE-mobilenetv2-onnx.txt").read_text().count("Apache License") >= 1


def test_results_record_kit_version_and_commit():
    import fsad
    from fsad.utils import environment_info, git_commit

    info = environment_info()
    assert info["fsad_kit"] == fsad.__version__
    commit = git_commit()
    if (ROOT / ".git").exists():
        assert commit is not None and re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", commit), commit
    assert info["git_commit"] == commit
