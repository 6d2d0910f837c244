"""Searchable values of the spec language: ``{int: [lo, hi]}``, ``{float: [...]}``, ``{choice: [...]}``.

A field declared with :func:`searchable` accepts either a fixed scalar or one of these
forms; the validator produces a plain scalar, an :class:`IntRange`, a :class:`FloatRange`
or a :class:`Choice`, and its JSON Schema says the same so editors can check specs.
"""

from __future__ import annotations

import difflib
import math
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import PlainValidator, WithJsonSchema


@dataclass(frozen=True)
class IntRange:
    low: int
    high: int
    step: int = 1
    log: bool = False

    def values(self) -> list[int]:
        return list(range(self.low, self.high + 1, self.step))


@dataclass(frozen=True)
class FloatRange:
    low: float
    high: float
    log: bool = False
    step: float | None = None


@dataclass(frozen=True)
class Choice:
    options: tuple

    def values(self) -> list:
        return list(self.options)


Searchable = IntRange | FloatRange | Choice


def is_searchable(value: Any) -> bool:
    return isinstance(value, IntRange | FloatRange | Choice)


def discrete_values(value: Any) -> list:
    """Every value a fixed, int-range or choice field can take (not for float ranges)."""
    if isinstance(value, IntRange | Choice):
        return value.values()
    if isinstance(value, FloatRange):
        raise TypeError("a float range has no finite list of values")
    return [value]


def high_value(value: Any) -> Any:
    if isinstance(value, IntRange | FloatRange):
        return value.high
    if isinstance(value, Choice):
        return max(value.options)
    return value


def did_you_mean(value: Any, options: Iterable[Any]) -> str:
    """``"; did you mean 'x'?"`` when ``value`` is close to one of ``options``, else ``""``."""
    names = {str(o): o for o in options}
    text = unicodedata.normalize("NFKD", str(value)).lower()
    close = difflib.get_close_matches(text, list(names), n=1, cutoff=0.6)
    if not close and len(text) >= 3:  # an abbreviation: max for maximize
        close = [n for n in names if n.lower().startswith(text)][:1]
    return f"; did you mean {names[close[0]]!r}?" if close else ""


def _scalar(kind: str, value: Any, allowed: tuple | None, minimum: float | None, maximum: float | None = None) -> Any:
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, got {value!r}")
    elif kind == "float":
        if isinstance(value, str) and _looks_numeric(value):
            # YAML 1.1 reads 1e-4 and 1.0e6 as strings; 1.0e-4 and 1.0e+6 are numbers.
            mantissa, exponent = f"{float(value):e}".split("e")
            mantissa = mantissa.rstrip("0") + ("0" if mantissa.rstrip("0").endswith(".") else "")
            raise ValueError(
                f"expected a number, got the string {value!r}: YAML reads a number in exponent form "
                f"only with a decimal point and a signed exponent, as {mantissa}e{int(exponent):+d}"
            )
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"expected a finite number, got {value!r}")
    elif kind == "str":
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {value!r}")
    if allowed is not None and value not in allowed:
        raise ValueError(f"{value!r} is not one of {', '.join(map(str, allowed))}{did_you_mean(value, allowed)}")
    if minimum is not None and value < minimum:
        raise ValueError(f"must be at least {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"must be at most {maximum:,}, got {value:,}")
    return value


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _bounds(kind: str, raw: Any, minimum: float | None, maximum: float | None) -> tuple:
    if not isinstance(raw, list) or len(raw) != 2:
        raise ValueError(f"{{{kind}: ...}} takes a list [low, high], got {raw!r}")
    low, high = (_scalar(kind, x, None, minimum, maximum) for x in raw)
    if low > high:
        raise ValueError(f"empty range: low {low} is greater than high {high}")
    return low, high


def _parse(kind: str, value: Any, allowed: tuple | None, minimum: float | None, maximum: float | None) -> Any:
    if not isinstance(value, dict):
        return _scalar(kind, value, allowed, minimum, maximum)
    forms = [k for k in ("int", "float", "choice") if k in value]
    if len(forms) != 1:
        raise ValueError(
            f"a searchable value is one of {{int: [lo, hi]}}, {{float: [lo, hi]}} or "
            f"{{choice: [...]}}, got keys {sorted(map(str, value))}"
            + (did_you_mean(next(iter(value)), ("int", "float", "choice")) if len(value) == 1 else "")
        )
    form = forms[0]
    if form == "choice":
        unknown = set(value) - {"choice"}
        if unknown:
            raise ValueError(f"unknown key {sorted(unknown)[0]!r} beside 'choice'")
        options = value["choice"]
        if not isinstance(options, list) or not options:
            raise ValueError("'choice' takes a non-empty list")
        parsed = tuple(_scalar(kind, o, allowed, minimum, maximum) for o in options)
        if len(set(parsed)) != len(parsed):
            raise ValueError(f"'choice' lists a value twice: {list(parsed)}")
        return Choice(parsed)
    if form != kind:
        raise ValueError(f"this field takes {{{kind}: [lo, hi]}} or {{choice: [...]}}, not {{{form}: ...}}")
    if allowed is not None:
        raise ValueError(f"this field takes a value or {{choice: [...]}} of {', '.join(map(str, allowed))}")
    unknown = set(value) - {form, "step", "log"}
    if unknown:
        raise ValueError(f"unknown key {sorted(unknown)[0]!r} in {{{form}: ...}}")
    low, high = _bounds(kind, value[form], minimum, maximum)
    log = value.get("log", False)
    if not isinstance(log, bool):
        raise ValueError(f"'log' takes true or false, got {log!r}")
    if log and low <= 0:
        raise ValueError(f"a log range needs low > 0, got {low}")
    if kind == "int":
        step = value.get("step", 1)
        if isinstance(step, bool) or not isinstance(step, int) or step < 1:
            raise ValueError(f"'step' takes a positive integer, got {step!r}")
        if log and step != 1:
            raise ValueError("'log' and 'step' cannot be combined")
        return IntRange(low, high, step, log)
    step = value.get("step")
    if step is not None:
        step = _scalar("float", step, None, None)
        if step <= 0 or log:
            raise ValueError("'step' must be positive and cannot be combined with 'log'")
    return FloatRange(low, high, log, step)


def _schema(kind: str, allowed: tuple | None, minimum: float | None, maximum: float | None) -> dict:
    scalar: dict = {"integer": {"type": "integer"}, "float": {"type": "number"}, "str": {"type": "string"}}[
        "integer" if kind == "int" else kind
    ]
    scalar = dict(scalar)
    if allowed is not None:
        scalar = {"enum": list(allowed)}
    else:
        if minimum is not None:
            scalar["minimum"] = minimum
        if maximum is not None:
            scalar["maximum"] = maximum
    choice = {
        "type": "object",
        "properties": {
            "choice": {
                "type": "array",
                "items": scalar,
                "minItems": 1,
                "uniqueItems": True,
                "description": "Search over these values.",
            }
        },
        "required": ["choice"],
        "additionalProperties": False,
    }
    any_of = [scalar, choice]
    if allowed is None and kind in ("int", "float"):
        bound = {
            "type": "array",
            "items": scalar,
            "minItems": 2,
            "maxItems": 2,
            "description": "Search [low, high], both included.",
        }
        log = {"type": "boolean", "description": "Sample on a log scale (low > 0)."}
        props: dict = {kind: bound, "log": log}
        props["step"] = (
            {"type": "integer", "minimum": 1, "description": "Only every step-th value from low."}
            if kind == "int"
            else {"type": "number", "exclusiveMinimum": 0, "description": "Only multiples of step from low."}
        )
        any_of.append({"type": "object", "properties": props, "required": [kind], "additionalProperties": False})
    return {"anyOf": any_of}


def searchable(
    kind: str, allowed: tuple | None = None, minimum: float | None = None, maximum: float | None = None
) -> Any:
    """An annotated type: a fixed ``kind`` scalar, or a searchable form of it.

    ``maximum`` keeps a range's list of values (and the networks it makes) finite and sane.
    """
    return Annotated[
        Any,
        PlainValidator(lambda v: _parse(kind, v, allowed, minimum, maximum)),
        WithJsonSchema(_schema(kind, allowed, minimum, maximum)),
    ]
