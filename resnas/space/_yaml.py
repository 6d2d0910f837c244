"""Safe YAML loading that remembers the line of every key, so errors can name it.

A spec may come from anyone (a colleague, a shared database), so loading is bounded:
the text's size, its nesting depth, and the nodes its aliases expand to each have a
limit, checked before anything is built from the text. Only the JSON types are
accepted (no ``!!set``, ``!!binary``, timestamps), so a spec means the same thing,
and hashes the same, on every run.
"""

from __future__ import annotations

from typing import Any

import yaml

from resnas.errors import SpecError

Path = tuple[str | int, ...]

MAX_BYTES = 1_000_000  # a spec is a page of YAML; a megabyte is far beyond any real one
MAX_DEPTH = 32  # the deepest real spec nests about 6 levels
MAX_NODES = 100_000  # nodes after alias expansion (a "billion laughs" expands to 10**9)

# libyaml when it is installed (100x faster, its own nesting limit); the pure-Python one otherwise.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_TAG = "tag:yaml.org,2002:"
_JSON_TAGS = {_TAG + t for t in ("str", "int", "float", "bool", "null", "seq", "map")}


def format_path(path: Path) -> str:
    """``("network", "stages", 1, "depth")`` -> ``network.stages[1].depth``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _key(node: yaml.Node) -> str | int:
    """A mapping key as pydantic will name it: an integer key stays an integer."""
    if isinstance(node, yaml.ScalarNode) and node.tag == _TAG + "int":
        try:
            return int(node.value, 0)
        except ValueError:
            return node.value
    return node.value if isinstance(node, yaml.ScalarNode) else str(node.value)


def _check(root: yaml.Node, source: str) -> dict[Path, int]:
    """Walk the node graph once (iteratively), enforcing the limits; return path -> line."""

    def fail(message: str, node: yaml.Node, path: Path) -> SpecError:
        return SpecError(message, format_path(path), node.start_mark.line + 1, source)

    lines: dict[Path, int] = {}
    seen = 0
    # (node, path, ids of the nodes above it): the ancestors reveal a recursive alias.
    stack: list[tuple[yaml.Node, Path, frozenset[int]]] = [(root, (), frozenset())]
    while stack:
        node, path, above = stack.pop()
        seen += 1
        if seen > MAX_NODES:
            raise fail(
                f"the spec expands to more than {MAX_NODES:,} YAML nodes (aliases that repeat aliases?)", node, ()
            )
        if id(node) in above:
            raise fail("a YAML alias refers to a node that contains it (a recursive alias)", node, path)
        if len(path) > MAX_DEPTH:
            raise fail(f"nesting deeper than {MAX_DEPTH} levels", node, path[:MAX_DEPTH])
        if node.tag not in _JSON_TAGS and node.tag != _TAG + "merge":
            tag = node.tag.replace(_TAG, "!!")
            raise fail(
                f"YAML type {tag} is not supported: a spec holds strings, numbers, lists and mappings", node, path
            )
        lines.setdefault(path, node.start_mark.line + 1)
        inner = above | {id(node)}
        if isinstance(node, yaml.MappingNode):
            first: dict[Any, int] = {}
            for key_node, value_node in node.value:
                key = _key(key_node)
                line = key_node.start_mark.line + 1
                if key_node.tag not in (_TAG + "str", _TAG + "merge"):
                    raise fail(f"key {key!r} is not a name (keys are words, such as 'stages')", key_node, path)
                if key != "<<" and key in first:
                    raise fail(f"key {key!r} appears twice, on lines {first[key]} and {line}", key_node, path + (key,))
                first[key] = line
                lines[path + (key,)] = line
                stack.append((value_node, path + (key,), inner))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                stack.append((item, path + (i,), inner))
    return lines


def load_yaml(text: str, source: str = "spec") -> tuple[Any, dict[Path, int]]:
    """Parse YAML with the safe loader only; return the data and a path -> line map.

    Tags such as ``!!python/object`` are refused by the safe loader before anything is
    constructed, so a hostile spec has no side effect.
    """
    if len(text) > MAX_BYTES:
        raise SpecError(f"the spec is {len(text):,} characters; a spec is at most {MAX_BYTES:,}", source=source)
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        lines = _check(node, source) if node is not None else {}
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = (exc.problem or exc.context or "invalid YAML").strip()
        raise SpecError(f"invalid YAML: {problem}", line=line, source=source) from None
    except yaml.YAMLError as exc:
        raise SpecError(f"invalid YAML: {exc}", source=source) from None
    except RecursionError:  # the pure-Python composer recurses per nesting level
        raise SpecError(f"invalid YAML: nesting deeper than {MAX_DEPTH} levels", source=source) from None
    finally:
        loader.dispose()
    return data, lines


def line_of(lines: dict[Path, int], path: Path) -> int | None:
    """The line of ``path``, or of its nearest ancestor that the YAML has."""
    for end in range(len(path), -1, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    return None
