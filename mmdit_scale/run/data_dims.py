"""Model input dims that a recipe leaves unset, taken from the manifest of data.train.

`mmdit-scale train` fills them before it saves RUN_DIR/config.yaml, so the ranks, a resume,
`sample` and `export` all read concrete numbers; `plan` fills them too, or falls back to SD3's.
Dims a recipe does set are left alone: the loader checks them against the shards.

Torch-free, because the launcher runs it: it reads the manifest through `data_pipeline.manifest`
(torch-free too), but finds it itself, since the loader's dataset parser imports webdataset and
with it torch.
"""
from __future__ import annotations

import os
import re
from dataclasses import replace

from data_pipeline.manifest import MANIFEST_NAME, Manifest
from mmdit_scale.config.schema import RunConfig
from mmdit_scale.model.config import SD3_INPUT_DIMS, InputDims

_SHARD = re.compile(r"[^/\s'\"]+\.tar\b")
_URL = re.compile(r"^[a-z][a-z0-9+.-]*:")
_FIRST_OF_BRACES = re.compile(r"\{([^{}]*?)(?:\.\.|,)[^{}]*\}")


def manifest_path(train: str) -> str:
    """Local path of the manifest of `data.train`, found as the loader finds it: in a shard
    directory, or beside the first shard of a brace pattern. ValueError for a remote URL."""
    if train.startswith("file:"):
        train = re.sub(r"^file://?", "/", train)
    elif _URL.match(train):
        raise ValueError(f"data.train {train!r} is a URL, whose manifest is not read before the ranks start")
    if os.path.isdir(train):
        return os.path.join(train, MANIFEST_NAME)
    first = _FIRST_OF_BRACES.sub(r"\1", train)
    hits = list(_SHARD.finditer(first))
    if not hits:
        raise ValueError(f"data.train {train!r} is neither a directory nor a pattern of *.tar shards")
    return first[:hits[-1].start()] + MANIFEST_NAME + first[hits[-1].end():]


def manifest_input_dims(path: str) -> InputDims:
    """The input dims of a model for the dataset whose manifest is `path`: the latent's channels,
    and the context and pooled widths of the manifest's text layout at its natural width."""
    try:
        provenance = Manifest.load(path).provenance
        layout = provenance.text_layout()
        if not layout.present():
            raise ValueError("the dataset has no text encoder")
        return InputDims(in_channels=provenance.latent.channels, context_dim=layout.width,
                         pooled_dim=layout.pooled_dim)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"cannot read the manifest {path}: {type(err).__name__}: {err}") from None


def fill_input_dims(cfg: RunConfig, sd3_fallback: bool = False) -> tuple[RunConfig, str]:
    """`cfg` with its unset model input dims filled from data.train's manifest, and a note of
    what was filled from where ('' when nothing was unset). Without a readable manifest: SD3's
    dims when `sd3_fallback`, else ValueError naming the unset keys."""
    missing = cfg.model.missing_input_dims()
    if not missing:
        return cfg, ""
    keys = ", ".join(f"model.{name}" for name in missing)
    try:
        if not cfg.data.train:
            raise ValueError("data.train is empty")
        path = manifest_path(cfg.data.train)
        dims, source = manifest_input_dims(path), f"the manifest {path}"
    except ValueError as err:
        if not sd3_fallback:
            raise ValueError(f"{keys} unset and not readable from the data: {err}; set them in the recipe "
                             f"or as overrides (SD3: {_assignments(SD3_INPUT_DIMS, missing)})") from None
        dims, source = SD3_INPUT_DIMS, f"SD3's defaults ({err})"
    return replace(cfg, model=cfg.model.with_input_dims(dims)), f"{_assignments(dims, missing)} from {source}"


def _assignments(dims: InputDims, names: tuple[str, ...]) -> str:
    return " ".join(f"model.{name}={getattr(dims, name)}" for name in names)
