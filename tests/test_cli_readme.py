"""Every ``aquila`` command line the documentation shows exists, flag by flag.

The command lines are taken from README.md and docs/*.md: fenced code blocks (also a command in a
``#`` comment, e.g. ``make demo-toa  # = aquila demo-catalog ...``) and inline code spans; a
usage line continued on lines starting with ``[`` is joined. Each subcommand and each option is
looked up in the real parser (``pipeline.cli.main._parser()``), and every inline ``--flag`` of
the prose must be an option of some command. The checker is tested on made-up text, so a
documented flag that does not exist fails here.
"""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from pipeline.cli.main import _parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
SPAN = re.compile(r"`([^`]+)`")
COMMAND = re.compile(r"(?<![\w/.:-])aquila ([-\w][^`]*)")


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {s for action in parser._actions for s in action.option_strings}


def _all_options(parser: argparse.ArgumentParser) -> set[str]:
    out = _options(parser)
    for sub in _subparsers(parser).values():
        out |= _all_options(sub)
    return out


def command_lines(text: str) -> list[str]:
    """The ``aquila ...`` command lines of a Markdown text (the words after ``aquila``)."""
    lines: list[str] = []
    for block in FENCE.findall(text):
        joined: list[str] = []
        for line in block.splitlines():
            if joined and line.strip().startswith("["):  # a usage line continued
                joined[-1] += " " + line.strip()
            else:
                joined.append(line)
        lines += [m.group(1) for line in joined for m in COMMAND.finditer(line)]
    prose = FENCE.sub("", text)
    for span in SPAN.findall(prose):
        m = COMMAND.match(" ".join(span.split()))
        if m:
            lines.append(m.group(1))
    return lines


def prose_flags(text: str) -> list[str]:
    """Inline code spans that start with an option, e.g. `--retries` or `--workers 0`."""
    prose = FENCE.sub("", text)
    return [span.split()[0].split("=")[0] for span in SPAN.findall(prose)
            if re.match(r"--[a-z]", span)]


def problems_of_command(words: str, parser: argparse.ArgumentParser) -> list[str]:
    """What in one command line (the words after ``aquila``) the parser does not know."""
    try:
        tokens = shlex.split(words, comments=True)
    except ValueError as exc:
        return [f"aquila {words}: cannot split ({exc})"]
    tokens = [t.strip("[]") for t in tokens]
    tokens = [t for t in tokens if t and t != "..."]
    out: list[str] = []
    current = parser
    path = ["aquila"]
    for token in tokens:
        if token in ("-h", "--help", "--version"):  # answered before any command is needed
            return out
        subs = _subparsers(current)
        if token.startswith("-"):
            flag = token.split("=")[0]
            if flag not in _options(current):
                out.append(f"aquila {words}: {' '.join(path)} has no option {flag}")
        elif subs:  # the first word that is not an option names the command
            if token not in subs:
                out.append(f"aquila {words}: {' '.join(path)} has no command {token!r}")
                return out
            current = subs[token]
            path.append(token)
        # anything else is an argument (SPEC, a path, a value)
    if _subparsers(current):
        out.append(f"aquila {words}: {' '.join(path)} needs a command")
    return out


def problems_of_text(text: str, parser: argparse.ArgumentParser) -> list[str]:
    out = [p for line in command_lines(text) for p in problems_of_command(line, parser)]
    known = _all_options(parser)
    out += [f"{flag}: no command has this option" for flag in prose_flags(text)
            if flag not in known]
    return out


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_documented_command_and_flag_exists(doc):
    parser = _parser()
    text = doc.read_text()
    assert not problems_of_text(text, parser)


def test_the_readme_shows_commands_at_all():
    """The extraction finds the README's commands (an empty list would pass anything)."""
    lines = command_lines((ROOT / "README.md").read_text())
    commands = {line.split()[0] for line in lines}
    assert {"run", "nightly", "history", "validate", "quicklook", "demo-catalog",
            "catalog"} <= commands
    assert any("--retries" in line for line in lines) or "--retries" in prose_flags(
        (ROOT / "README.md").read_text()
    )


def test_a_made_up_flag_or_command_is_found():
    parser = _parser()
    text = """
Some prose with `aquila run spec.yaml --workers 2` and `aquila run x.yaml --made-up-flag 3`,
the prose flag `--no-such-option` and `aquila catalog inspect SOURCE --bands b`.

```sh
aquila nightly SPEC --store s --rebuild
aquila frobnicate SPEC                # no such command
make x   # = aquila run a.yaml --also-made-up
aquila catalog inspect SOURCE... [--bands B,B]
       [--bogus-continued X]
aquila catalog
```
"""
    found = problems_of_text(text, parser)
    assert any("--made-up-flag" in p for p in found), found
    assert any("--no-such-option" in p for p in found), found
    assert any("'frobnicate'" in p for p in found), found
    assert any("--also-made-up" in p for p in found), found
    assert any("--bogus-continued" in p for p in found), found
    assert any("aquila catalog: aquila catalog needs a command" in p for p in found), found
    assert len(found) == 6, found  # the real flags and commands are not reported


def test_global_options_before_the_command_are_known():
    parser = _parser()
    assert problems_of_command("-q run spec.yaml --json", parser) == []
    assert problems_of_command("--json history store", parser) == []
    assert problems_of_command("--version", parser) == []
    assert problems_of_command("catalog inspect --help", parser) == []
    assert problems_of_command("-x run spec.yaml", parser) == [
        "aquila -x run spec.yaml: aquila has no option -x"
    ]
