"""Turning nested dicts (YAML) into typed dataclasses, with errors that name the key.

Each config dataclass declares its fields with defaults and optional metadata:
  help     one line shown in errors and docs
  choices  the allowed values of a string (or any) field
  min/max  inclusive bounds of a number; gt: exclusive lower bound
The loader refuses unknown keys (with a "did you mean"), wrong types and out-of-range values,
always naming the full dotted key, the value and what is allowed.
"""
from __future__ import annotations

import dataclasses
import difflib
import typing
from typing import Any, Dict, Mapping, Type, TypeVar, Union

from hvd_trainer.errors import ConfigError

T = TypeVar("T")
_NONE = type(None)


def setting(default: Any, help: str, **meta: Any) -> Any:
    """A dataclass field with an immutable default, its one-line help (shown in errors) and
    metadata (choices, min, max, gt) that the loader checks."""
    return dataclasses.field(default=default, metadata={"help": help, **meta})


def did_you_mean(word: str, options) -> str:
    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


def from_dict(cls: Type[T], data: Any, path: str) -> T:
    """Build dataclass `cls` from `data`, validating every key. `path` is the dotted prefix."""
    if data is None:
        data = {}
    if dataclasses.is_dataclass(data) and isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{path} must be a mapping of keys to values, but it is {type(data).__name__} "
            f"({data!r}). Write it as '{path}: {{key: value, ...}}' or leave it out for the defaults."
        )
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = unknown[0]
        raise ConfigError(
            f"Unknown key {path}.{key} in the config.{did_you_mean(key, fields)} The keys allowed "
            f"under {path} are: {', '.join(sorted(fields))}."
        )
    kwargs = {}
    for name, value in data.items():
        f = fields[name]
        kwargs[name] = check_value(hints[name], value, f"{path}.{name}", f.metadata)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:  # a __post_init__ that raised a plain error
        raise ConfigError(f"{path}: {e}") from e


def check_value(tp: Any, value: Any, key: str, meta: Mapping[str, Any] = None) -> Any:
    """Check and coerce one value against its type hint and field metadata."""
    meta = meta or {}
    value = _coerce(tp, value, key)
    if "choices" in meta and value is not None and not isinstance(value, (dict, list)):
        choices = meta["choices"]
        if value not in choices and not (_allows_int(tp) and isinstance(value, int)):
            raise ConfigError(
                f"{key} is {value!r}, which is not allowed; use one of: "
                f"{', '.join(repr(c) for c in choices)}.{did_you_mean(value, choices)}"
            )
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        lo, hi, gt = meta.get("min"), meta.get("max"), meta.get("gt")
        if lo is not None and value < lo:
            raise ConfigError(f"{key} is {value}, but it must be at least {lo}. {meta.get('help', '')}".strip())
        if hi is not None and value > hi:
            raise ConfigError(f"{key} is {value}, but it must be at most {hi}. {meta.get('help', '')}".strip())
        if gt is not None and value <= gt:
            raise ConfigError(f"{key} is {value}, but it must be greater than {gt}. {meta.get('help', '')}".strip())
    return value


def _allows_int(tp) -> bool:
    return tp is int or (typing.get_origin(tp) is Union and int in typing.get_args(tp))


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Union:
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if origin is typing.Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if tp is _NONE:
        return "null"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    if origin in (list, tuple):
        return "a list"
    if origin is dict:
        return "a mapping"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, str(tp))


def _coerce(tp: Any, value: Any, key: str) -> Any:
    """`value` as type `tp`, or a ConfigError naming `key`, the value and the type wanted."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is Union:
        return _coerce_union(tp, value, key)
    if origin is typing.Literal:
        if value in typing.get_args(tp):
            return value
        raise ConfigError(f"{key} is {value!r}, but it must be {_describe(tp)}.")
    if tp is _NONE:
        if value is None:
            return None
        raise ConfigError(f"{key} must be null.")
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    if tp in _SCALARS:
        return _SCALARS[tp](value, key)
    if origin in (list, tuple):
        return _coerce_sequence(tp, value, key)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} is {value!r}, but it must be a mapping.")
        return dict(value)
    return value


def _coerce_union(tp: Any, value: Any, key: str) -> Any:
    args = typing.get_args(tp)
    non_null = [a for a in args if a is not _NONE]
    if value is not None and len(non_null) == 1:
        return _coerce(non_null[0], value, key)  # Optional[X]: X's own error is the precise one
    # Try literal and exact matches first so that 'auto' does not become a float error.
    for arg in sorted(args, key=lambda a: 0 if typing.get_origin(a) is typing.Literal or a is _NONE else 1):
        try:
            return _coerce(arg, value, key)
        except ConfigError:
            continue
    raise _wrong_type(key, value, _describe(tp))


def _coerce_sequence(tp: Any, value: Any, key: str) -> Any:
    """A list, or a tuple of fixed length (Tuple[float, float]) or any length (Tuple[int, ...])."""
    origin = typing.get_origin(tp)
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{key} is {value!r}, but it must be a list.")
    args = typing.get_args(tp)
    if origin is tuple and args and args[-1] is not Ellipsis:
        if len(value) != len(args):
            raise ConfigError(f"{key} is {value!r}, but it must be a list of {len(args)} values.")
        return tuple(_coerce(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    inner = args[0] if args else Any
    items = [_coerce(inner, v, f"{key}[{i}]") for i, v in enumerate(value)]
    return tuple(items) if origin is tuple else items


def _wrong_type(key: str, value: Any, wanted: str) -> ConfigError:
    return ConfigError(f"{key} is {value!r} ({type(value).__name__}), but it must be {wanted}.")


def _coerce_bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    raise _wrong_type(key, value, "true or false")


def _coerce_int(value: Any, key: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise _wrong_type(key, value, "an integer")


def _coerce_float(value: Any, key: str) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        # PyYAML reads 1e-3 (no dot) as a string; accept what is clearly a number.
        try:
            return float(value)
        except ValueError:
            pass
    raise _wrong_type(key, value, "a number")


def _coerce_str(value: Any, key: str) -> str:
    if isinstance(value, str):
        return value
    raise _wrong_type(key, value, "a string")


_SCALARS = {bool: _coerce_bool, int: _coerce_int, float: _coerce_float, str: _coerce_str}


def to_dict(obj: Any) -> Any:
    """A dataclass config as plain dicts and lists (for JSON and YAML)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def set_dotted(data: Dict[str, Any], assignment: str) -> None:
    """Apply one command-line override 'a.b.c=value' (value parsed as YAML) to nested dicts."""
    import yaml

    if "=" not in assignment:
        raise ConfigError(
            f"--set {assignment!r} is not an assignment; write it as --set trainer.epochs=3 "
            "(a dotted key, '=', and a YAML value)."
        )
    dotted, raw = assignment.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {assignment!r}: the value {raw!r} is not valid YAML ({e}).") from e
    keys = [k for k in dotted.strip().split(".") if k]
    if not keys:
        raise ConfigError(f"--set {assignment!r} has an empty key; write --set trainer.epochs=3.")
    node = data
    for k in keys[:-1]:
        child = node.get(k)
        if child is None:
            child = node[k] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {assignment!r}: {k} is not a section, so it has no key {keys[-1]!r}.")
        node = child
    node[keys[-1]] = value
