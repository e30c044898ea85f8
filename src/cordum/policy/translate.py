"""Pydantic's validation errors as policy issues: positioned, with the rule and a hint."""

from __future__ import annotations

import types
import typing
from collections.abc import Sequence
from typing import Any

from pydantic import AliasChoices, BaseModel, ValidationError

from cordum.policy.errors import PolicyIssue, allowed_hint, did_you_mean
from cordum.policy.raw import RULE_LISTS, walk
from cordum.policy.source import ParsedYaml


def translate_errors(
    exc: ValidationError,
    parsed: ParsedYaml | None,
    root: type[BaseModel],
    name: str = "<input>",
) -> list[PolicyIssue]:
    """Pydantic errors as policy issues: positioned (when ``parsed`` is given), with a hint."""
    issues = []
    for error in exc.errors(include_url=False):
        loc = tuple(part for part in error["loc"] if part != "[key]")
        message, hint = _describe(error, loc, root)
        line, column = parsed.position(loc) if parsed is not None else (None, None)
        rule_id, field_path = _subject(parsed.data if parsed is not None else None, loc)
        issues.append(
            PolicyIssue(
                code=_code(error),
                message=message,
                file=parsed.name if parsed is not None else name,
                line=line,
                column=column,
                rule_id=rule_id,
                field=field_path,
                hint=hint,
            )
        )
    return sorted(issues, key=lambda issue: (issue.line or 0, issue.column or 0))


_PLAIN_MESSAGES = {
    "string_type": "expected text",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "int_type": "expected a whole number",
    "int_parsing": "expected a whole number",
    "int_from_float": "expected a whole number",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "list_type": "expected a list",
    "tuple_type": "expected a list",
    "dict_type": "expected a mapping (key: value)",
    "model_type": "expected a mapping (key: value)",
    "model_attributes_type": "expected a mapping (key: value)",
    "string_too_short": "must not be empty",
}


_CODES = {
    "extra_forbidden": "unknown_field",
    "missing": "missing_field",
    "greater_than": "out_of_range",
    "greater_than_equal": "out_of_range",
    "less_than_equal": "out_of_range",
    "string_too_short": "empty_value",
}


def _code(error: Any) -> str:
    if "message" in (error.get("ctx") or {}):
        return str(error["type"])
    return _CODES.get(str(error["type"]), "wrong_type")


def _describe(
    error: Any, loc: tuple[str | int, ...], root: type[BaseModel]
) -> tuple[str, str | None]:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    got = error.get("input")
    if "message" in ctx:
        return str(ctx["message"]), ctx.get("hint")
    if kind == "extra_forbidden":
        name = str(loc[-1])
        allowed = _allowed_fields(root, loc[:-1])
        return f"unknown field `{name}`", allowed_hint(allowed, did_you_mean(name, allowed))
    if kind == "missing":
        return f"missing required field `{loc[-1]}`", None
    if kind in ("greater_than", "greater_than_equal", "less_than_equal"):
        bound = ctx.get("gt", ctx.get("ge", ctx.get("le")))
        relation = {"greater_than": ">", "greater_than_equal": ">=", "less_than_equal": "<="}[kind]
        return f"must be {relation} {bound}, got {got!r}", None
    if kind in _PLAIN_MESSAGES:
        hint = None
        if kind == "string_type" and isinstance(got, int | float) and not isinstance(got, bool):
            hint = f"quote it to use it as text: '{got}'"
        return f"{_PLAIN_MESSAGES[kind]}, got {describe_value(got)}", hint
    return str(error["msg"]), None


def _subject(raw: Any, loc: tuple[str | int, ...]) -> tuple[str | None, str | None]:
    """(rule id, field path relative to the rule) for an error location."""
    if len(loc) >= 2 and loc[0] in RULE_LISTS and isinstance(loc[1], int):
        rule = walk(raw, loc[:2])
        rule_id = None
        if isinstance(rule, dict):
            candidate = rule.get("id", rule.get("name"))
            rule_id = str(candidate) if candidate is not None else None
        prefix = "" if rule_id else f"{loc[0]}[{loc[1]}]"
        rest = _dotted(loc[2:])
        return rule_id, ".".join(part for part in (prefix, rest) if part) or None
    return None, _dotted(loc) or None


def _dotted(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _allowed_fields(root: type[BaseModel], loc: Sequence[str | int]) -> tuple[str, ...]:
    model = _model_at(root, loc)
    if model is None:
        return ()
    return tuple(model.model_fields)


def _model_at(root: type[BaseModel], loc: Sequence[str | int]) -> type[BaseModel] | None:
    annotation: Any = root
    for part in loc:
        annotation = _unwrap(annotation)
        if isinstance(part, int):
            args = typing.get_args(annotation)
            annotation = args[0] if args else None
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            annotation = _field_annotation(annotation, part)
        elif typing.get_origin(annotation) is dict:
            annotation = typing.get_args(annotation)[1]
        else:
            return None
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _field_annotation(model: type[BaseModel], name: str) -> Any:
    for field_name, info in model.model_fields.items():
        aliases: tuple[str, ...] = (field_name,)
        if isinstance(info.validation_alias, AliasChoices):
            aliases = tuple(str(choice) for choice in info.validation_alias.choices)
        if name in aliases or name == field_name:
            return info.annotation
    return None


def _unwrap(annotation: Any) -> Any:
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def describe_value(value: Any) -> str:
    """A value as a user would name it: \"a list\", \"text ('x')\", \"a number (3)\"."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int | float):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"text ({value!r})"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__
