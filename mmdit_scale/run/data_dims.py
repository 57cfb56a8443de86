"""What a recipe leaves to the data, taken from the manifest of data.train: the model input dims
and data.resolution (the base of the timestep shift).

`mmdit-scale train` fills them before it saves RUN_DIR/config.yaml, so the ranks, a resume,
`sample` and `export` all read concrete numbers; `plan` fills them too, or falls back to SD3's.
Dims a recipe does set are left alone (the loader checks them against the shards); a resolution
a recipe sets must agree with the manifest. Torch-free,
because the launcher runs it: the manifest is found by `data_pipeline.locate`, the loader's rule.
"""
from __future__ import annotations

import os
from dataclasses import replace

from data_pipeline.locate import (absolute, check_same_provenance, first_manifest, null_text_location,
                                  read_manifests)
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
    buckets: tuple[tuple[int, int], ...] = ()
    repa_dim: int | None = None
    try:
        require_train_data(cfg)
        path, manifest = first_manifest(cfg.data.train)
        dims = manifest_input_dims(manifest, path) if missing else None
        resolution, source = manifest.provenance.resolution, f"the manifest {path}"
        buckets = tuple(tuple(int(x) for x in b) for b in manifest.provenance.buckets or ())
        _check_buckets(cfg.data.buckets, buckets, source)
        features = manifest.provenance.repa_features()
        repa_dim = features[1] if features is not None else None
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
    if buckets and not cfg.data.buckets:  # the manifest's buckets are the truth the loader batches by
        cfg = replace(cfg, data=replace(cfg.data, buckets=buckets))
        keys.append("data.buckets")
    repa = cfg.train.repa
    if repa.enabled and repa_dim is not None:
        if repa.encoder_dim is not None and repa.encoder_dim != repa_dim:
            raise ValueError(f"train.repa.encoder_dim={repa.encoder_dim} disagrees with {source}: its REPA features "
                             f"are {repa_dim} wide. Leave train.repa.encoder_dim unset to take them from the manifest")
        if repa.encoder_dim is None:
            cfg = replace(cfg, train=replace(cfg.train, repa=replace(repa, encoder_dim=repa_dim)))
            keys.append("train.repa.encoder_dim")
    if not keys:
        return cfg, ""
    notes = _assignments(dims, missing).split() if dims is not None else []
    if "train.repa.encoder_dim" in keys:
        notes.append(f"train.repa.encoder_dim={repa_dim}")
    if buckets and "data.buckets" in keys:
        notes.append(f"data.buckets=({len(buckets)} buckets)")
    if not cfg.data.resolution:
        notes.append(f"data.resolution={resolution}")
        cfg = replace(cfg, data=replace(cfg.data, resolution=resolution))
    if dims is not None:
        cfg = replace(cfg, model=cfg.model.with_input_dims(dims))
    return cfg, f"{' '.join(notes)} from {source}"


def _check_buckets(recipe: tuple[tuple[int, int], ...], data: tuple[tuple[int, int], ...], source: str) -> None:
    """data.buckets (for `plan` before shards exist) must be the manifest's when a recipe sets them."""
    if not recipe or set(recipe) == set(data):
        return
    only_recipe = sorted(set(recipe) - set(data))
    only_data = sorted(set(data) - set(recipe))
    first = (f"{only_recipe[0][0]}x{only_recipe[0][1]} is in data.buckets but not in the data" if only_recipe
             else f"{only_data[0][0]}x{only_data[0][1]} is in the data but not in data.buckets")
    raise ValueError(f"data.buckets disagrees with {source} ({len(recipe)} buckets against "
                     f"{len(data) or 'none'}): {first}. The manifest's buckets are what the loader batches by: "
                     "leave data.buckets unset to take them, or set them to the manifest's")


def check_grids(cfg: RunConfig, named: list[tuple[str, Manifest]]) -> None:
    """Every image size of the data (its buckets, else its square resolution) has sides that are
    multiples of autoencoder factor x patch size, and a token grid the position table covers."""
    for name, manifest in named:
        prov = manifest.provenance
        unit = prov.latent.factor * cfg.model.patch_size
        for height, width in prov.buckets or [[prov.resolution, prov.resolution]]:
            if height % unit or width % unit:
                raise ValueError(f"dataset {name!r}: its {height}x{width} px images are not multiples of "
                                 f"{unit} px (autoencoder factor {prov.latent.factor} x model.patch_size "
                                 f"{cfg.model.patch_size})")
            grid = (height // unit, width // unit)
            if max(grid) > cfg.model.pos_embed_max_size:
                raise ValueError(f"dataset {name!r}: its {height}x{width} px bucket is a {grid[0]}x{grid[1]} token "
                                 f"grid, beyond the position table's {cfg.model.pos_embed_max_size} per side: raise "
                                 f"model.pos_embed_max_size to at least {max(grid)}")


def check_repa(cfg: RunConfig, named: list[tuple[str, Manifest]]) -> None:
    """REPA on needs the encoder features in the shards (a mixture's datasets must share the encoder:
    `check_same_provenance` compares `encoders.repa` as it does the other encoders)."""
    if not cfg.train.repa.enabled:
        return
    for name, manifest in named:
        if manifest.provenance.repa_features() is None:
            raise ValueError(f"train.repa.weight={cfg.train.repa.weight} needs REPA features in the training shards, "
                             f"and dataset {name!r} has none (its manifest names no `encoders.repa`): prepare it "
                             "with `mmdit-scale prepare --repa-encoder PATH`, or set train.repa.weight=0")


def _assignments(dims: InputDims, names: tuple[str, ...]) -> str:
    return " ".join(f"model.{name}={getattr(dims, name)}" for name in names)


def absolute_data(cfg: RunConfig) -> RunConfig:
    """`cfg` with its local data paths (and explicit manifests) absolute, so the run's config.yaml
    still finds its data from any working directory (`sample`, `export`, `status`, a resume)."""
    def fix(value):
        if isinstance(value, str):
            return absolute(value) if value else value
        return tuple(replace(s, path=absolute(s.path), manifest=absolute(s.manifest) if s.manifest else "")
                     for s in value)

    return replace(cfg, data=replace(cfg.data, train=fix(cfg.data.train), val=fix(cfg.data.val)))


def check_sources(cfg: RunConfig) -> None:
    """Before any rank starts: every dataset of a data.train mixture has the first one's provenance
    (encoders and their dims, latent normalisation, storage), and so has data.val; and every image
    size of either fits the model (`check_grids`). ValueError naming the dataset and what differs
    (the loader checks provenance again on each rank)."""
    train = read_manifests(cfg.data.train)
    check_same_provenance(train)
    check_grids(cfg, train)
    check_repa(cfg, train)
    if cfg.data.null_text == "empty" and not os.path.isfile(null := null_text_location(cfg.data.train)):
        raise ValueError(f"data.null_text=empty needs the encoded empty string {null}, which `mmdit-scale prepare` "
                         "writes beside the manifest (this dataset was prepared before it did: prepare it again "
                         "into a new output), or set data.null_text=zeros")
    if cfg.data.val:
        val = read_manifests(cfg.data.val)
        check_same_provenance(val, reference=("the training data", train[0][1]))
        check_grids(cfg, val)
