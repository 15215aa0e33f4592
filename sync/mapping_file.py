"""Loads a mapping YAML into a MappingSpec; every error names the file, the line and the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from sync.errors import MappingError
from sync.mapping import MappingSpec


def _line_of(node: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """Walk the composed YAML tree along a pydantic error location to the node's line."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if getattr(k, "value", None) == part), None)
            key_node = next((k for k, _ in node.value if getattr(k, "value", None) == part), None)
            if match is None:
                break
            line = (key_node or match).start_mark.line + 1
            node = match
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                break
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def parse_mapping(text: str, file: str = "<mapping>") -> MappingSpec:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data: Any = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise MappingError(f"YAML syntax error: {exc.problem or exc}", file=file,
                           line=line) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise MappingError("the top level must be a mapping of keys", file=file, line=1)
    try:
        return MappingSpec.model_validate(data)
    except ValidationError as exc:
        # an unknown key is the likeliest typo: name it first
        err = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")[0]
        loc = tuple(err["loc"])
        key = ".".join(str(p) for p in loc)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = f"unknown key {loc[-1]!r}"
        more = len(exc.errors()) - 1
        if more:
            msg += f" (and {more} more problem{'s' if more > 1 else ''})"
        raise MappingError(msg, file=file, line=_line_of(root, loc), key=key) from None


def load_mapping(path: Path) -> MappingSpec:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise MappingError(f"cannot read the mapping file: {exc.strerror}",
                           file=str(path)) from None
    return parse_mapping(text, str(path))
