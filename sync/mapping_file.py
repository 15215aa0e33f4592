"""Loads a mapping YAML into a MappingSpec; every error names the file, the line and the key.

The YAML is read with YAML 1.2 scalars: only `true` / `false` are booleans (not `yes`, `no`,
`on`, `off`: `values: {Có: yes}` means the text "yes"), `010` is ten, not eight. A key given
twice in one mapping is an error (plain PyYAML keeps the last one silently).
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from sync.errors import MappingError
from sync.mapping import MappingSpec

MAX_LISTED = 10  # errors listed in one message


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core-schema booleans and integers."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers
            if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:int")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool",
                              re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))
_Loader.add_implicit_resolver("tag:yaml.org,2002:int",
                              re.compile(r"^(?:[-+]?[0-9]+|0x[0-9a-fA-F]+|0o[0-7]+)$"),
                              list("-+0123456789"))


def _construct_int(loader: yaml.SafeLoader, node: yaml.Node) -> int:
    text = str(loader.construct_scalar(node))  # type: ignore[arg-type]
    if text.startswith(("0x", "0o")):
        return int(text, 0)
    return int(text, 10)


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def _duplicate_key(node: yaml.Node | None, file: str) -> None:
    """Refuse a key given twice in one mapping (naming it, at the second one's line)."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            name = getattr(key, "value", None)
            if isinstance(name, str):
                if name in seen:
                    raise MappingError(f"key {name!r} is given twice", file=file,
                                       line=key.start_mark.line + 1, key=name)
                seen.add(name)
            _duplicate_key(value, file)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _duplicate_key(item, file)


def _line_of(node: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """Walk the composed YAML tree along an error location to the deepest node's line."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            pair = next(((k, v) for k, v in node.value if getattr(k, "value", None) == part),
                        None)
            if pair is None:
                break
            line = pair[0].start_mark.line + 1
            node = pair[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                break
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _key_name(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _problems(exc: ValidationError) -> list[tuple[tuple[int | str, ...], str]]:
    """(location, message) of every error, the unknown keys (likeliest typos) first."""
    out = []
    errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
    for err in errors:
        loc: tuple[int | str, ...] = tuple(err["loc"])
        ctx_key = (err.get("ctx") or {}).get("key")
        if isinstance(ctx_key, str):
            loc += tuple(int(p) if p.isdigit() else p for p in ctx_key.split("."))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = f"unknown key {loc[-1]!r}"
        elif err["type"] == "missing":
            msg = f"the key {loc[-1]!r} is required"
        out.append((loc, msg))
    return out


def parse_mapping(text: str, file: str = "<mapping>") -> MappingSpec:
    try:
        root = yaml.compose(text, Loader=_Loader)
        _duplicate_key(root, file)
        data: Any = yaml.load(text, Loader=_Loader)  # a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        msg = f"YAML syntax error: {exc.problem or exc}"
        if exc.context and exc.context_mark and exc.context_mark is not mark:
            msg += f" ({exc.context} started at line {exc.context_mark.line + 1})"
        raise MappingError(msg, file=file, line=line) from None
    except yaml.YAMLError as exc:
        raise MappingError(f"YAML error: {exc}", file=file) from None
    if data is None:
        # the packaged copy: a pip-installed crm-sync has no mappings/ folder of the repository
        default = resources.files("sync") / "mappings" / "default.yaml"
        raise MappingError(f"the mapping file is empty: start from the default mapping, "
                           f"{default}", file=file, line=1)
    if not isinstance(data, dict):
        raise MappingError("the top level must be a mapping of keys (table, fields, ...)",
                           file=file, line=1)
    try:
        return MappingSpec.model_validate(data)
    except ValidationError as exc:
        problems = _problems(exc)
        (loc, msg), rest = problems[0], problems[1:]
        lines = [f"{file}:{_line_of(root, lc) or '?'}: {m} (key: {_key_name(lc)})"
                 for lc, m in rest[:MAX_LISTED - 1]]
        if len(rest) > MAX_LISTED - 1:
            lines.append(f"... and {len(rest) - MAX_LISTED + 1} more")
        if lines:
            msg += f" (and {len(rest)} more problem{'s' if len(rest) > 1 else ''})"
        error = MappingError(msg, file=file, line=_line_of(root, loc), key=_key_name(loc))
        if lines:
            error.args = ("\n".join([str(error), *lines]),)
        raise error from None


def locate(path: Path, loc: tuple[int | str, ...]) -> int | None:
    """The line of a key in a mapping file (None if it cannot be read or has no such key)."""
    try:
        return _line_of(yaml.compose(path.read_text(encoding="utf-8"), Loader=_Loader), loc)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None


def load_mapping(path: Path) -> MappingSpec:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise MappingError(f"cannot read the mapping file: {exc.strerror}",
                           file=str(path)) from None
    except UnicodeDecodeError as exc:
        raise MappingError(f"the mapping file is not UTF-8 ({exc.reason})",
                           file=str(path)) from None
    return parse_mapping(text, str(path))
