"""What a recipe leaves to the data, taken from the manifest of data.train: the model input dims
and data.resolution (the base of the timestep shift).

`mmdit-scale train` fills them before it saves RUN_DIR/config.yaml, so the ranks, a resume,
`sample` and `export` all read concrete numbers; `plan` fills them too, or falls back to SD3's.
Dims a recipe does set are left alone (the loader checks them against the shards); a resolution
a recipe sets must agree with the manifest. Torch-free,
because the launcher runs it: the manifest is found by `data_pipeline.locate`, the loader's rule.
"""
from __future__ import annotations

from dataclasses import replace

from data_pipeline.locate import check_same_provenance, first_manifest, read_manifests
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


SD3_RESOLUTION = 256
"""`plan`'s data.resolution when neither the recipe nor a manifest gives one: SD3's pretraining size."""


def fill_from_data(cfg: RunConfig, sd3_fallback: bool = False) -> tuple[RunConfig, str]:
    """`cfg` with what it leaves unset and the data knows, from data.train's first manifest: the
    model input dims and data.resolution; and a note of what was filled from where ('' when
    nothing was). A data.resolution that disagrees with the manifest is refused (ValueError naming
    both): it is the base of the timestep shift, so a wrong one trains with the wrong shift.

    Without a readable manifest: SD3's dims and 256 px when `sd3_fallback` (`plan`), else
    ValueError naming the unset keys. A config with nothing unset and no manifest passes
    (`sd3_fallback`) or must still read it (training: to check the resolution)."""
    missing = cfg.model.missing_input_dims()
    keys = [f"model.{name}" for name in missing] + ([] if cfg.data.resolution else ["data.resolution"])
    try:
        require_train_data(cfg)
        path, manifest = first_manifest(cfg.data.train)
        dims = manifest_input_dims(manifest, path) if missing else None
        resolution, source = manifest.provenance.resolution, f"the manifest {path}"
    except (ConfigError, ValueError) as err:
        if not sd3_fallback:
            if not keys:
                raise
            raise ValueError(f"{', '.join(keys)} unset and not readable from the data: {err}; set them in the "
                             f"recipe or as overrides (SD3: {_assignments(SD3_INPUT_DIMS, missing)}"
                             f"{'' if cfg.data.resolution else f' data.resolution={SD3_RESOLUTION}'})") from None
        if not keys:
            return cfg, ""
        dims, resolution, source = SD3_INPUT_DIMS if missing else None, SD3_RESOLUTION, f"SD3's defaults ({err})"
    if cfg.data.resolution and cfg.data.resolution != resolution:
        raise ValueError(f"data.resolution={cfg.data.resolution} disagrees with the training data: {source} says "
                         f"its images are {resolution} px. data.resolution is the base of the timestep shift "
                         f"(flow.shift applies at resolution^2), so leave it unset to take {resolution} from the "
                         "manifest, or point data.train at shards of the resolution the recipe means")
    if not keys:
        return cfg, ""
    notes = _assignments(dims, missing).split() if dims is not None else []
    if not cfg.data.resolution:
        notes.append(f"data.resolution={resolution}")
        cfg = replace(cfg, data=replace(cfg.data, resolution=resolution))
    if dims is not None:
        cfg = replace(cfg, model=cfg.model.with_input_dims(dims))
    return cfg, f"{' '.join(notes)} from {source}"


def _assignments(dims: InputDims, names: tuple[str, ...]) -> str:
    return " ".join(f"model.{name}={getattr(dims, name)}" for name in names)


def check_sources(cfg: RunConfig) -> None:
    """Before any rank starts: every dataset of a data.train mixture has the first one's provenance
    (encoders and their dims, latent normalisation, storage), and so has data.val; ValueError
    naming the dataset and what differs (the loader checks the same again on each rank)."""
    train = read_manifests(cfg.data.train)
    check_same_provenance(train)
    if cfg.data.val:
        check_same_provenance(read_manifests(cfg.data.val), reference=("the training data", train[0][1]))
