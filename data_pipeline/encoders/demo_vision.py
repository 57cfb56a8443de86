"""The demo's REPA encoder: a tiny DINOv2-shaped vision transformer, random and seeded, saved to disk
and loaded back through the same `from_pretrained` path as real DINOv2 weights.

Demo-only: the demo's 32 px pixel-space scenes have no pretrained encoder here (no model hub), so
`prepare --repa-encoder demo` builds this one. Random-init features are a weak target (a fixed
random projection of the patches, mixed by two attention layers), which is enough to exercise
REPA end to end; whether it helps the demo is for a measurement to say. Its 4 px patches at 32 px
give an 8x8 grid, the demo model's token grid, so no interpolation is needed there.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from data_pipeline.atomic import temp_name

DEMO_VISION_DIRNAME = "demo_repa"
IMAGE_SIZE, PATCH_SIZE, HIDDEN, LAYERS, HEADS = 32, 4, 64, 2, 2
SEED = 4


def build_demo_vision_encoder(root: Path) -> str:
    """Build (or reuse) the demo vision encoder under `root/demo_repa`; returns its absolute path.
    Built under a temporary name and renamed into place, like the demo text encoders."""
    final = (root / DEMO_VISION_DIRNAME).resolve()
    if not (final / "config.json").exists():
        import torch
        from transformers import Dinov2Config, Dinov2Model

        root.mkdir(parents=True, exist_ok=True)
        tmp = temp_name(final)
        shutil.rmtree(tmp, ignore_errors=True)
        config = Dinov2Config(image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, hidden_size=HIDDEN,
                              num_hidden_layers=LAYERS, num_attention_heads=HEADS, mlp_ratio=2)
        torch.manual_seed(SEED)
        Dinov2Model(config).save_pretrained(tmp)
        try:
            os.rename(tmp, final)
        except OSError:  # another process finished first; its files are identical
            shutil.rmtree(tmp, ignore_errors=True)
    return str(final)
