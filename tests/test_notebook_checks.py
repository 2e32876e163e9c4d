"""Checks that keep the tutorials true: commands, paper citations and course structure.

(a) Every ``python -m fsad …`` / ``python -m data_tools …`` in notebook markdown and README.md is parsed by the
    real argparse parsers: a command, a flag or a choice that does not exist fails. Required arguments that prose
    leaves out are tolerated (prose shortens commands); ``...`` stands for "more arguments" and is dropped.
(b) Every "Sec./Eq./Table/Fig. N" citing RegAD or RCM-FSAD in notebook markdown names a place in
    ``fsad.paper.PAPER_REFERENCES`` and the prose around it names what is there; the table itself is checked
    against the papers' text in ../shared/papers/ (skipped with the reason when the papers are absent).
(c) Each tutorial has learning goals, prerequisites and run times on top, a Summary (3-6 bullets), Exercises
    (>= 3) with solutions in cells tagged ``solution``, References with >= 2 links, and at least one equation.

A citation belongs to the paper named last before it in the same paragraph ("RegAD" or "RCM-FSAD"; RegAD when
none is named); after another work's name (PaDiM, SimSiam, ...) it is that work's and is not checked.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
from pathlib import Path

import nbformat
import pytest

from fsad import paper

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]*_*.ipynb"))
PAPERS = Path(os.environ.get("FSAD_SHARED_PAPERS", REPO_ROOT.parent / "shared" / "papers"))

# Notebooks that compute no formula of their own (they redraw published figures from results files).
NO_EQUATION_NEEDED = {"08"}


def _number(path: Path) -> str:
    return path.stem.split("_", 1)[0]


def _params(paths: list[Path]) -> list:
    return [pytest.param(p, id=p.stem) for p in paths]


def _markdown(path: Path) -> list[str]:
    return [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown"]


# ----------------------------------------------------------------------------------------------- (a) commands
COMMAND = re.compile(r"python -m (fsad|data_tools)(?![.\w])([^`\n;&]*)")


def commands_in(text: str) -> list[tuple[str, str]]:
    """``(module, argument string)`` of every command in inline code spans and fenced code blocks of markdown."""
    text = re.sub(r"\\\n\s*", " ", text)  # shell line continuations
    spans = re.findall(r"```[^\n]*\n(.*?)```", text, flags=re.S)
    spans += re.findall(r"(?<!`)`([^`\n]+)`(?!`)", re.sub(r"```.*?```", "", text, flags=re.S))
    found = []
    for span in spans:
        for module, rest in COMMAND.findall(span):
            found.append((module, rest.split(" #", 1)[0].split(" | ", 1)[0].strip()))
    return found


class _ParseError(Exception):
    pass


def _relaxed(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The parser with every option optional (argparse reports missing required options before unknown ones)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _relaxed(sub)
        elif action.option_strings:
            action.required = False
    return parser


def _parse(module: str, argument_string: str) -> None:
    """Parse with the real parser; raises _ParseError unless only required arguments are missing."""
    if module == "fsad":
        from fsad.cli import build_parser
    else:
        from data_tools.__main__ import build_parser
    # Usage notation: "[--resume]" is an option, "..." more arguments, "table5|table6" alternatives (each parsed).
    tokens = [t.strip("[]").rstrip("…") for t in shlex.split(argument_string)]
    tokens = [t for t in tokens if t not in ("", "...", "…")]
    choices = [t.split("|") if "|" in t and not t.startswith("-") else [t] for t in tokens]
    alternatives = [[c[i % len(c)] for c in choices] for i in range(max((len(c) for c in choices), default=1))]
    for argv in alternatives:
        parser = _relaxed(build_parser())

        def error(self, message):  # noqa: ANN001 - argparse's signature
            raise _ParseError(message)

        original = argparse.ArgumentParser.error
        argparse.ArgumentParser.error = error
        try:
            parser.parse_args(argv)
        except _ParseError as exc:
            if not str(exc).startswith("the following arguments are required"):
                raise _ParseError(f"python -m {module} {' '.join(argv)}: {exc}") from None
        except SystemExit as exc:  # --help and friends
            if exc.code not in (0, None):
                raise _ParseError(f"python -m {module} {' '.join(argv)}: exit {exc.code}") from None
        finally:
            argparse.ArgumentParser.error = original


def test_command_parser_rejects_what_does_not_exist() -> None:
    assert commands_in("run `python -m fsad table5 --out x` now") == [("fsad", "table5 --out x")]
    for bad in ("table5 --out x", "evaluate --no-such-flag", "ablation table9"):
        with pytest.raises(_ParseError):
            _parse("fsad", bad)
    with pytest.raises(_ParseError):
        _parse("data_tools", "download mpdd")
    _parse("fsad", "ablation table5|table6 --out DIR")
    _parse("fsad", "evaluate --data-root D --dataset mvtec ...")  # required --categories/--out left out: fine


@pytest.mark.parametrize("path", _params(NOTEBOOKS))
def test_notebook_commands_parse(path: Path) -> None:
    commands = [c for text in _markdown(path) for c in commands_in(text)]
    failures = []
    for module, arguments in commands:
        try:
            _parse(module, arguments)
        except _ParseError as exc:
            failures.append(str(exc))
    assert not failures, f"{path.name}: commands that the CLI rejects: {failures}"


def test_readme_commands_parse() -> None:
    commands = commands_in((REPO_ROOT / "README.md").read_text())
    assert len(commands) >= 5, "README lost its commands? the extraction found fewer than 5"
    failures = []
    for module, arguments in commands:
        try:
            _parse(module, arguments)
        except _ParseError as exc:
            failures.append(str(exc))
    assert not failures, f"README.md: commands that the CLI rejects: {failures}"


# ----------------------------------------------------------------------------------------------- (b) citations
CITATION = re.compile(
    r"\b(Sections?|Secs?\.|Equations?|Eqs?\.|Tables?|Figures?|Figs?\.)\s*\(?(\d+(?:\.\d+)?)\)?"
    r"((?:\s*(?:[–-]|,|and)\s*\(?\d+(?:\.\d+)?)*)"
)
PAPER_NAME = re.compile(
    r"RCM-FSAD|RegAD|PaDiM|PatchCore|SimSiam|Jaderberg|Misra|Zhu et al|Bergmann|Defard|"
    r"Roth et al|Chen and He|He et al|DCNv2 paper|STN paper"
)
OWNER = {"RegAD": "regad", "RCM-FSAD": "rcm"}


def citations_in(text: str) -> list[tuple[str, str, str]]:
    """``(paper or None, place key, context)`` for every citation in a markdown text."""
    found = []
    for paragraph in re.split(r"\n\s*\n", text):
        for match in CITATION.finditer(paragraph):
            names = PAPER_NAME.findall(paragraph[: match.start()])
            owner = OWNER.get(names[-1]) if names else "regad"
            numbers = [match.group(2)]
            tail = re.findall(r"([–-]|,|and)\s*\(?(\d+(?:\.\d+)?)", match.group(3))
            for separator, number in tail:
                if separator in "–-" and "." not in number and "." not in numbers[-1]:
                    numbers += [str(n) for n in range(int(numbers[-1]) + 1, int(number) + 1)]
                else:
                    numbers.append(number)
            # The topic words are looked for in the whole cell (a heading's topic is in the text under it); a
            # reference list only names places (its links are the context), so it is checked for existence only.
            context = None if LINK.search(paragraph) else text
            found += [(owner, paper.reference_key(match.group(1), n), context) for n in numbers]
    return found


def test_citation_extraction() -> None:
    found = citations_in("RegAD's loss (Sec. 4.1, Eq. 2–3) and RCM-FSAD Table 7; PaDiM (Sec. 3)")
    assert [(o, k) for o, k, _ in found] == [
        ("regad", "Sec. 4.1"),
        ("regad", "Eq. 2"),
        ("regad", "Eq. 3"),
        ("rcm", "Table 7"),
        (None, "Sec. 3"),
    ]


def _check_citations(texts: list[str]) -> list[str]:
    problems = []
    for text in texts:
        for owner, key, context in citations_in(text):
            if owner is None:
                continue
            about = paper.PAPER_REFERENCES[owner].get(key)
            if about is None:
                problems.append(
                    f"{paper.PAPER_NAMES[owner]} has no {key} in fsad.paper.PAPER_REFERENCES "
                    f"(cited in: ...{(context or text).strip()[:160]}...)"
                )
            elif context is not None and not any(
                word in context.lower().replace("localis", "localiz") for word in about
            ):
                problems.append(
                    f"{paper.PAPER_NAMES[owner]} {key} is about {about}; the cell citing it "
                    f"names none of these: ...{context.strip()[:200]}..."
                )
    return problems


@pytest.mark.parametrize("path", _params(NOTEBOOKS))
def test_notebook_paper_citations(path: Path) -> None:
    problems = _check_citations(_markdown(path))
    assert not problems, f"{path.name}:\n" + "\n".join(problems)


def test_wrong_citations_are_caught() -> None:
    # The mistakes issue 15 found: STN in "Sec. 3.2", the loss in "Eq. 3-4", the ablations in "Sec. 5.4".
    assert _check_citations(["The STN of RegAD (Sec. 3.2) warps features."])
    assert _check_citations(["RegAD's ablations (Sec. 5.4) vary augmentation."])
    assert not _check_citations(["RegAD's ablations (Sec. 5.3) vary augmentation."])
    assert _check_citations(["RCM-FSAD's module ablation (Table 8)."])


def _paper_text(name: str) -> str:
    path = PAPERS / name
    if not path.is_file():
        pytest.skip(f"paper text {path} absent (set FSAD_SHARED_PAPERS or place shared/ beside the checkout)")
    return path.read_text(encoding="utf-8")


HEADING = re.compile(r"^(\d+(?:\.\d+)?) [A-Z][A-Za-z -]+$", re.M)


def place_text(owner: str, key: str, text: str) -> str | None:
    """The text of a cited place in a paper: a section with its subsections, the surroundings of an equation's
    number, or every line that mentions a table/figure (caption and prose). None when the place is not there."""
    kind, number = key.split(" ", 1)
    if kind == "Sec.":
        headings = list(HEADING.finditer(text))
        for i, heading in enumerate(headings):
            if heading.group(1) == number:
                level = number.count(".")
                end = next((h.start() for h in headings[i + 1 :] if h.group(1).count(".") <= level), len(text))
                return text[heading.start() : end]
        return None
    if kind == "Eq.":
        pattern = (
            rf"\\tag\{{{number}\}}|^\({number}\)\s*$|\({number}\)\s*\$\$"
            if owner == "regad"
            else rf"equation \({number}\)"
        )
        match = re.search(pattern, text, flags=re.M)
        return None if match is None else text[max(0, match.start() - 700) : match.end() + 300]
    word = {"Table": "Tables?", "Fig.": ("Fig\\." if owner == "regad" else "Figure")}[kind]
    lines = []
    for line in text.splitlines():
        for m in re.finditer(rf"\b{word} (\d+)(?:[–-](\d+))?", line):
            low, high = int(m.group(1)), int(m.group(2) or m.group(1))
            if low <= int(number) <= high:
                lines.append(line)
                break
    return "\n".join(lines) or None


@pytest.mark.parametrize("owner,file", [("regad", paper.REGAD_PAPER_FILE), ("rcm", paper.RCM_PAPER_FILE)])
def test_reference_table_matches_the_papers(owner: str, file: str) -> None:
    text = _paper_text(file)
    problems = []
    for key, about in paper.PAPER_REFERENCES[owner].items():
        place = place_text(owner, key, text)
        if place is None:
            problems.append(f"{key}: not found in {file}")
            continue
        missing = [word for word in about if word not in place.lower()]
        if missing:
            problems.append(f"{key}: {missing} do not occur there")
    assert not problems, f"fsad.paper.PAPER_REFERENCES[{owner!r}] disagrees with {file}: {problems}"
    if owner == "rcm":
        assert not any(k.startswith("Sec.") for k in paper.PAPER_REFERENCES["rcm"]), "RCM-FSAD has no numbered sections"
        assert place_text("rcm", "Sec. 4.1", text) is None
    else:
        assert place_text("regad", "Sec. 3.2", text) is None and place_text("regad", "Table 7", text) is None


# ----------------------------------------------------------------------------------------------- (c) structure
LINK = re.compile(r"https?://[^\s)>\]]+")
EQUATION = re.compile(r"\$\$.+?\$\$|\$[^$\n]*\\[A-Za-z]+[^$\n]*\$", re.S)


def _section(cells: list, title: str) -> tuple[int, str] | None:
    """(cell index, text) of the first markdown heading containing ``title``: the text runs from the heading to the
    next heading of the same or a higher level (in the same cell or the following markdown cells)."""
    for i, cell in enumerate(cells):
        if cell.cell_type != "markdown":
            continue
        lines = cell.source.splitlines()
        for j, line in enumerate(lines):
            heading = re.match(r"^(#+)\s", line)
            if heading and title.lower() in line.lower():
                level, body = len(heading.group(1)), [line]
                following = lines[j + 1 :] + [
                    text for c in cells[i + 1 :] if c.cell_type == "markdown" for text in c.source.splitlines()
                ]
                for rest in following:
                    other = re.match(r"^(#+)\s", rest)
                    if other and len(other.group(1)) <= level:
                        break
                    body.append(rest)
                return i, "\n".join(body)
    return None


def structure_problems(nb: nbformat.NotebookNode, number: str) -> list[str]:
    cells = nb.cells
    problems = []
    top = "\n".join(c.source for c in cells[:4] if c.cell_type == "markdown").lower()
    for needle, what in (
        ("after this notebook you can", "learning goals ('After this notebook you can ...')"),
        ("prerequisites", "prerequisites"),
        ("run time", "run times (smoke and full)"),
    ):
        if needle not in top:
            problems.append(f"no {what} in the opening cells")
    summary = _section(cells, "Summary")
    if summary is None:
        problems.append("no '## Summary' cell")
    else:
        bullets = re.findall(r"^\s{0,1}[*-] ", summary[1], flags=re.M)
        if not 3 <= len(bullets) <= 6:
            problems.append(f"Summary has {len(bullets)} bullets (3-6 expected)")
    exercises = _section(cells, "Exercises")
    if exercises is None:
        problems.append("no '## Exercises' cell")
    else:
        items = re.findall(r"^\d+\. ", exercises[1], flags=re.M)
        if len(items) < 3:
            problems.append(f"Exercises has {len(items)} numbered items (>= 3 expected)")
        solutions = [i for i, c in enumerate(cells) if "solution" in c.get("metadata", {}).get("tags", [])]
        labels = {int(n) for i in solutions for n in re.findall(r"Solution (\d+)", cells[i].source)}
        if not set(range(1, len(items) + 1)) <= labels:
            problems.append(
                f"solutions (cells tagged 'solution' saying 'Solution N') cover {sorted(labels)}, "
                f"exercises 1..{len(items)}"
            )
        if solutions and min(solutions) < exercises[0]:
            problems.append("a solution cell comes before the Exercises")
    references = _section(cells, "References")
    if references is None or len(set(LINK.findall(references[1]))) < 2:
        problems.append("no '## References' cell with >= 2 links")
    if number not in NO_EQUATION_NEEDED:
        if not any(EQUATION.search(c.source) for c in cells if c.cell_type == "markdown"):
            problems.append("no equation ($$...$$ or $\\...$) in the markdown")
    return problems


@pytest.mark.parametrize("path", _params(NOTEBOOKS))
def test_tutorial_structure(path: Path) -> None:
    problems = structure_problems(nbformat.read(path, as_version=4), _number(path))
    assert not problems, f"{path.name}: " + "; ".join(problems)


def test_structure_check_finds_what_is_missing() -> None:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# T\nAfter this notebook you can x.")])
    problems = " ".join(structure_problems(nb, "99"))
    for word in ("prerequisites", "Summary", "Exercises", "References", "equation"):
        assert word in problems
