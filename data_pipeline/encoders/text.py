"""CLIP-L / CLIP-G / T5 text encoders through transformers, as SD3 uses them (reference card 2).

Captions are padded to `tokens` (77) and encoded WITHOUT an attention mask, like the reference
pipelines: CLIP is causal, so its pad positions carry real values, and T5 attends to its pads.
CLIP gives its penultimate hidden states (layer -2, before the final LayerNorm) plus the
projected pooled vector; T5 gives its last hidden state.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from data_pipeline.encoders.config import TextEncoderSpec
from data_pipeline.encoders.files import tokenizer_sha256, weights_sha256
from data_pipeline.manifest import EncoderInfo

TEXT_KINDS = {"clip_l": "clip", "clip_g": "clip", "t5": "t5"}


class TextEncoder:
    """One loaded text encoder. `encode(captions)` -> {"hidden": (B, T, D), "pooled": (B, P)?}."""

    def __init__(self, name: str, spec: TextEncoderSpec, tokens: int, device: torch.device, dtype: torch.dtype):
        from transformers import AutoTokenizer, CLIPTextModelWithProjection, T5EncoderModel

        self.name, self.kind, self.tokens = name, TEXT_KINDS[name], tokens
        self.device = device
        self.tokenizer = AutoTokenizer.from_pretrained(spec.tokenizer_dir)
        model_cls = CLIPTextModelWithProjection if self.kind == "clip" else T5EncoderModel
        self.model = model_cls.from_pretrained(spec.path, dtype=dtype).to(device).eval()

    def truncated(self, caption: str) -> str | None:
        """The part of `caption` this encoder sees when it is longer than `tokens`, else None."""
        if len(self.tokenizer(caption, truncation=False, verbose=False).input_ids) <= self.tokens:
            return None
        kept = self.tokenizer(caption, max_length=self.tokens, truncation=True).input_ids
        return self.tokenizer.decode(kept, skip_special_tokens=True)

    @torch.no_grad()
    def encode(self, captions: list[str]) -> dict[str, torch.Tensor]:
        ids = self.tokenizer(captions, padding="max_length", max_length=self.tokens, truncation=True,
                             return_tensors="pt").input_ids.to(self.device)  # (B, T)
        if self.kind == "clip":
            out = self.model(ids, output_hidden_states=True)
            return {"hidden": out.hidden_states[-2].float(),  # (B, T, D)
                    "pooled": out.text_embeds.float()}  # (B, P)
        return {"hidden": self.model(ids).last_hidden_state.float()}  # (B, T, D)


def describe_text_encoder(name: str, spec: TextEncoderSpec, tokens: int, dtype: str) -> EncoderInfo:
    """Provenance from config.json and file hashes, without loading the weights."""
    config_path = Path(spec.path) / "config.json"
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as err:
        raise FileNotFoundError(f"{name}: cannot read {config_path}: {err}") from err
    kind = TEXT_KINDS[name]
    if kind == "clip":
        # A full CLIPConfig nests the text tower; a CLIPTextConfig is flat.
        text = config.get("text_config", config)
        dims = {"hidden": int(text["hidden_size"]),
                "pooled": int(config.get("projection_dim", text.get("projection_dim")))}
    else:
        dims = {"hidden": int(config["d_model"])}
    return EncoderInfo(kind=kind, model_dir=spec.path, weights_sha256=weights_sha256(spec.path), dtype=dtype,
                       dims=dims, tokens=tokens, tokenizer_sha256=tokenizer_sha256(spec.tokenizer_dir))
