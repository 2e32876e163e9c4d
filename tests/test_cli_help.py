"""`python -m fsad --help` documents everything: each command has a description and an example that parses,
every option has help, defaults are shown; `--backbone auto` is the default and resolves to a real backbone."""

from __future__ import annotations

import argparse
import shlex

import pytest

from fsad import cli


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield path + (name,), sub
                yield from _commands(sub, path + (name,))


COMMANDS = list(_commands(cli.build_parser()))


def test_every_command_is_listed() -> None:
    names = {" ".join(p) for p, _ in COMMANDS}
    assert {
        "evaluate",
        "train",
        "ablation table5",
        "checkpoint convert",
        "batch",
        "report",
        "demo",
        "notebooks",
    } <= names


@pytest.mark.parametrize("path,parser", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_command_has_description_example_and_documented_options(path, parser) -> None:
    assert parser.description and len(parser.description) > 20
    assert parser.epilog and parser.epilog.startswith("example:\n  python -m fsad " + " ".join(path))
    undocumented = [
        a.dest
        for a in parser._actions
        if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)) and not a.help
    ]
    assert not undocumented, f"{' '.join(path)}: options without help: {undocumented}"
    text = parser.format_help()
    for action in parser._actions:
        if (
            action.option_strings
            and not any(action.default is v for v in (None, False, argparse.SUPPRESS))
            and action.help
        ):
            assert "(default:" in text.split(action.option_strings[-1], 1)[1], (path, action.dest)


@pytest.mark.parametrize("path,parser", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_example_parses(path, parser) -> None:
    example = parser.epilog.split("\n", 1)[1].strip()
    words = shlex.split(example)[3:]  # after "python -m fsad"
    if any(isinstance(a, argparse._SubParsersAction) for a in parser._actions):
        return  # a command group: its subcommands' examples are checked
    args = cli.build_parser().parse_args(words)
    assert args.func is not None


def test_backbone_auto_is_the_default_and_is_resolved(capsys: pytest.CaptureFixture) -> None:
    from fsad.weights import default_backbone

    args = cli.build_parser().parse_args(
        ["evaluate", "--data-root", "d", "--dataset", "mvtec", "--categories", "bottle", "--out", "o.json"]
    )
    assert args.backbone == "auto"
    config = cli.evaluation_config(args)
    assert config.backbone == default_backbone() != "auto"
    assert f"backbone: auto -> {config.backbone}" in capsys.readouterr().out
    explicit = cli.build_parser().parse_args(
        [
            "evaluate",
            "--data-root",
            "d",
            "--dataset",
            "mvtec",
            "--categories",
            "bottle",
            "--out",
            "o.json",
            "--backbone",
            "resnet18",
        ]
    )
    assert cli.evaluation_config(explicit).backbone == "resnet18"


def test_library_does_not_import_the_cli() -> None:
    """No import cycle: the argparse layer sits on top; nothing in fsad imports fsad.cli."""
    from pathlib import Path

    root = Path(cli.__file__).parent
    offenders = [
        p.name for p in root.rglob("*.py") if p.name not in ("cli.py", "__main__.py") and "fsad.cli" in p.read_text()
    ]
    assert not offenders
