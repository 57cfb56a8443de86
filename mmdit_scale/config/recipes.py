"""Where recipes are found: a path that exists, else a recipe shipped inside the package.

The recipes (top-level `recipes/`, YAML only) are installed as package data at
`mmdit_scale/recipes/` (in the repo a symlink to `../recipes`), so a wheel install outside the
repo runs `mmdit-scale config tiny` or `... recipes/ladder/d24.yaml` the same as a checkout.
Torch- and OmegaConf-free.
"""
from __future__ import annotations

import difflib
import os
from pathlib import Path, PurePosixPath

import mmdit_scale
from mmdit_scale.config.errors import ConfigError

RECIPES_DIR = Path(mmdit_scale.__file__).parent / "recipes"
"""The installed recipes folder (the repo's `recipes/` itself in an editable install)."""

SUFFIXES = (".yaml", ".yml")


def find_recipe(name: str | os.PathLike) -> Path:
    """The recipe file `name` stands for.

    A file at `name` (relative to the working directory, or absolute) wins. Otherwise `name` is
    looked up in RECIPES_DIR, after the last `recipes` component of the path if it has one, with
    `.yaml` added when it has no YAML suffix: `recipes/tiny.yaml`, `tiny.yaml` and `tiny` all name
    the shipped tiny recipe, `ladder/d24` and `stages/finetune_512` their rungs and stages.

    Raises ConfigError when neither exists, naming the nearest packaged recipes if any are close.
    """
    path = Path(name)
    if path.is_file():
        return path
    key = _packaged_key(path)
    if key is not None and (RECIPES_DIR / key).is_file():
        return RECIPES_DIR / key
    message = f"recipe {os.fspath(name)} not found"
    nearest = _nearest(key or PurePosixPath(path.name))
    if nearest:
        tried = f"; nor is {key} a packaged recipe" if key is not None else ""
        message += f"{tried} (packaged recipes are in {RECIPES_DIR}); did you mean {', '.join(nearest)}?"
    raise ConfigError(message)


def packaged_recipes() -> list[str]:
    """Names of the shipped recipes, relative to RECIPES_DIR without `.yaml`: 'tiny', 'ladder/d24', ..."""
    if not RECIPES_DIR.is_dir():
        return []
    return sorted(_stem(PurePosixPath(p.relative_to(RECIPES_DIR).as_posix()))
                  for p in RECIPES_DIR.rglob("*") if p.suffix in SUFFIXES and p.is_file())


def _packaged_key(path: Path) -> PurePosixPath | None:
    """`path` relative to RECIPES_DIR, or None when it cannot name a packaged recipe."""
    parts = path.parts
    if "recipes" in parts:
        parts = parts[len(parts) - parts[::-1].index("recipes"):]
    elif path.is_absolute():
        return None
    if not parts or ".." in parts:
        return None
    key = PurePosixPath(*parts)
    return key if key.suffix in SUFFIXES else key.with_name(key.name + ".yaml")


def _nearest(key: PurePosixPath, n: int = 3) -> list[str]:
    """Up to `n` packaged recipe names close to `key`, by its full name or its last component."""
    wanted = _stem(key)
    scored = []
    for name in packaged_recipes():
        score = max(difflib.SequenceMatcher(None, wanted, name).ratio(),
                    difflib.SequenceMatcher(None, PurePosixPath(wanted).name, PurePosixPath(name).name).ratio())
        if score >= 0.6:
            scored.append((-score, name))
    return [name for _, name in sorted(scored)[:n]]


def _stem(key: PurePosixPath) -> str:
    text = key.as_posix()
    for suffix in SUFFIXES:
        if text.endswith(suffix):
            return text[: -len(suffix)]
    return text
