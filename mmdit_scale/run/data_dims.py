"""Model input dims that a recipe leaves unset, taken from the manifest of data.train.

`mmdit-scale train` fills them before it saves RUN_DIR/config.yaml, so the ranks, a resume,
`sample` and `export` all read concrete numbers; `plan` fills them too, or falls back to SD3's.
Dims a recipe does set are left alone: the loader checks them against the shards. Torch-free,
because the launcher runs it: the manifest is found by `data_pipeline.locate`, the loader's rule.
"""
from __future__ import annotations

from dataclasses import replace

from data_pipeline.locate import first_manifest
from data_pipeline.manifest import Manifest
from mmdit_scale.config import ConfigError
from mmdit_scale.config.schema import RunConfig
from mmdit_scale.config.validate import require_train_data
from mmdit_scale.model.config import SD3_INPUT_DIMS, InputDims


def manifest_input_dims(manifest: Manifest, path: str) -> InputDims:
    """The input dims of a model for the dataset of `manifest` (read from `path`): the latent's
    channels, and the context and pooled widths of the manifest's text layout at its natural width."""
    try:
        provenance = manifest.provenance
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
        require_train_data(cfg)
        path, manifest = first_manifest(cfg.data.train)
        dims, source = manifest_input_dims(manifest, path), f"the manifest {path}"
    except (ConfigError, ValueError) as err:
        if not sd3_fallback:
            raise ValueError(f"{keys} unset and not readable from the data: {err}; set them in the recipe "
                             f"or as overrides (SD3: {_assignments(SD3_INPUT_DIMS, missing)})") from None
        dims, source = SD3_INPUT_DIMS, f"SD3's defaults ({err})"
    return replace(cfg, model=cfg.model.with_input_dims(dims)), f"{_assignments(dims, missing)} from {source}"


def _assignments(dims: InputDims, names: tuple[str, ...]) -> str:
    return " ".join(f"model.{name}={getattr(dims, name)}" for name in names)
