"""Reference pages generated from the code, so they cannot drift from it: every config key
(from the dataclasses of :mod:`rfcn.config` and their attribute docstrings) and every
``rfcn`` subcommand and flag (from the argparse parser of :mod:`rfcn.cli`).

An attribute docstring is the string literal on the line after a field::

    k: int = 7
    \"\"\"k x k position-sensitive bins (paper §2).\"\"\"

The documentation build (``docs/hooks.py``) calls :func:`config_reference` and
:func:`cli_reference`; a field without a docstring fails it, and a test.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import json
import typing
from pathlib import Path
from typing import Any

from rfcn import config
from rfcn.cli import build_parser

SECTIONS = {
    "model": config.ModelConfig,
    "data": config.DataConfig,
    "train": config.TrainConfig,
    "eval": config.EvalConfig,
}


def attribute_docstrings(cls: type) -> dict[str, str]:
    """``{field: docstring}`` of a class's annotated attributes, read from its source."""
    (node,) = ast.parse(inspect.getsource(cls)).body
    assert isinstance(node, ast.ClassDef)
    docs: dict[str, str] = {}
    for statement, following in zip(node.body, node.body[1:], strict=False):
        if (
            isinstance(statement, ast.AnnAssign)
            and isinstance(statement.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[statement.target.id] = inspect.cleandoc(following.value.value)
    return docs


def undocumented_fields() -> list[str]:
    """``section.key`` of every config field without a docstring (top-level keys bare)."""
    missing = []
    for prefix, cls in [("", config.Config), *((f"{n}.", c) for n, c in SECTIONS.items())]:
        docs = attribute_docstrings(cls)
        missing += [f"{prefix}{f.name}" for f in dataclasses.fields(cls) if not docs.get(f.name)]
    return missing


def _type_name(hint: Any) -> str:
    """``int``, ``tuple[int, ...]``, ``str or None`` (a "|" would split the table's cell)."""
    text = str(hint) if not isinstance(hint, type) else hint.__name__
    return f"`{text.replace('typing.', '')}`".replace(" | ", "` or `")


def _default(item: dataclasses.Field[Any]) -> str:
    if item.default is not dataclasses.MISSING:
        value = item.default
    elif item.default_factory is not dataclasses.MISSING:
        value = item.default_factory()
    else:
        return ""
    if dataclasses.is_dataclass(value):
        return ""
    return f"`{json.dumps(list(value) if isinstance(value, tuple) else value, ensure_ascii=False)}`"


def _cell(text: str) -> str:
    """A docstring in one Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def config_reference() -> str:
    """Markdown: a table a config section, every key with its type, default and meaning.

    Raises:
        ValueError: a field has no docstring (named).
    """
    missing = undocumented_fields()
    if missing:
        raise ValueError(f"config fields without a docstring: {', '.join(missing)}")
    top = attribute_docstrings(config.Config)
    lines = [f"- `output_dir` (`str`, default `{config.Config().output_dir}`): {top['output_dir']}"]
    for name, cls in SECTIONS.items():
        docs, hints = attribute_docstrings(cls), typing.get_type_hints(cls)
        lines += [
            "",
            f"## `{name}`",
            "",
            inspect.cleandoc(cls.__doc__ or ""),
            "",
            "| key | type | default | meaning |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| `{name}.{item.name}` | {_cell(_type_name(hints[item.name]))} | {_default(item)} "
            f"| {_cell(docs[item.name])} |"
            for item in dataclasses.fields(cls)
        ]
    return "\n".join(lines)


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _flag_help(action: argparse.Action) -> str:
    text = action.help or ""
    if "%(" in text:
        text = text % {**vars(action), "prog": ""}
    if action.default not in (None, argparse.SUPPRESS, False, [], True) and not action.required:
        text += f" (default: `{action.default}`)"
    if action.required:
        text += " (required)"
    return _cell(text)


def _flags(action: argparse.Action) -> str:
    names = ", ".join(action.option_strings) or action.dest
    metavar = action.metavar or (action.dest.upper() if action.nargs != 0 else "")
    if action.nargs == 0 or not action.option_strings:
        return f"`{names}`"
    suffix = " ..." if action.nargs in ("+", "*") else ""
    return f"`{names} {metavar}{suffix}`"


def cli_reference() -> str:
    """Markdown: every ``rfcn`` subcommand with its usage, description and flags."""
    parser = build_parser()
    lines = ["```text", parser.format_usage().strip(), "```"]
    for name, sub in _subcommands(parser).items():
        lines += ["", f"## `rfcn {name}`", "", sub.description or "", "", "```text"]
        lines += [sub.format_usage().strip(), "```", "", "| flag | meaning |", "|---|---|"]
        lines += [
            f"| {_flags(action)} | {_flag_help(action)} |"
            for action in sub._actions
            if not isinstance(action, argparse._HelpAction)
        ]
    return "\n".join(lines)


def _message_text(node: ast.expr) -> str:
    """A message argument as text, each interpolated expression shown as ``{expression}``."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(
            part.value if isinstance(part, ast.Constant) else f"{{{ast.unparse(part.value)}}}"
            for part in node.values
            if isinstance(part, (ast.Constant, ast.FormattedValue))
        )
    return f"{{{ast.unparse(node)}}}"


def _is_user_error_message(node: ast.Call, subclass_bodies: set[int]) -> bool:
    """``UserError(source, problem)``, or a UserError subclass's ``super().__init__(source,
    problem)`` (a node inside one of ``subclass_bodies``, by ``id``) that words its own problem
    (a string, not another error's ``error.problem`` passed on)."""
    if len(node.args) != 2:
        return False
    if isinstance(node.func, ast.Name):
        return node.func.id == "UserError"
    return (
        isinstance(node.args[1], (ast.Constant, ast.JoinedStr))
        and id(node) in subclass_bodies
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "__init__"
        and isinstance(node.func.value, ast.Call)
        and isinstance(node.func.value.func, ast.Name)
        and node.func.value.func.id == "super"
    )


def error_messages() -> dict[str, list[tuple[str, str]]]:
    """``{module: [(source, problem), ...]}``: every ``UserError(source, problem)`` the package
    raises, and every message a subclass of it builds, read from its source; ``{...}`` marks
    what the message fills in."""
    package = Path(inspect.getfile(config)).parent
    found: dict[str, list[tuple[str, str]]] = {}
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        module = ".".join(path.relative_to(package.parent).with_suffix("").parts)
        subclass_bodies = {
            id(inner)
            for node in ast.walk(tree)
            if isinstance(node, ast.ClassDef)
            and any(isinstance(base, ast.Name) and base.id == "UserError" for base in node.bases)
            for inner in ast.walk(node)
        }
        for node in sorted(
            (node for node in ast.walk(tree) if isinstance(node, ast.Call)),
            key=lambda node: node.lineno,
        ):
            if _is_user_error_message(node, subclass_bodies):
                entry = (_message_text(node.args[0]), _message_text(node.args[1]))
                if entry not in found.setdefault(module, []):
                    found[module].append(entry)
    return found


def error_reference() -> str:
    """Markdown: every user-facing error message, by the module that raises it."""
    lines: list[str] = []
    for module, messages in error_messages().items():
        lines += ["", f"### `{module}`", "", "| file, key or flag | problem |", "|---|---|"]
        lines += [f"| {_cell(f'`{s}`')} | {_cell(p)} |" for s, p in messages]
    return "\n".join(lines)
