"""Dataclass configs as command-line flags: each field is a ``--flag`` whose help is the field's docstring.

Types understood: int, float, str, bool (``--flag/--no-flag``), Literal[...] (choices), and tuples of
int/float/str written comma-separated. A float tuple also takes ``LO:HI:N``: N log-spaced values from
LO to HI inclusive (or evenly spaced where the field says ``metadata={"spacing": "linear"}``).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import math
import re
import sys
import textwrap
import typing
from typing import Any, Literal


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr and exit code 2, and which reads values
    such as -1e-3 or -1.5:0:7 as values (argparse's default only knows -1 and -1.5)."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self._negative_number_matcher = re.compile(r"^-\.?\d")  # no flag of ours starts with a digit

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings: the string literal right after each annotated field in the class body."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def parse_range(text: str, kind: type, spacing: str = "log") -> tuple:
    """'a,b,c' -> (a, b, c); for floats also 'LO:HI:N' -> N values from LO to HI (log or linear spacing)."""
    text = text.strip()
    if kind is float and ":" in text:
        parts = text.split(":")
        if len(parts) != 3:
            raise ValueError(f"malformed range {text!r}: write LO:HI:N, e.g. 1e-4:1e-1:8")
        try:
            lo, hi, n = float(parts[0]), float(parts[1]), int(parts[2])
        except ValueError:
            raise ValueError(
                f"malformed range {text!r}: LO and HI must be numbers and N an integer, e.g. 1e-4:1e-1:8"
            ) from None
        if n < 1 or (n > 1 and not hi > lo):
            raise ValueError(f"malformed range {text!r}: need N >= 1 and HI > LO")
        if spacing == "log":
            if lo <= 0:
                raise ValueError(f"malformed range {text!r}: a log-spaced range needs LO > 0")
            return tuple(lo * (hi / lo) ** (i / (n - 1)) for i in range(n)) if n > 1 else (lo,)
        return tuple(lo + (hi - lo) * i / (n - 1) for i in range(n)) if n > 1 else (lo,)
    items = [t.strip() for t in text.split(",") if t.strip()]
    try:
        values = tuple(kind(t) for t in items)
    except ValueError:
        raise ValueError(f"malformed list {text!r}: expected comma-separated {kind.__name__} values") from None
    if kind is float and any(not math.isfinite(v) for v in values):
        raise ValueError(f"malformed list {text!r}: values must be finite numbers")
    return values


def add_dataclass(parser: argparse.ArgumentParser, cls: type, exclude: tuple[str, ...] = ()) -> None:
    """One flag per field (but ``exclude``); defaults are not set on the parser so that only given flags are reported."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        if f.name in exclude:
            continue
        tp = hints[f.name]
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        help_ = docs.get(f.name, "")
        if tp is bool:
            parser.add_argument(
                flag,
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=_with_default(help_, "on" if default else "off"),
            )
            continue
        kw: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS}
        origin = typing.get_origin(tp)
        if origin is Literal:
            kw["choices"] = typing.get_args(tp)
            shown = default
        elif origin is tuple:
            elem = typing.get_args(tp)[0]
            kw["type"] = _tuple_type(elem, f.metadata.get("spacing", "log"))
            kw["metavar"] = "LIST" if elem is not float else "LIST|LO:HI:N"
            shown = ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in default)
        else:
            kw["type"] = tp
            shown = default
        parser.add_argument(flag, help=_with_default(help_, shown), **kw)


def _with_default(help_: str, shown) -> str:
    """The help text with its default, unless the text already says what the default is (or it is empty)."""
    if "(default" in help_ or shown in ("", None):
        return help_
    return f"{help_} (default: {shown})"


def _tuple_type(elem: type, spacing: str):
    def convert(text: str) -> tuple:
        try:
            return parse_range(text, elem, spacing)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = f"list of {elem.__name__}"
    return convert


def given(namespace: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields of ``cls`` that were given on the command line."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in vars(namespace).items() if k in names}


def fail(prog: str, message: str) -> typing.NoReturn:
    print(f"{prog}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def name_the_inits(parser: argparse.ArgumentParser, *, full: bool = False) -> None:
    """Let --init / --inits say which schemes exist (the registry, so a registered scheme shows up too), and where
    ``full`` (fine-tunes), that 'full' trains every weight."""
    from . import inits

    for action in parser._actions:
        if action.dest in ("init", "inits"):
            action.help = f"{action.help}; one of: {', '.join(inits.names())}" + (
                ", or full (no adapter)" if full else ""
            )
