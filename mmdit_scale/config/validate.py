"""Turn a merged plain tree (dicts, lists, scalars) into the typed dataclass schema.

Strict on purpose: an unknown key, a wrong type or a value outside a `Literal` set raises
`ConfigError` naming the dotted key and where its value came from, so a typo in a recipe fails
before any rank starts instead of silently training with a default.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import types
from typing import Any, Callable, Literal, Mapping, Union, get_args, get_origin, get_type_hints

from mmdit_scale.config.errors import ConfigError

SourceOf = Callable[[str], str]
"""Maps a dotted key to a description of where its value came from (file or override)."""


def schema_keys(cls: type, prefix: str = "") -> list[str]:
    """Every dotted key of a dataclass schema, sections and leaves, in declaration order."""
    keys = []
    for name, hint in _fields(cls).items():
        keys.append(prefix + name)
        if dataclasses.is_dataclass(hint):
            keys.extend(schema_keys(hint, prefix + name + "."))
    return keys


def nearest_key(dotted: str, root: type) -> list[str]:
    """Closest valid keys to a mistyped one: a sibling first, else the same name in another section."""
    keys = schema_keys(root)
    parent, _, leaf = dotted.rpartition(".")
    siblings = {k.rpartition(".")[2]: k for k in keys if k.rpartition(".")[0] == parent}
    close = difflib.get_close_matches(leaf, list(siblings), n=1)
    if close:
        return [siblings[close[0]]]
    # The right name in the wrong section, e.g. 'train.lr' -> 'optim.lr'.
    close = difflib.get_close_matches(leaf, sorted({k.rpartition(".")[2] for k in keys}), n=1)
    return [k for k in keys if close and k.rpartition(".")[2] == close[0]]


def build(cls: type, tree: Mapping[str, Any], source_of: SourceOf, root: type | None = None,
          prefix: str = "") -> Any:
    """Instantiate dataclass `cls` from `tree`; keys absent from the tree keep their defaults."""
    root = root or cls
    hints = _fields(cls)
    for key in tree:
        if key not in hints:
            dotted = prefix + str(key)
            nearest = " or ".join(repr(k) for k in nearest_key(dotted, root))
            raise ConfigError(f"unknown key {dotted!r} in {source_of(dotted)}"
                              + (f"; did you mean {nearest}?" if nearest else ""))
    kwargs = {name: _convert(tree[name], hint, prefix + name, source_of, root)
              for name, hint in hints.items() if name in tree}
    try:
        return cls(**kwargs)
    except ValueError as err:
        # Cross-field checks in __post_init__ (e.g. hidden_size % num_heads) know no sources.
        section = prefix.rstrip(".")
        raise ConfigError(f"invalid {section or 'config'!r} section (from {source_of(section)}): {err}") from None


def _fields(cls: type) -> dict[str, Any]:
    hints = get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def _convert(value: Any, hint: Any, dotted: str, source_of: SourceOf, root: type) -> Any:
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, Mapping):
            raise _bad(dotted, "a section (mapping of keys)", value, source_of)
        return build(hint, value, source_of, root, dotted + ".")
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if value is None:
            raise _bad(dotted, _describe(hint), value, source_of)
        # A value picks the alternative of its own shape: a string a `str`, a list a tuple type.
        chosen = [a for a in inner if _shape_fits(value, a)] if len(inner) > 1 else inner
        if not chosen:
            raise _bad(dotted, _describe(hint), value, source_of)
        return _convert(value, chosen[0], dotted, source_of, root)
    if origin is Literal:
        # `type(c) is type(value)`: True == 1 in Python, but `zero_stage: true` is a mistake.
        for choice in args:
            if choice == value and type(choice) is type(value):
                return choice
        raise _bad(dotted, _describe(hint), value, source_of)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _bad(dotted, _describe(hint), value, source_of)
        if len(args) == 2 and args[1] is Ellipsis:
            element_hints = [args[0]] * len(value)
        elif len(args) == len(value):
            element_hints = list(args)
        else:
            raise _bad(dotted, _describe(hint), value, source_of)
        return tuple(_convert(v, h, f"{dotted}[{i}]", source_of, root)
                     for i, (v, h) in enumerate(zip(value, element_hints)))
    if hint is float and type(value) in (int, float):
        if not math.isfinite(value):  # YAML's .inf and .nan: no setting of ours means them
            raise _bad(dotted, "a finite number", value, source_of)
        return float(value)
    if hint in (bool, int, float, str):
        if type(value) is hint:
            return value
        raise _bad(dotted, _describe(hint), value, source_of)
    raise TypeError(f"schema type {hint!r} of {dotted!r} is not supported by the config loader")


def _shape_fits(value: Any, hint: Any) -> bool:
    """Whether `value` has the outer shape of `hint` (mapping, list or scalar type)."""
    if dataclasses.is_dataclass(hint):
        return isinstance(value, Mapping)
    if get_origin(hint) is tuple:
        return isinstance(value, (list, tuple))
    return isinstance(value, hint) if isinstance(hint, type) else True


def _describe(hint: Any) -> str:
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        named = " or ".join(_describe(a) for a in args if a is not type(None))
        return named + " or null" if type(None) in args else named
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_describe(args[0])}"
        return f"a list ({', '.join(_describe(a) for a in args)})"
    if dataclasses.is_dataclass(hint):
        return "a mapping (" + ", ".join(_fields(hint)) + ")"
    return getattr(hint, "__name__", repr(hint))


def _bad(dotted: str, expected: str, value: Any, source_of: SourceOf) -> ConfigError:
    got = "null" if value is None else f"{type(value).__name__} {value!r}"
    return ConfigError(f"bad value for {dotted!r} in {source_of(dotted)}: expected {expected}, got {got}")


EMPTY_TRAIN_DATA = ("data.train is empty: set it to the shards written by `mmdit-scale prepare` "
                    "(e.g. data.train=shards/train)")


def require_train_data(cfg: Any) -> None:
    """The one check that a run config names its training data; `plan` and `config` do without.

    Called by whatever needs the data before a rank or job starts (`train`, `submit`, the loader)."""
    if not cfg.data.train:
        raise ConfigError(EMPTY_TRAIN_DATA)
