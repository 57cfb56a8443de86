"""Export a checkpoint's weights for use outside this framework.

- `diffusers`: a `SD3Transformer2DModel` directory (config.json + safetensors) that
  `SD3Transformer2DModel.from_pretrained(DIR)` loads and that computes what our MMDiT computes
  (diffusers takes the timestep as 1000 * t).
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
        from mmdit_scale.interop.diffusers_sd3 import to_diffusers

        to_diffusers(model).save_pretrained(out, safe_serialization=True)
    else:
        from safetensors.torch import save_file

        out.parent.mkdir(parents=True, exist_ok=True)
        save_file(model.state_dict(), str(out), metadata={CONFIG_METADATA_KEY: json.dumps(asdict(model.cfg))})
    return ckpt
