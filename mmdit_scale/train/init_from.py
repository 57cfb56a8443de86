"""`train.init_from`: start a fresh run from existing weights (weights only; step 0, fresh optimizer).

Three kinds of source: a run dir or checkpoints dir (its `latest` checkpoint), a checkpoint dir (its
consolidated fp32 `model.safetensors`), or a diffusers SD3 transformer dir, which is how released SD3
weights are fine-tuned (a pipeline root with a `transformer/` subfolder works too). A diffusers
source must have the recipe's model layout; a mismatch names every differing field, which says far
more than the shape error it would otherwise cause.

Missing QK-norm scales are the one allowed difference: the SD3 paper adds QK-norm to a pretrained
model before high-resolution finetuning (SD3 Medium has none, SD3.5 has them), so with
`model.qk_norm=true` and a source without them the new scales keep their initial value of one (the
norm then only rescales q and k to unit RMS). A resumed run ignores init_from: its own checkpoint wins.

Importing this module does not import torch: the launcher calls `check_init_source` before any rank
starts, so a wrong path fails in a second rather than after the job has waited for its allocation.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from mmdit_scale.run import checkpoints, layout

if TYPE_CHECKING:
    import torch

    from mmdit_scale.config import RunConfig
    from mmdit_scale.model import MMDiT
    from mmdit_scale.model.mmdit import Gathered

SD3_CLASS = "SD3Transformer2DModel"
DIFFUSERS_CONFIG = "config.json"
PIPELINE_SUBFOLDER = "transformer"
CHECKPOINT, DIFFUSERS = "checkpoint", "diffusers"
ACCEPTED = (f"a run dir or checkpoints dir with a `latest` checkpoint; a checkpoint dir (step_N/ with "
            f"{layout.STATE_FILE}); or a diffusers {SD3_CLASS} dir ({DIFFUSERS_CONFIG} with "
            f"_class_name {SD3_CLASS}, or a pipeline root with {PIPELINE_SUBFOLDER}/)")
_QK_NORM_SUFFIXES = (".q_norm.weight", ".k_norm.weight")


@dataclass(frozen=True)
class InitSource:
    """Where the initial weights are read from."""

    kind: str
    """CHECKPOINT or DIFFUSERS."""
    path: Path
    """The checkpoint dir, or the directory holding the diffusers transformer's config.json."""
    note: str = ""
    """What was inferred on the way (e.g. a pipeline's subfolder), for the run's log."""


def _diffusers_class(config: Path) -> str | None:
    """`_class_name` of a diffusers config.json; None if the file says nothing of the kind."""
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read {config}: {err}") from None
    return data.get("_class_name") if isinstance(data, dict) else None


def find_init_source(source: str | os.PathLike) -> InitSource:
    """Which of the three accepted kinds `source` is; ValueError naming the path and the kinds otherwise."""
    path = Path(source)
    if not path.exists():
        raise ValueError(f"train.init_from={source} does not exist; expected {ACCEPTED}")
    for directory, note in ((path, ""), (path / PIPELINE_SUBFOLDER,
                                         f"init_from: {path} is a diffusers pipeline; using its "
                                         f"{PIPELINE_SUBFOLDER}/ subfolder")):
        config = directory / DIFFUSERS_CONFIG
        if not config.is_file():
            continue
        found = _diffusers_class(config)
        if found == SD3_CLASS:
            return InitSource(DIFFUSERS, directory, note)
        if found is not None:
            raise ValueError(f"train.init_from={source}: {config} describes a diffusers {found}, not an "
                             f"{SD3_CLASS}; expected {ACCEPTED}")
    try:
        return InitSource(CHECKPOINT, checkpoints.resolve(path))
    except FileNotFoundError:
        raise ValueError(f"train.init_from={source} is none of the accepted kinds: {ACCEPTED}") from None
    except ValueError as err:
        raise ValueError(f"train.init_from={source}: {err}") from None


def check_init_source(cfg: "RunConfig", workdir: Path | None = None) -> InitSource | None:
    """Fail fast, without torch: the recipe's `train.init_from` (relative to `workdir`, default the
    current directory) is one of the accepted kinds. None when the recipe has no init_from."""
    if not cfg.train.init_from:
        return None
    return find_init_source(Path(workdir or ".") / cfg.train.init_from)


def load_initial_weights(model: "MMDiT", source: str, ema: bool = False,
                         gathered: "Gathered | None" = None) -> list[str]:
    """Copy `source`'s weights (a checkpoint's EMA with `ema`) into `model` (any dtype on disk, cast
    to the model's); returns log lines.

    `gathered(params)` makes sharded parameters whole while they are written (train/zero_init.py);
    every rank then reads the source and writes the same tensors in the same order. A checkpoint's
    tensors are read one at a time, so the source never exists whole in memory either.

    Raises ValueError when the source is not usable; the model may then be partly overwritten.
    """
    from mmdit_scale.model.mmdit import whole

    gathered = gathered or whole
    found = find_init_source(source)
    lines = [found.note] if found.note else []
    if found.kind == DIFFUSERS:
        if ema:
            raise ValueError(f"train.init_from={source} is a diffusers transformer, which holds one set of weights: "
                             "train.init_from_ema applies to checkpoint sources (export --ema writes EMA weights)")
        return lines + _load_diffusers(model, found.path, source, gathered)
    try:
        path = checkpoints.weights_file(found.path, ema=ema)
    except FileNotFoundError as err:
        raise ValueError(f"train.init_from={source}: {err}") from None
    from safetensors import safe_open

    with safe_open(path, framework="pt") as weights:
        keys = list(weights.keys())
        fresh_norms = _fresh_norms(_own(model), keys, source)
        count = _copy_in(model, ((key, weights.get_tensor(key)) for key in keys), fresh_norms, source, gathered)
    what = "EMA tensors" if ema else "tensors"
    return lines + [f"init_from: {count} {what} from {found.path}"] + _norm_lines(found.path, fresh_norms)


def resolved_init(cfg: "RunConfig", workdir: Path | None = None) -> tuple["RunConfig", str]:
    """`cfg` with train.init_from made the absolute directory it resolves to and train.init_from_step
    the step of that checkpoint, and a line saying so ('' without init_from): what a fine-tune's
    config and log record, whatever `latest` later names. ValueError for a source that is not usable."""
    from dataclasses import replace

    found = check_init_source(cfg, workdir)
    if found is None:
        return cfg, ""
    step = checkpoints.read_state(found.path).get("step") if found.kind == CHECKPOINT else None
    train = replace(cfg.train, init_from=str(found.path.resolve()), init_from_step=step)
    what = f"step {step}" if step is not None else "diffusers weights"
    return replace(cfg, train=train), (f"init_from {train.init_from} ({what}"
                                       f"{', EMA' if cfg.train.init_from_ema else ''})")


def _load_diffusers(model: "MMDiT", directory: Path, source: str, gathered: "Gathered") -> list[str]:
    from mmdit_scale.interop.diffusers_sd3 import (POS_EMBED_KEY, check_pos_table, config_differences,
                                                   iter_state_from_diffusers, key_map, read_sd3_transformer)

    from mmdit_scale.model.embeddings import sincos_2d_table

    layout, sd = read_sd3_transformer(directory)
    differences = config_differences(model.cfg, layout)
    if differences:
        raise ValueError(f"train.init_from={source}: the diffusers transformer in {directory} does not have the "
                         "recipe's model layout: " + "; ".join(differences))
    # The stored table must be the one its own config implies; ours is recomputed from the recipe.
    table = sincos_2d_table(model.cfg.hidden_size, layout.pos_embed_max_size, layout.base_size)
    check_pos_table(table, sd.pop(POS_EMBED_KEY))
    resized = ([f"init_from: the position table is recomputed for pos_embed_max_size {model.cfg.pos_embed_max_size} "
                f"(the source's was {layout.pos_embed_max_size})"]
               if layout.pos_embed_max_size != model.cfg.pos_embed_max_size else [])
    stored = next(iter(sd.values())).dtype
    fresh_norms = _fresh_norms(_own(model), [ours for ours, _, _ in key_map(layout)], source)
    # release=True: each diffusers tensor is freed once copied, so the source never exists twice.
    count = _copy_in(model, iter_state_from_diffusers(sd, layout, release=True), fresh_norms, source, gathered)
    into = next(model.parameters()).dtype
    return ([f"init_from: {count} tensors from diffusers {SD3_CLASS} {directory} "
             f"({_dtype_name(stored)} on disk, copied into {_dtype_name(into)} weights)"]
            + resized + _norm_lines(directory, fresh_norms))


def _own(model: "MMDiT") -> dict[str, "torch.nn.Parameter"]:
    """The tensors a checkpoint holds: the model's parameters (its one buffer is recomputed)."""
    return dict(model.named_parameters())


def _fresh_norms(own: dict[str, "torch.Tensor"], incoming: Iterable[str], source: str) -> list[str]:
    """The model's QK-norm scales the source lacks; ValueError for any other missing or extra tensor."""
    incoming = set(incoming)
    unexpected = sorted(incoming - set(own))
    missing = sorted(set(own) - incoming)
    fresh = [k for k in missing if k.endswith(_QK_NORM_SUFFIXES)]
    if unexpected or len(fresh) != len(missing):
        other = [k for k in missing if k not in fresh]
        raise ValueError(f"train.init_from={source}: its weights do not fit model: (unexpected {unexpected[:5]}, "
                         f"missing {other[:5]}); only QK-norm scales may be missing")
    return fresh


def _copy_in(model: "MMDiT", weights: Iterable[tuple[str, "torch.Tensor"]], fresh_norms: list[str],
             source: str, gathered: "Gathered") -> int:
    """Copy each (key, tensor) into the model's own tensor, casting dtype; the fresh norms become one."""
    import torch

    own = _own(model)
    count = 0
    with torch.no_grad():
        for key, value in weights:
            param = own[key]
            shape = getattr(param, "ds_shape", param.shape)  # a ZeRO-3 shard's own shape is not the tensor's
            if value.shape != shape:
                raise ValueError(f"train.init_from={source}: shapes differ for {key} "
                                 f"({tuple(value.shape)} in the source, {tuple(shape)} in the model)")
            with gathered([param]):
                param.copy_(value)
            count += 1
        for key in fresh_norms:
            with gathered([own[key]]):
                own[key].fill_(1.0)
    return count


def _norm_lines(origin: Path, fresh_norms: list[str]) -> list[str]:
    if not fresh_norms:
        return []
    return [f"init_from: {origin} has no QK-norm weights; {len(fresh_norms)} new QK-norm scales "
            "start at one (model.qk_norm=true)"]


def _dtype_name(dtype: "torch.dtype") -> str:
    return str(dtype).removeprefix("torch.")
