"""Export a checkpoint's weights for use outside this framework.

- `diffusers`: a `SD3Transformer2DModel` directory (config.json + safetensors) that
  `SD3Transformer2DModel.from_pretrained(DIR)` loads and that computes what our MMDiT computes
  (diffusers takes the timestep as 1000 * t); beside it `scheduler_config.json`, the
  FlowMatchEulerDiscreteScheduler with the run's shift (`...Scheduler.from_pretrained(DIR)`), and
  `sampling.json`, what a StableDiffusion3Pipeline needs to reproduce `mmdit-scale sample`
  (docs/sampling.md): the null condition, the text length, the sigma grid.
- `safetensors`: one file of our consolidated fp32 weights (MMDiT parameter names), the model
  config as JSON in the file's metadata under `mmdit_config`.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

FORMATS = ("diffusers", "safetensors")
CONFIG_METADATA_KEY = "mmdit_config"


def export_checkpoint(path: str | os.PathLike, fmt: str, out: str | os.PathLike, ema: bool = False) -> Path:
    """Write the checkpoint that `path` resolves to (a run, checkpoints or checkpoint dir) as `fmt`
    at `out`; returns the checkpoint directory that was exported."""
    from mmdit_scale.run import checkpoints

    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; expected one of {FORMATS}")
    ckpt = checkpoints.resolve(path)
    model = checkpoints.build_model(ckpt, ema=ema)
    out = Path(out)
    if fmt == "diffusers":
        from diffusers import FlowMatchEulerDiscreteScheduler

        from mmdit_scale.interop.diffusers_sd3 import to_diffusers

        cfg = checkpoints.load_run_config(ckpt)
        to_diffusers(model).save_pretrained(out, safe_serialization=True)
        # The shift at the run's own resolution; the sampler applies it to the sigmas it is given.
        FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=cfg.flow.shift).save_pretrained(out)
        (out / SAMPLING_FILE).write_text(json.dumps(sampling_notes(cfg), indent=1) + "\n")
        readable(out)
    else:
        from safetensors.torch import save_file

        out.parent.mkdir(parents=True, exist_ok=True)
        save_file(model.state_dict(), str(out), metadata={CONFIG_METADATA_KEY: json.dumps(asdict(model.cfg))})
        readable(out)
    return ckpt


SAMPLING_FILE = "sampling.json"


def sampling_notes(cfg) -> dict:
    """What StableDiffusion3Pipeline needs, beyond the weights and the scheduler, to give what
    `mmdit-scale sample` gives for the same prompts, noise and guidance."""
    return {
        "shift": cfg.flow.shift,
        "resolution": cfg.data.resolution,
        "null_condition": (
            "the encoded empty string (data.null_text=empty): the pipeline's own negative prompt ''"
            if cfg.data.null_text == "empty" else
            "zeros: pass negative_prompt_embeds and negative_pooled_prompt_embeds of zeros, the text-encoder "
            "dropout the model was trained with, not the encoded empty string"),
        "sigmas": "numpy.linspace(1, 0, num_inference_steps + 1)[:-1] (the scheduler shifts them and ends at 0)",
        "max_sequence_length": _text_tokens(cfg),
    }


def _text_tokens(cfg) -> int | str:
    """The training text's tokens per encoder (the pipeline's max_sequence_length for T5; CLIP's
    tokenizers pad to 77), from the training data's manifest."""
    from data_pipeline.locate import first_manifest

    try:
        encoders = first_manifest(cfg.data.train)[1].provenance.encoders
        return int(next(info.tokens for name, info in encoders.items() if info.tokens))
    except (ValueError, StopIteration, TypeError):
        return "the text length (`tokens`) of the training shards' manifest, which is not readable here"


def readable(path: Path) -> None:
    """Give what an export wrote the permissions the user's umask allows (some writers use 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
        os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~umask)
