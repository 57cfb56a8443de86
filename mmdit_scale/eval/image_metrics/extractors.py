"""The feature models of the image metrics, loaded only from local paths the user gives.

- Inception-v3 (FID): a TorchScript file called as `model(images, return_features=True)` on
  (N, 3, H, W) float images in [0, 255], returning (N, D) pool features. That is the interface of
  `inception-2015-12-05.pt`, the TensorFlow FID network ported by NVlabs (StyleGAN2-ADA/3 metrics,
  also clean-fid's), which resizes to 299 px itself; D = 2048. TorchScript carries its own
  architecture, so no extra package has to match it.
- CLIP (CMMD, CLIP score): a directory written by transformers' `CLIPModel.save_pretrained`, with its
  tokenizer and `preprocessor_config.json` (e.g. a copy of openai/clip-vit-large-patch14).

Each has a fingerprint (sha256 of its weights) that the reference statistics record, so statistics
from one network are never compared with features from another.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

INCEPTION_FILE = "inception-2015-12-05.pt"
INCEPTION_SOURCE = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"
CLIP_FILES = ("config.json", "model.safetensors", "preprocessor_config.json", "tokenizer files")


class MissingWeights(FileNotFoundError):
    """A metric's feature model is not given or not where it was said to be; the message names the
    file to supply and the key or flag to supply it with."""


def inception_missing(path: str, where: str) -> MissingWeights:
    got = f"{path} does not exist" if path else "no path is given"
    return MissingWeights(
        f"FID needs the Inception-v3 feature network and {got}: download {INCEPTION_FILE} (the TorchScript "
        f"FID Inception of NVlabs' metrics, {INCEPTION_SOURCE}) on a machine with internet and set {where} "
        "to its local path")


def clip_missing(path: str, where: str) -> MissingWeights:
    got = f"{path} is not a CLIP directory (no config.json)" if path else "no path is given"
    return MissingWeights(
        f"CMMD and CLIP score need a CLIP model and {got}: save one with transformers "
        "(`CLIPModel.from_pretrained('openai/clip-vit-large-patch14').save_pretrained(DIR)` and the same for "
        f"`CLIPProcessor`, giving {', '.join(CLIP_FILES)}) and set {where} to DIR")


def check_paths(inception: str, clip: str, inception_key: str, clip_key: str) -> None:
    """MissingWeights unless both feature models are where the paths say (cheap: no loading)."""
    if not inception or not Path(inception).is_file():
        raise inception_missing(inception, inception_key)
    if not clip or not (Path(clip) / "config.json").is_file():
        raise clip_missing(clip, clip_key)


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class Inception:
    """Pool features of images; `fingerprint` is the file's sha256."""

    model: object
    fingerprint: str
    device: str = "cpu"

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "cpu", where: str = "--inception") -> "Inception":
        path = Path(path) if path else Path("")
        if not str(path) or not path.is_file():
            raise inception_missing(str(path) if str(path) not in ("", ".") else "", where)
        import torch

        with warnings.catch_warnings():  # TorchScript is deprecated, but it is the format the FID network ships in
            warnings.filterwarnings("ignore", message=r"`torch\.jit\.")
            model = torch.jit.load(str(path), map_location=device).eval()
        return cls(model=model, fingerprint=_file_sha256(path), device=device)

    def __call__(self, images: np.ndarray, batch: int = 64) -> np.ndarray:
        """(N, H, W, 3) uint8 -> (N, D) float64."""
        import torch

        out = []
        with torch.no_grad():
            for i in range(0, len(images), batch):
                x = torch.from_numpy(np.ascontiguousarray(images[i:i + batch])).permute(0, 3, 1, 2)  # (B, 3, H, W)
                out.append(self.model(x.float().to(self.device), return_features=True).double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0))


@dataclass
class Clip:
    """CLIP image and text embeddings (projected, not normalised); `fingerprint` is the weights' sha256."""

    model: object
    processor: object
    tokenizer: object
    fingerprint: str
    device: str = "cpu"

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "cpu", where: str = "--clip") -> "Clip":
        if not path or not (Path(path) / "config.json").is_file():
            raise clip_missing(str(path) if path else "", where)
        import transformers
        from transformers import AutoTokenizer, CLIPModel

        from data_pipeline.encoders.files import weights_sha256

        # The PIL processor: the default one wants torchvision, which this project does not install.
        processor_cls = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
        model = CLIPModel.from_pretrained(str(path)).to(device).eval()
        return cls(model=model, processor=processor_cls.from_pretrained(str(path)),
                   tokenizer=AutoTokenizer.from_pretrained(str(path)),
                   fingerprint=weights_sha256(str(path)) or "", device=device)

    def images(self, images: np.ndarray, batch: int = 64) -> np.ndarray:
        """(N, H, W, 3) uint8 -> (N, P) float64."""
        import torch

        out = []
        with torch.no_grad():
            for i in range(0, len(images), batch):
                pixels = self.processor(images=list(images[i:i + batch]), return_tensors="pt")["pixel_values"]
                emb = self.model.get_image_features(pixel_values=pixels.to(self.device))
                out.append(_pooled(emb).double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0))

    def texts(self, prompts: list[str], batch: int = 64) -> np.ndarray:
        """N prompts -> (N, P) float64; prompts past the tokenizer's limit are cut, as CLIP score does."""
        import torch

        out = []
        with torch.no_grad():
            for i in range(0, len(prompts), batch):
                tokens = self.tokenizer(prompts[i:i + batch], padding=True, truncation=True, return_tensors="pt")
                emb = self.model.get_text_features(input_ids=tokens["input_ids"].to(self.device),
                                                   attention_mask=tokens["attention_mask"].to(self.device))
                out.append(_pooled(emb).double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0))


def _pooled(output):
    """transformers 5 returns a model output whose pooler_output is the projected embedding; 4.x a tensor."""
    return output if hasattr(output, "double") else output.pooler_output


def resolve_config_paths(cfg):
    """`cfg` (a RunConfig) with eval.metrics' paths made absolute, checked before any rank starts when
    eval.image_every is on: MissingWeights naming the file to supply and the key to set."""
    from dataclasses import replace

    m = cfg.eval.metrics
    absolute = {name: str(Path(value).expanduser().resolve()) if value else ""
                for name, value in (("inception", m.inception), ("clip", m.clip), ("reference", m.reference))}
    if cfg.eval.image_every:
        check_paths(m.inception and absolute["inception"], m.clip and absolute["clip"],
                    "eval.metrics.inception", "eval.metrics.clip")
    return replace(cfg, eval=replace(cfg.eval, metrics=replace(m, **absolute)))
