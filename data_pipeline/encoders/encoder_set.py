"""All encoders of one prepare run, loaded on one device, encoding in batches."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from data_pipeline.encoders.autoencoder import describe_autoencoder, load_autoencoder
from data_pipeline.encoders.config import EncodersConfig
from data_pipeline.encoders.text import TextEncoder, describe_text_encoder
from data_pipeline.encoders.vision import VisionEncoder, describe_vision_encoder
from data_pipeline.manifest import AUTOENCODER, REPA_ENCODER, EncoderInfo, LatentInfo

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def quiet_hub_progress() -> None:
    """Loading bars per model would bury prepare's own progress bar."""
    import transformers

    transformers.utils.logging.disable_progress_bar()


def resolve_dtype(name: str, device: torch.device) -> str:
    """`auto` is fp32 on CPU (bf16 matmuls there are slow and lossy) and bf16 on GPU."""
    if name == "auto":
        return "fp32" if device.type == "cpu" else "bf16"
    return name


def describe_encoders(cfg: EncodersConfig, device: torch.device) -> tuple[dict[str, EncoderInfo], LatentInfo]:
    """Manifest provenance for `cfg` on `device`; reads configs and hashes weights, loads nothing."""
    dtype = resolve_dtype(cfg.dtype, device)
    ae_info, latent = describe_autoencoder(cfg.autoencoder, dtype)
    infos = {AUTOENCODER: ae_info}
    for name, spec in cfg.text_specs().items():
        infos[name] = describe_text_encoder(name, spec, cfg.tokens, dtype)
    if cfg.repa is not None:
        infos[REPA_ENCODER] = describe_vision_encoder(cfg.repa, dtype)
    return infos, latent


@dataclass
class EncoderSet:
    config: EncodersConfig
    device: torch.device
    autoencoder: object
    text: dict[str, TextEncoder]
    vision: VisionEncoder | None = None
    """REPA's encoder (`prepare --repa-encoder`), or None."""

    @classmethod
    def load(cls, cfg: EncodersConfig, device: torch.device) -> "EncoderSet":
        quiet_hub_progress()
        dtype = _DTYPES[resolve_dtype(cfg.dtype, device)]
        text = {name: TextEncoder(name, spec, cfg.tokens, device, dtype) for name, spec in cfg.text_specs().items()}
        vision = VisionEncoder(cfg.repa, device, dtype) if cfg.repa is not None else None
        return cls(config=cfg, device=device, autoencoder=load_autoencoder(cfg.autoencoder, device, dtype), text=text,
                   vision=vision)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> normalised latents (B, C, H/f, W/f), fp32 on CPU."""
        bs = self.config.batch_size
        return torch.cat([self.autoencoder.encode(images[i:i + bs].to(self.device)).float().cpu()
                          for i in range(0, len(images), bs)])

    def encode_repa(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> REPA features (B, grid^2, D), fp32 on CPU."""
        assert self.vision is not None
        bs = self.config.batch_size
        return torch.cat([self.vision.encode(images[i:i + bs]) for i in range(0, len(images), bs)])

    def truncations(self, caption: str) -> dict[str, str]:
        """{encoder: the text it encodes} for each encoder whose token limit cuts `caption` short."""
        return {name: cut for name, enc in self.text.items() if (cut := enc.truncated(caption)) is not None}

    def encode_captions(self, captions: list[str]) -> dict[str, dict[str, torch.Tensor]]:
        """{encoder: {"hidden": (B, T, D), "pooled": (B, P)?}} for every present text encoder."""
        bs = self.config.batch_size
        out: dict[str, dict[str, torch.Tensor]] = {}
        for name, enc in self.text.items():
            chunks = [enc.encode(captions[i:i + bs]) for i in range(0, len(captions), bs)]
            out[name] = {k: torch.cat([c[k] for c in chunks]).cpu() for k in chunks[0]}
        return out
