"""Load protocol YAML into a validated :class:`~workbench.protocols.schema.Protocol`.

Errors name the YAML line: the text is composed into a node tree first (which
keeps every node's position), duplicate keys are rejected there, and each
pydantic error location is walked down that tree to the line it refers to.

Protocols come from users, so the text is bounded before it is composed: at
most :data:`MAX_PROTOCOL_BYTES` bytes, nesting at most :data:`MAX_DEPTH` deep,
at most :data:`MAX_ALIASES` aliases and :data:`MAX_NODES` nodes once aliases
are expanded (a few hundred bytes of nested aliases can otherwise stand for
billions of nodes). The limits are checked on the parser's event stream, which
uses neither recursion nor memory proportional to the expansion.
"""

from __future__ import annotations

import difflib
import hashlib
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from workbench.errors import ProtocolError
from workbench.protocols.schema import LocatedValueError, Protocol

__all__ = [
    "MAX_ALIASES",
    "MAX_DEPTH",
    "MAX_NODES",
    "MAX_PROTOCOL_BYTES",
    "load_protocol",
    "diff_protocols",
    "protocol_sha256",
]

_MAX_ERRORS = 20

#: Largest protocol file accepted (the shipped ones are a few kilobytes).
MAX_PROTOCOL_BYTES = 1 << 20
#: Deepest nesting of mappings and lists accepted.
MAX_DEPTH = 32
#: Most aliases (``*name``) accepted in one protocol.
MAX_ALIASES = 64
#: Most nodes accepted with every alias expanded.
MAX_NODES = 100_000


def _check_limits(text: str, name: str) -> None:
    """Refuse oversized, too deeply nested or alias-exploding YAML before composing it."""
    sizes: dict[str, int] = {}
    stack: list[list[Any]] = [[0, None]]  # [nodes so far, anchor] per open collection
    aliases = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            line = event.start_mark.line + 1 if event.start_mark else 0
            if isinstance(event, yaml.CollectionStartEvent):
                stack.append([1, event.anchor])
                if len(stack) - 1 > MAX_DEPTH:
                    raise ProtocolError(
                        f"{name}: line {line}: nesting deeper than {MAX_DEPTH} levels; expected "
                        "a protocol of a few levels of mappings and lists."
                    )
                continue
            if isinstance(event, yaml.CollectionEndEvent):
                count, anchor = stack.pop()
                if anchor:
                    sizes[anchor] = count
                stack[-1][0] += count
            elif isinstance(event, yaml.ScalarEvent):
                if event.anchor:
                    sizes[event.anchor] = 1
                stack[-1][0] += 1
            elif isinstance(event, yaml.AliasEvent):
                aliases += 1
                if aliases > MAX_ALIASES:
                    raise ProtocolError(
                        f"{name}: line {line}: more than {MAX_ALIASES} aliases (*name); write "
                        "the values out instead."
                    )
                stack[-1][0] += sizes.get(str(event.anchor), 1)
            else:
                continue
            if sum(frame[0] for frame in stack) > MAX_NODES:
                raise ProtocolError(
                    f"{name}: line {line}: the protocol expands to more than {MAX_NODES:,} "
                    "values (aliases repeat whole subtrees); expected a protocol of a few "
                    "hundred values."
                )
    except yaml.YAMLError:
        return  # composing reports the syntax error with its line


def protocol_sha256(data: bytes | str) -> str:
    """Return the SHA-256 of a protocol's exact bytes (text is encoded as UTF-8)."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return hashlib.sha256(raw).hexdigest()


def _read_source(path_or_text: str | Path | bytes) -> tuple[bytes, str]:
    """Return (raw bytes, name for messages)."""
    if isinstance(path_or_text, bytes):
        return _bounded(path_or_text, "<protocol>"), "<protocol>"
    if isinstance(path_or_text, Path):
        path = path_or_text
    elif "\n" not in path_or_text and (
        path_or_text.endswith((".yaml", ".yml")) or Path(path_or_text).is_file()
    ):
        path = Path(path_or_text)
    else:
        return _bounded(path_or_text.encode("utf-8"), "<protocol>"), "<protocol>"
    try:
        if path.stat().st_size > MAX_PROTOCOL_BYTES:
            _bounded(b"", str(path), size=path.stat().st_size)
        with path.open("rb") as handle:
            return _bounded(handle.read(MAX_PROTOCOL_BYTES + 1), str(path)), str(path)
    except OSError as exc:
        raise ProtocolError(
            f"Cannot read protocol file {path}: {exc.strerror or exc}. "
            "Pass an existing .yaml path or the YAML text itself."
        ) from None


def _bounded(raw: bytes, name: str, *, size: int | None = None) -> bytes:
    size = len(raw) if size is None else size
    if size > MAX_PROTOCOL_BYTES:
        raise ProtocolError(
            f"{name}: the protocol is {size:,} bytes; expected at most {MAX_PROTOCOL_BYTES:,} "
            "(a protocol is a few kilobytes of YAML)."
        )
    return raw


def load_protocol(path_or_text: str | Path | bytes) -> Protocol:
    """Load and validate a protocol.

    Parameters
    ----------
    path_or_text : str, Path or bytes
        A path to a ``.yaml`` file, or the YAML text (a ``str`` containing a
        newline, or ``bytes``).

    Returns
    -------
    Protocol
        The validated protocol; ``protocol.sha256`` is the SHA-256 of the
        exact bytes read and ``protocol.source_text`` the text.

    Raises
    ------
    ProtocolError
        If the file cannot be read, is larger than :data:`MAX_PROTOCOL_BYTES`,
        nests deeper than :data:`MAX_DEPTH`, holds more than :data:`MAX_ALIASES`
        aliases or expands to more than :data:`MAX_NODES` values, the YAML is
        malformed, a mapping repeats a key, or the content violates the schema.
        The message lists every problem with its line number, what was expected
        and what was found.

    Examples
    --------
    >>> p = load_protocol("validation_protocols/lesion-segmentation-v1.yaml")  # doctest: +SKIP
    >>> p.endpoints[0].criterion_text()  # doctest: +SKIP
    'lower bound of the 95% CI (bootstrap) of mean Dice >= 0.7'
    """
    raw, name = _read_source(path_or_text)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(
            f"{name}: protocol must be UTF-8 text; byte {exc.start} is not valid UTF-8."
        ) from None
    _check_limits(text, name)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown line"
        problem = exc.problem or exc.context or "invalid YAML"
        raise ProtocolError(f"{name}: YAML syntax error at {where}: {problem}.") from None
    except yaml.YAMLError as exc:
        raise ProtocolError(f"{name}: YAML syntax error: {exc}.") from None
    if root is None:
        raise ProtocolError(f"{name}: the protocol is empty; expected a YAML mapping.")
    if not isinstance(root, yaml.MappingNode):
        raise ProtocolError(
            f"{name}: line {root.start_mark.line + 1}: expected a YAML mapping at the top "
            f"level, found a {_node_kind(root)}."
        )
    _reject_duplicate_keys(root, name)
    data = yaml.SafeLoader(text).get_single_data()
    try:
        protocol = Protocol.model_validate(data)
    except ValidationError as exc:
        raise ProtocolError(_format_validation_error(exc, root, name)) from None
    protocol._sha256 = protocol_sha256(raw)
    protocol._source_text = text
    return protocol


def diff_protocols(
    old_text: str, new_text: str, *, old_name: str = "old", new_name: str = "new"
) -> str:
    """Unified diff of two protocol texts (empty string when identical).

    Parameters
    ----------
    old_text, new_text : str
        YAML texts of two versions.
    old_name, new_name : str
        Labels of the two sides in the diff header.

    Returns
    -------
    str
        The unified diff with three lines of context.
    """
    lines = difflib.unified_diff(
        old_text.splitlines(keepends=True),
        new_text.splitlines(keepends=True),
        fromfile=old_name,
        tofile=new_name,
    )
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


# -- YAML node helpers ---------------------------------------------------------------------


def _node_kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "mapping"
    if isinstance(node, yaml.SequenceNode):
        return "list"
    return f"scalar {node.value!r}"


def _reject_duplicate_keys(node: yaml.Node, name: str) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                line = key.start_mark.line + 1
                if key.value in seen:
                    raise ProtocolError(
                        f"{name}: line {line}: duplicate key {key.value!r} (first defined on "
                        f"line {seen[key.value]}); each key may appear once."
                    )
                seen[key.value] = line
            _reject_duplicate_keys(value, name)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _reject_duplicate_keys(item, name)


def _line_of(root: yaml.Node, loc: tuple[int | str, ...]) -> int:
    """Line (1-based) of the deepest node on ``loc``; keys point at the key's line."""
    node = root
    line = root.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                    line = key.start_mark.line + 1
                    node = value
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return line
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    if isinstance(node, yaml.ScalarNode):
        line = node.start_mark.line + 1
    return line


def _format_validation_error(exc: ValidationError, root: yaml.Node, name: str) -> str:
    problems: list[tuple[int, str]] = []
    for err in exc.errors(include_url=False):
        loc = tuple(p for p in err["loc"] if not _is_union_tag(p))
        original = (err.get("ctx") or {}).get("error")
        if isinstance(original, LocatedValueError):
            loc = loc + original.loc
        path = _dotted(loc)
        kind = err["type"]
        if kind == "extra_forbidden":
            msg = f"unknown key {loc[-1]!r}" if loc else "unknown key"
            parent = _dotted(loc[:-1]) or "the top level"
            msg += f" in {parent}; check the spelling or remove it"
        elif kind == "missing":
            msg = f"missing required field {path!r}"
        else:
            found = err.get("input")
            text = str(err["msg"]).removeprefix("Value error, ")
            msg = f"{path or 'protocol'}: {text}"
            if kind not in ("value_error",) and not isinstance(found, dict | list):
                msg += f" (found {found!r})"
        problems.append((_line_of(root, loc), msg))
    problems.sort(key=lambda p: p[0])
    shown = problems[:_MAX_ERRORS]
    lines = [f"  line {line}: {msg}" for line, msg in shown]
    if len(problems) > len(shown):
        lines.append(f"  ... and {len(problems) - len(shown)} more")
    count = len(problems)
    return f"{name}: protocol violates the schema ({count} problem{'s' * (count != 1)}):\n" + (
        "\n".join(lines)
    )


def _is_union_tag(part: int | str) -> bool:
    # Discriminated unions add the tag (e.g. 'metric_threshold') to the location.
    return isinstance(part, str) and part in (
        "metric_threshold",
        "decision_disagrees",
        "case_failed",
    )


def _dotted(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
