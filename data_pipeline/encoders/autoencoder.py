"""Autoencoders that turn RGB images in [-1, 1] into the normalised latents the model consumes.

Both expose `encode(x) -> (z - shift) * scale` and `decode(latent) -> x`, plus `describe()` for
the manifest, which reads only configuration and weight hashes (no model load).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from data_pipeline.encoders.config import AutoencoderSpec
from data_pipeline.encoders.files import weights_sha256
from data_pipeline.manifest import EncoderInfo, LatentInfo


class PixelAutoencoder:
    """Lossless space-to-depth: (3, H, W) -> (3 f^2, H/f, W/f), no weights, scale 1, shift 0.

    The demo's autoencoder: samples decode exactly (bf16 storage keeps every 8-bit pixel, since
    its rounding error stays under half a grey level), so a demo run can be scored on pixels.
    """

    kind = "pixel"

    def __init__(self, factor: int = 2):
        self.factor = factor
        self.channels = 3 * factor * factor
        self.scale = 1.0
        self.shift = 0.0

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_unshuffle(x, self.factor)  # (B, 3 f^2, H/f, W/f)

    @torch.no_grad()
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(latent.float(), self.factor)  # (B, 3, H, W)

    def describe(self, dtype: str) -> tuple[EncoderInfo, LatentInfo]:
        return (EncoderInfo(kind=self.kind, model_dir=None, weights_sha256=None, dtype=dtype,
                            dims={"channels": self.channels, "factor": self.factor}),
                LatentInfo(channels=self.channels, factor=self.factor, scale=self.scale, shift=self.shift))


def _vae_geometry(config: dict) -> tuple[int, int, float, float]:
    channels = int(config["latent_channels"])
    factor = 2 ** (len(config["block_out_channels"]) - 1)
    scale = float(config.get("scaling_factor") or 1.0)
    shift = float(config.get("shift_factor") or 0.0)
    return channels, factor, scale, shift


def describe_vae(path: str, dtype: str) -> tuple[EncoderInfo, LatentInfo]:
    from diffusers import AutoencoderKL

    channels, factor, scale, shift = _vae_geometry(dict(AutoencoderKL.load_config(path)))
    return (EncoderInfo(kind="sd3_vae", model_dir=path, weights_sha256=weights_sha256(path), dtype=dtype,
                        dims={"channels": channels, "factor": factor}),
            LatentInfo(channels=channels, factor=factor, scale=scale, shift=shift))


class VaeAutoencoder:
    """SD3's autoencoder through diffusers `AutoencoderKL` (16 channels, factor 8).

    Encodes with the posterior mean rather than a sample: the shards then depend only on the
    image, so reruns are byte-identical and the stored latent is the one a user can reproduce.
    """

    kind = "sd3_vae"

    def __init__(self, path: str, device: torch.device, dtype: torch.dtype):
        import diffusers
        from diffusers import AutoencoderKL

        diffusers.utils.logging.disable_progress_bar()
        self.vae = AutoencoderKL.from_pretrained(path, torch_dtype=dtype).to(device).eval()
        self.channels, self.factor, self.scale, self.shift = _vae_geometry(dict(self.vae.config))
        self.device, self.dtype = device, dtype

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        z = self.vae.encode(x.to(self.device, self.dtype)).latent_dist.mode()  # (B, C, H/f, W/f)
        return ((z - self.shift) * self.scale).float()

    @torch.no_grad()
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        z = latent.to(self.device, self.dtype) / self.scale + self.shift
        return self.vae.decode(z).sample.float()  # (B, 3, H, W)


def load_autoencoder(spec: AutoencoderSpec, device: torch.device, dtype: torch.dtype):
    if spec.kind == "pixel":
        return PixelAutoencoder(spec.factor)
    return VaeAutoencoder(spec.path, device, dtype)


def describe_autoencoder(spec: AutoencoderSpec, dtype: str) -> tuple[EncoderInfo, LatentInfo]:
    if spec.kind == "pixel":
        return PixelAutoencoder(spec.factor).describe("fp32")
    assert spec.path is not None
    return describe_vae(spec.path, dtype)

