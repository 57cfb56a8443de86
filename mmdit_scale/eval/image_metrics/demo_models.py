"""Tiny seeded feature models for the demo and the tests: they exercise the metrics end to end
without external weights.

They are saved to disk and loaded back through the same code as real weights (`extractors.py`):
a TorchScript pool-feature network with the FID Inception's call signature, and a small CLIPModel
(vision + text) whose tokenizer is the demo encoders' CLIP vocabulary. Their weights are random, so
their FID, CMMD and CLIP score check the plumbing and track change within one setup; they say
nothing about image quality and are not comparable to published numbers.
"""
from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import torch
from torch import nn

from data_pipeline.atomic import temp_name

DIRNAME = "metric-models"
INCEPTION_NAME = "pool-features.pt"
CLIP_NAME = "clip"
SEED = 7


class PoolFeatures(nn.Module):
    """Two strided convolutions and a global average pool: the Inception file's interface
    (float images in [0, 255] -> (N, width) features), none of its knowledge."""

    def __init__(self, width: int = 64):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(32, width, 3, stride=2, padding=1)

    def forward(self, images: torch.Tensor, return_features: bool = True) -> torch.Tensor:
        x = images / 127.5 - 1.0  # (N, 3, H, W)
        x = torch.tanh(self.conv2(torch.relu(self.conv1(x))))  # (N, width, H/4, W/4)
        return x.mean(dim=(2, 3))  # (N, width)


def save_pool_features(path: Path, seed: int = SEED, width: int = 64) -> Path:
    """A random PoolFeatures network as a TorchScript file at `path`."""
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.")
        torch.jit.save(torch.jit.script(PoolFeatures(width).eval()), str(path))
    return path


def save_clip(out: Path, corpus: list[str], image_size: int = 32, seed: int = SEED) -> Path:
    """A random two-layer CLIPModel, its tokenizer and image processor, as `save_pretrained` writes them."""
    import transformers
    from transformers import CLIPConfig, CLIPModel

    from data_pipeline.encoders.demo import clip_tokenizer

    tokenizer = clip_tokenizer(corpus)
    vocab = tokenizer.get_vocab()
    tower = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    config = CLIPConfig(
        text_config=dict(tower, vocab_size=len(vocab), max_position_embeddings=tokenizer.model_max_length,
                         bos_token_id=vocab[tokenizer.bos_token], eos_token_id=vocab[tokenizer.eos_token],
                         pad_token_id=vocab[tokenizer.eos_token]),
        vision_config=dict(tower, image_size=image_size, patch_size=max(1, image_size // 4)),
        projection_dim=32)
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    processor_cls = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    processor_cls(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
                  ).save_pretrained(out)
    return out


def build_metric_models(root: Path, corpus: list[str], image_size: int = 32) -> tuple[Path, Path]:
    """(Inception-interface file, CLIP directory) under root/metric-models, built once: built under a
    temporary name and renamed into place, so a complete set is reused as is."""
    final = root / DIRNAME
    if not (final / CLIP_NAME / "config.json").is_file():
        root.mkdir(parents=True, exist_ok=True)
        tmp = temp_name(final)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_pool_features(tmp / INCEPTION_NAME)
        save_clip(tmp / CLIP_NAME, corpus, image_size)
        try:
            os.rename(tmp, final)
        except OSError:  # another process finished first; its files are identical
            shutil.rmtree(tmp, ignore_errors=True)
    return (final / INCEPTION_NAME).resolve(), (final / CLIP_NAME).resolve()
