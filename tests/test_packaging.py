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


def test_environment_yml_has_exactly_the_constraint_pins():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    env_pins = {}
    for requirement in pip_section:
        name, version = requirement.split("==")
        env_pins[_name(name)] = version.strip()
    assert env_pins == constraints()


def test_every_direct_dependency_is_pinned():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    direct = {_name(r) for r in project["dependencies"]}
    direct |= {_name(r) for r in project["optional-dependencies"]["dev"]}
    pins = constraints()
    assert direct - set(pins) == set(), "dependencies without a pin in constraints.txt"
    assert set(pins) - direct == set(), "pins for packages that pyproject does not depend on"
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"


def test_ci_script_fails_on_no_tests():
    makefile = (ROOT / "Makefile").read_text()
    assert "-eq 5" in makefile and (ROOT / ".ci" / "run").stat().st_mode & 0o111
