"""Load, merge and save run configs: dataclass defaults < base chain < recipe < overrides.

The only module in the project that touches OmegaConf (YAML with its float rules, dotlist
parsing, `${...}` interpolation, YAML output). It merges plain trees itself so it can remember
which file or override set every key, and hands the result to `validate.build`; callers only
ever see a typed `RunConfig`.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mmdit_scale.config.errors import ConfigError
from mmdit_scale.config.recipes import find_recipe
from mmdit_scale.config.schema import RunConfig
from mmdit_scale.config.validate import SourceOf, build

Layer = tuple[dict, str]
"""One source of keys, in merge order: (plain tree, label such as 'recipes/x.yaml')."""


def load_config(recipe: str | os.PathLike, overrides: Iterable[str] = ()) -> RunConfig:
    """Resolve `recipe` (following its `base:` chain) and `key=value` overrides into a RunConfig.

    Raises ConfigError, naming key and source, for anything that does not fit the schema.
    A YAML written from `to_yaml` (the run dir's `mmdit_scale.run.layout.write_config`) loads back
    to an equal object.
    """
    layers = _recipe_layers(find_recipe(recipe), ())
    layers += [_override_layer(item) for item in overrides]
    merged: dict = {}
    sources: dict[str, str] = {}
    for tree, label in layers:
        _merge(merged, tree, label, sources)
    source_of = _source_lookup(sources, [label for _, label in layers])
    return build(RunConfig, _resolve(merged, source_of), source_of)


def to_dict(cfg: RunConfig) -> dict[str, Any]:
    """The config as nested plain dicts and lists (for YAML, JSON and logging hyper-parameters)."""
    return _plain(dataclasses.asdict(cfg))


def to_yaml(cfg: RunConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.create(to_dict(cfg)))


def _recipe_layers(path: Path, chain: tuple[Path, ...]) -> list[Layer]:
    """The recipe's layers, root of its `base:` chain first."""
    real = path.resolve()
    label = _display(real)
    if real in chain:
        raise ConfigError("base cycle: " + " -> ".join(_display(p) for p in (*chain, real)))
    if not real.is_file():
        where = f" (named as base in {_display(chain[-1])})" if chain else ""
        raise ConfigError(f"recipe {label} not found{where}")
    tree = _read_yaml(real, label)
    base = tree.pop("base", None)
    if base is None:
        return [(tree, label)]
    if not isinstance(base, str) or not base:
        raise ConfigError(f"bad value for 'base' in {label}: expected a recipe path relative to "
                          f"this file, got {base!r}")
    return _recipe_layers(real.parent / base, (*chain, real)) + [(tree, label)]


def _read_yaml(path: Path, label: str) -> dict:
    try:
        cfg = OmegaConf.load(path)
    except (yaml.YAMLError, OmegaConfBaseException) as err:
        raise ConfigError(f"cannot parse {label}: {err}") from None
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"{label} must be a mapping of sections (model:, train:, ...) at the top level")
    return OmegaConf.to_container(cfg, resolve=False)


def _override_layer(item: str) -> Layer:
    label = f"override {item!r}"
    key, sep, _ = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"{label} is not of the form key=value (e.g. optim.lr=2e-4)")
    try:
        tree = OmegaConf.to_container(OmegaConf.from_dotlist([item]), resolve=False)
    except (OmegaConfBaseException, yaml.YAMLError) as err:
        reason = " ".join(str(err).split())  # YAML's multi-line message, on one line
        raise ConfigError(f"cannot parse {label}: {reason}") from None
    return tree, label


def _merge(dst: dict, src: Mapping, label: str, sources: dict[str, str], prefix: str = "") -> None:
    """Deep-merge `src` into `dst` (mappings merge, everything else replaces), noting each key's label."""
    for key, value in src.items():
        dotted = prefix + str(key)
        sources[dotted] = label
        if isinstance(value, Mapping):
            if not isinstance(dst.get(key), dict):
                dst[key] = {}
            _merge(dst[key], value, label, sources, dotted + ".")
        else:
            dst[key] = value
            for stale in [k for k in sources if k.startswith(dotted + ".")]:
                del sources[stale]


def _resolve(merged: dict, source_of: SourceOf) -> dict:
    """Reject `???` (must be set) values left unset, then resolve `${...}` interpolations."""
    key = next(_missing(merged), None)
    if key is not None:
        raise ConfigError(f"missing value for {key!r}: it is '???' in {source_of(key)}; "
                          f"set it in a recipe or with the override {key}=...")
    try:
        return OmegaConf.to_container(OmegaConf.create(merged), resolve=True)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", "") or "the config"
        raise ConfigError(f"cannot resolve {key!r}: {str(err).splitlines()[0]}") from None


def _missing(tree: Mapping, prefix: str = "") -> Iterator[str]:
    for key, value in tree.items():
        if isinstance(value, Mapping):
            yield from _missing(value, f"{prefix}{key}.")
        elif value == "???":
            yield f"{prefix}{key}"


def _source_lookup(sources: dict[str, str], order: list[str]) -> SourceOf:
    def source_of(dotted: str) -> str:
        key = dotted.split("[")[0]
        labels = {label for k, label in sources.items() if k == key or k.startswith(key + ".") or not key}
        return ", ".join(label for label in order if label in labels) or "the defaults"
    return source_of


def _display(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
