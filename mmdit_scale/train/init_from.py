"""`train.init_from`: start a fresh run from another run's weights (weights only; step 0, fresh optimizer).

Accepts a run dir, a checkpoints dir or a checkpoint dir (its consolidated fp32 `model.safetensors`).
Missing QK-norm scales are the one allowed difference: the SD3 paper adds QK-norm to a pretrained
model before high-resolution finetuning, so with `model.qk_norm=true` and a source without them
the new scales keep their initial value of one (the norm then only rescales q and k to unit RMS).
A resumed run ignores init_from: its own checkpoint wins.
"""
from __future__ import annotations

from pathlib import Path

import torch

from mmdit_scale.model import MMDiT
from mmdit_scale.train import ckpt_files

_QK_NORM_SUFFIXES = (".q_norm.weight", ".k_norm.weight")


def load_initial_weights(model: MMDiT, source: str) -> list[str]:
    """Copy `source`'s weights into `model`; returns log lines describing what was done."""
    ckpt = ckpt_files.resolve(Path(source))
    weights = ckpt_files.load_weights(ckpt)
    own = model.state_dict()
    unexpected = sorted(set(weights) - set(own))
    missing = sorted(set(own) - set(weights))
    fresh_norms = [k for k in missing if k.endswith(_QK_NORM_SUFFIXES)]
    if unexpected or len(fresh_norms) != len(missing):
        other = [k for k in missing if k not in fresh_norms]
        raise ValueError(f"train.init_from={source}: its weights do not fit model: (unexpected {unexpected[:5]}, "
                         f"missing {other[:5]}); only QK-norm scales may be missing")
    wrong = [k for k in weights if weights[k].shape != own[k].shape]
    if wrong:
        raise ValueError(f"train.init_from={source}: shapes differ for {wrong[:5]} "
                         f"(e.g. {tuple(weights[wrong[0]].shape)} vs {tuple(own[wrong[0]].shape)})")
    with torch.no_grad():
        for key, value in weights.items():
            own[key].copy_(value)
        for key in fresh_norms:
            own[key].fill_(1.0)
    lines = [f"init_from: {len(weights)} tensors from {ckpt}"]
    if fresh_norms:
        lines.append(f"init_from: {ckpt} has no QK-norm weights; {len(fresh_norms)} new QK-norm scales "
                     "start at one (model.qk_norm=true)")
    return lines
