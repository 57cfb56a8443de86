"""The frozen vision encoder whose patch features REPA aligns the model to (`prepare --repa-encoder`).

Any transformers vision transformer that `AutoModel.from_pretrained(path)` loads and whose config
has `image_size` and `patch_size` (DINOv2, DINOv2 with registers, ViT). Images are resized to the
encoder's own input resolution, so every sample stores the same (grid^2, hidden) features whatever
its bucket; the trainer interpolates that grid to the model's token grid. The features are the
last hidden state's patch tokens: the CLS and register tokens in front of them are dropped.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from data_pipeline.encoders.config import VisionEncoderSpec
from data_pipeline.encoders.files import weights_sha256
from data_pipeline.manifest import EncoderInfo

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
"""Normalisation when the encoder directory has no preprocessor_config.json (DINOv2's own)."""


def _normalisation(path: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    try:
        config = json.loads((Path(path) / "preprocessor_config.json").read_text())
        return tuple(config["image_mean"]), tuple(config["image_std"])
    except (OSError, ValueError, KeyError):
        return IMAGENET_MEAN, IMAGENET_STD


def _geometry(config: dict, path: str) -> tuple[int, int, int]:
    """(image_size, grid side, hidden width) from a vision transformer's config."""
    try:
        size, patch, hidden = (int(config[k]) for k in ("image_size", "patch_size", "hidden_size"))
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"REPA encoder {path}: config.json lacks image_size, patch_size or hidden_size "
                         f"({err}); expected a vision transformer such as DINOv2") from None
    if size % patch:
        raise ValueError(f"REPA encoder {path}: image_size {size} is not a multiple of patch_size {patch}")
    return size, size // patch, hidden


class VisionEncoder:
    """`encode(images (B, 3, H, W) in [-1, 1]) -> (B, grid^2, hidden)` patch features, fp32 on CPU."""

    def __init__(self, spec: VisionEncoderSpec, device: torch.device, dtype: torch.dtype):
        from transformers import AutoModel

        self.model = AutoModel.from_pretrained(spec.path, dtype=dtype).to(device).eval()
        self.size, self.grid, self.hidden = _geometry(self.model.config.to_dict(), spec.path)
        mean, std = _normalisation(spec.path)
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1)
        self.device, self.dtype = device, dtype

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.to(self.device, torch.float32) + 1) / 2  # (B, 3, H, W) in [0, 1]
        x = F.interpolate(x, size=(self.size, self.size), mode="bicubic", antialias=True, align_corners=False)
        x = (x.clamp(0, 1) - self.mean) / self.std  # (B, 3, S, S)
        hidden = self.model(pixel_values=x.to(self.dtype)).last_hidden_state  # (B, prefix + grid^2, D)
        return hidden[:, hidden.shape[1] - self.grid ** 2:].float().cpu()  # (B, grid^2, D): patches last


def describe_vision_encoder(spec: VisionEncoderSpec, dtype: str) -> EncoderInfo:
    """Provenance from config.json and the weight hash, without loading the weights."""
    config_path = Path(spec.path) / "config.json"
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as err:
        raise FileNotFoundError(f"REPA encoder: cannot read {config_path}: {err}") from err
    size, grid, hidden = _geometry(config, spec.path)
    return EncoderInfo(kind="vision", model_dir=spec.path, weights_sha256=weights_sha256(spec.path), dtype=dtype,
                       dims={"hidden": hidden, "grid": grid, "image_size": size})
