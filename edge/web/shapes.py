"""Request and response bodies as frozen dataclasses: strict parsing, JSON output, JSON Schema.

Theory of operation
-------------------
A route declares its body, query and response as dataclasses; this module turns untrusted
JSON into an instance (:func:`parse`), an instance into JSON (:func:`dump`) and a type into
the JSON Schema that the OpenAPI document shows (:func:`json_schema`), all from the one
declaration, so the document cannot drift from what the code accepts.

Parsing is strict: an object with a missing or unknown field, a value of the wrong type
(``true`` is not a number, ``1`` is not a string), a string longer than its field's
``max_length`` (metadata) or a list longer than ``max_items`` is a :class:`ShapeError` whose
message names the field. Supported field types: ``str``, ``int``, ``float``, ``bool``,
``X | None``, ``list[X]``, ``tuple[X, ...]``, ``dict[str, Any]`` (a free object), enums (their
values), ``datetime`` (ISO 8601 with a zone), and nested dataclasses. Field metadata:
``max_length``, ``max_items``, ``minimum``, ``maximum``, ``description``, and ``json``: the
field's name in JSON where it cannot be a Python name (``{"with": ...}``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import types
import typing
from collections.abc import Mapping
from typing import Any, Final, TypeVar

T = TypeVar("T")

DEFAULT_MAX_LENGTH: Final = 4096


class ShapeError(ValueError):
    """Input that does not fit the declared shape; the message names the field."""


_HINTS: dict[Any, dict[str, Any]] = {}


def _hints(cls: Any) -> dict[str, Any]:
    """The resolved field types of a dataclass (remembered: routes ask on every request)."""
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    return hints


def _optional(tp: Any) -> tuple[bool, Any]:
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1:
            raise TypeError(f"unsupported union {tp!r}")
        return True, rest[0]
    return False, tp


def json_name(f: dataclasses.Field[Any]) -> str:
    """The field's name in JSON (its ``json`` metadata, else its own name)."""
    name: str = f.metadata.get("json", f.name)
    return name


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _convert(tp: Any, value: object, where: str, meta: Mapping[str, Any]) -> Any:
    optional, tp = _optional(tp)
    if value is None:
        if optional:
            return None
        raise ShapeError(f"{where} must not be null")
    origin = typing.get_origin(tp)
    if tp is str:
        if not isinstance(value, str):
            raise ShapeError(f"{where} must be a string, not {_type_name(value)}")
        limit = meta.get("max_length", DEFAULT_MAX_LENGTH)
        if len(value) > limit:
            raise ShapeError(f"{where} is too long (at most {limit} characters)")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ShapeError(f"{where} must be true or false, not {_type_name(value)}")
        return value
    if tp is int or tp is float:
        ok = isinstance(value, int) if tp is int else isinstance(value, int | float)
        if isinstance(value, bool) or not ok:
            kind = "a whole number" if tp is int else "a number"
            raise ShapeError(f"{where} must be {kind}, not {_type_name(value)}")
        assert isinstance(value, int | float)
        if "minimum" in meta and value < meta["minimum"]:
            raise ShapeError(f"{where} must be at least {meta['minimum']}")
        if "maximum" in meta and value > meta["maximum"]:
            raise ShapeError(f"{where} must be at most {meta['maximum']}")
        return value
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        allowed = [m.value for m in tp]
        if value not in allowed:
            raise ShapeError(f"{where} must be one of {', '.join(map(str, allowed))}")
        return tp(value)
    if tp is dt.datetime:
        if not isinstance(value, str):
            raise ShapeError(f"{where} must be an ISO 8601 time, not {_type_name(value)}")
        try:
            t = dt.datetime.fromisoformat(value)
        except ValueError:
            raise ShapeError(f"{where} must be an ISO 8601 time") from None
        if t.tzinfo is None:
            raise ShapeError(f"{where} must carry a time zone")
        return t
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise ShapeError(f"{where} must be a list, not {_type_name(value)}")
        limit = meta.get("max_items", 1000)
        if len(value) > limit:
            raise ShapeError(f"{where} has too many items (at most {limit})")
        item = typing.get_args(tp)[0]
        items = [_convert(item, v, f"{where}[{i}]", {}) for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ShapeError(f"{where} must be an object, not {_type_name(value)}")
        return value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return parse(tp, value, where)
    raise TypeError(f"unsupported field type {tp!r} at {where}")


def parse(cls: type[T], obj: object, where: str = "body") -> T:
    """An instance of the dataclass ``cls`` from decoded JSON; :class:`ShapeError` if it does
    not fit."""
    if not isinstance(obj, dict):
        raise ShapeError(f"{where} must be a JSON object, not {_type_name(obj)}")
    fields = {json_name(f): f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(obj) - set(fields))
    if unknown:
        raise ShapeError(f"{where}: unknown field {unknown[0]!r}")
    hints = _hints(cls)
    values: dict[str, Any] = {}
    for name, f in fields.items():
        here = name if where == "body" else f"{where}.{name}"
        if name not in obj:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ShapeError(f"{here} is required")
            continue
        values[f.name] = _convert(hints[f.name], obj[name], here, f.metadata)
    return cls(**values)


def parse_query(cls: type[T], args: Mapping[str, str]) -> T:
    """An instance of ``cls`` (fields ``str``, ``int``, ``bool``, optional) from a query string."""
    hints = _hints(cls)
    fields = {json_name(f): f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(args) - set(fields))
    if unknown:
        raise ShapeError(f"unknown query parameter {unknown[0]!r}")
    obj: dict[str, object] = {}
    for name, text in args.items():
        _, tp = _optional(hints[fields[name]])
        if tp is int:
            try:
                obj[name] = int(text)
            except ValueError:
                raise ShapeError(f"{name} must be a whole number") from None
        elif tp is bool:
            if text not in ("true", "false"):
                raise ShapeError(f"{name} must be true or false")
            obj[name] = text == "true"
        else:
            obj[name] = text
    return parse(cls, obj, "query")


def dump(value: object) -> Any:
    """JSON-ready data from a dataclass instance (recursively), enums and times included."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {json_name(f): dump(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, list | tuple | frozenset | set):
        items = [dump(v) for v in value]
        return sorted(items) if isinstance(value, frozenset | set) else items
    if isinstance(value, dict):
        return {str(k): dump(v) for k, v in value.items()}
    return value


def json_schema(tp: Any, meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The JSON Schema (2020-12, as OpenAPI 3.1 uses it) of a field type or dataclass."""
    meta = meta or {}
    optional, tp = _optional(tp)
    origin = typing.get_origin(tp)
    schema: dict[str, Any]
    if tp is str:
        schema = {"type": "string", "maxLength": meta.get("max_length", DEFAULT_MAX_LENGTH)}
    elif tp is bool:
        schema = {"type": "boolean"}
    elif tp is int or tp is float:
        schema = {"type": "integer" if tp is int else "number"}
        if "minimum" in meta:
            schema["minimum"] = meta["minimum"]
        if "maximum" in meta:
            schema["maximum"] = meta["maximum"]
    elif isinstance(tp, type) and issubclass(tp, enum.Enum):
        schema = {"type": "string", "enum": [m.value for m in tp]}
    elif tp is dt.datetime:
        schema = {"type": "string", "format": "date-time"}
    elif origin in (list, tuple, frozenset):
        schema = {"type": "array", "items": json_schema(typing.get_args(tp)[0])}
        if "max_items" in meta:
            schema["maxItems"] = meta["max_items"]
    elif origin is dict:
        schema = {"type": "object"}
    elif dataclasses.is_dataclass(tp) and isinstance(tp, type):
        hints = _hints(tp)
        props: dict[str, Any] = {}
        required = []
        for f in dataclasses.fields(tp):
            props[json_name(f)] = json_schema(hints[f.name], f.metadata)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                required.append(json_name(f))
        schema = {"type": "object", "properties": props, "additionalProperties": False}
        if required:
            schema["required"] = required
        if tp.__doc__ and not tp.__doc__.startswith(f"{tp.__name__}("):
            schema["description"] = " ".join(tp.__doc__.split())
    else:
        raise TypeError(f"unsupported type {tp!r}")
    if "description" in meta:
        schema["description"] = meta["description"]
    if optional:
        return {"anyOf": [schema, {"type": "null"}]}
    return schema
