"""The one YAML loader for every file Aquila reads (workflow specs, groups files, cluster
profiles): regular files only, size-capped, PyYAML's safe loader without aliases, merge keys,
duplicate keys or deep nesting; every problem is one :class:`SpecError` line naming the file."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import SpecError

MAX_YAML_DEPTH = 64
"""Nesting levels a spec, groups file or cluster profile may have (a GeoJSON MultiPolygon in
``intersects`` needs 7); deeper YAML is refused before PyYAML's recursive composer overflows."""


class _NoAliasSafeLoader(yaml.SafeLoader):
    """SafeLoader that refuses anchors/aliases (specs never need them, alias bombs do), merge
    keys, duplicate keys (PyYAML keeps the last one silently) and nesting deeper than
    :data:`MAX_YAML_DEPTH` (PyYAML composes recursively: 10 000 ``[`` overflow the stack)."""

    _depth = 0

    def compose_node(self, parent, index):  # type: ignore[override]
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.constructor.ConstructorError(
                None, None, "YAML aliases (*name) are not allowed in workflow specs",
                event.start_mark,
            )
        event = self.peek_event()
        if getattr(event, "anchor", None):
            raise yaml.constructor.ConstructorError(
                None, None, "YAML anchors (&name) are not allowed in workflow specs",
                event.start_mark,
            )
        if self._depth >= MAX_YAML_DEPTH:
            raise yaml.composer.ComposerError(
                None, None, f"YAML nested deeper than {MAX_YAML_DEPTH} levels; a spec needs a "
                "handful: flatten it", event.start_mark,
            )
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):  # type: ignore[override]
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, yaml.Node] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    raise yaml.constructor.ConstructorError(
                        None, None, "YAML merge keys (<<) are not allowed: write the keys out",
                        key_node.start_mark,
                    )
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node)
                except TypeError:  # an unhashable key: PyYAML's own check names it
                    continue
                if first is not key_node:
                    raise yaml.constructor.ConstructorError(
                        None, None,
                        f"duplicate key {key!r}: first at line {first.start_mark.line + 1}, "
                        f"again at line {key_node.start_mark.line + 1}; give each key once "
                        "(delete one, or merge their values)",
                        key_node.start_mark,
                    )
        return super().construct_mapping(node, deep=deep)


def read_capped(path: Path, *, limit: int, what: str) -> bytes:
    """The bytes of a small regular file, at most ``limit`` of them read. A FIFO, device or
    socket is refused before any read (a FIFO blocks, ``/dev/zero`` never ends): opened
    non-blocking, checked with fstat on the open descriptor (no race with a swapped path)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        raise SpecError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise SpecError(
                f"{what} {path} is not a regular file (a folder, device, FIFO or socket); "
                "give the path of a YAML file"
            )
        with os.fdopen(fd, "rb", closefd=False) as f:
            raw = f.read(limit + 1)
    except OSError as exc:
        raise SpecError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(raw) > limit:
        raise SpecError(
            f"{what} {path} is larger than the {limit}-byte limit for one; is it the right file?"
        )
    return raw


def load_yaml_file(path: Path, *, limit: int, what: str) -> Any:
    """Read a small YAML file (size-capped, regular files only) with the strict safe loader;
    every problem is one :class:`SpecError` line naming the file, line and column."""
    raw = read_capped(path, limit=limit, what=what)
    try:
        return yaml.load(raw.decode("utf-8"), Loader=_NoAliasSafeLoader)  # noqa: S506 (safe)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        raise SpecError(f"{path}{where}: not valid YAML for a {what}: {problem}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: not valid YAML for a {what}: {exc}") from None
