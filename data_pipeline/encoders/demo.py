"""The `demo` encoder set: tiny random CLIP-L, CLIP-G and T5 with tokenizers fitted to the demo
corpus, saved to disk and loaded back through the same `from_pretrained` path as real weights.

Seeded, so two builds write identical weight and vocabulary files and prepare's shards are
byte-identical across reruns. Widths: CLIP hidden 32 + 32 = 64 = T5 d_model, so the demo model
has context_dim 64 and pooled_dim 32 + 32 = 64. The autoencoder is the weightless `pixel` one.
"""
from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import yaml

from data_pipeline.atomic import temp_name
from data_pipeline.demo_data import demo_corpus
from data_pipeline.encoders.config import AutoencoderSpec, EncodersConfig, TextEncoderSpec
from data_pipeline.layout import TEXT_TOKENS

DEMO_DIRNAME = "demo"
CLIP_HIDDEN = 32
CLIP_PROJECTION = 32
T5_D_MODEL = 64
SEEDS = {"clip_l": 1, "clip_g": 2, "t5": 3}
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def _bpe(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """What byte-level BPE makes of one word: repeatedly merge the adjacent pair of lowest rank."""
    while len(symbols) > 1:
        pairs = [(ranks.get(pair, len(ranks)), i) for i, pair in enumerate(zip(symbols, symbols[1:]))]
        rank, i = min(pairs)
        if rank == len(ranks):
            break
        symbols = symbols[:i] + [symbols[i] + symbols[i + 1]] + symbols[i + 2:]
    return symbols


def _clip_vocab(corpus: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Byte-level BPE: every byte (alone and word-final) so any text tokenises, plus merges that
    spell each corpus word as one token.

    BPE applies merges by global rank, not word by word, so a chain of merges built for one word can
    be pre-empted by an earlier word's merge ("ri" from "right" split "triangle" into 7 tokens): each
    word's merges are added for the pieces BPE actually produces with the merges made so far."""
    from tokenizers.pre_tokenizers import ByteLevel

    alphabet = sorted(ByteLevel.alphabet())
    vocab: dict[str, int] = {}
    for ch in alphabet + [c + "</w>" for c in alphabet]:
        vocab[ch] = len(vocab)
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for word in sorted({w for line in corpus for w in line.lower().split()}):
        pieces = _bpe(list(word[:-1]) + [word[-1] + "</w>"], ranks)
        while len(pieces) > 1:  # a merge ranked after every other applies once those are exhausted
            ranks[(pieces[0], pieces[1])] = len(merges)
            merges.append((pieces[0], pieces[1]))
            vocab.setdefault(pieces[0] + pieces[1], len(vocab))
            pieces = _bpe(pieces, ranks)
    for special in (BOS, EOS):
        vocab[special] = len(vocab)
    return vocab, merges


def clip_tokenizer(corpus: list[str]):
    """A CLIPTokenizer whose vocabulary spells each corpus word as one token (also the demo's metric CLIP's)."""
    from transformers import CLIPTokenizer

    vocab, merges = _clip_vocab(corpus)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges)
    tokenizer.model_max_length = TEXT_TOKENS
    return tokenizer


def _build_clip(out: Path, corpus: list[str], seed: int) -> None:
    import torch
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    tokenizer = clip_tokenizer(corpus)
    vocab = tokenizer.get_vocab()
    tokenizer.save_pretrained(out)
    config = CLIPTextConfig(vocab_size=len(vocab), hidden_size=CLIP_HIDDEN, intermediate_size=2 * CLIP_HIDDEN,
                            num_hidden_layers=2, num_attention_heads=2, projection_dim=CLIP_PROJECTION,
                            max_position_embeddings=TEXT_TOKENS, bos_token_id=vocab[BOS],
                            eos_token_id=vocab[EOS], pad_token_id=vocab[EOS])
    torch.manual_seed(seed)
    CLIPTextModelWithProjection(config).save_pretrained(out)


def t5_tokenizer(corpus: list[str], out: Path):
    """A T5 tokenizer (sentencepiece unigram fitted to `corpus`, pad 0, eos 1, unk 2), saved in `out`."""
    import sentencepiece as spm
    from transformers import T5Tokenizer

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_writer=model, model_type="unigram", vocab_size=256,
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, hard_vocab_limit=False, num_threads=1, minloglevel=2)
    out.mkdir(parents=True, exist_ok=True)
    (out / "spiece.model").write_bytes(model.getvalue())
    tokenizer = T5Tokenizer.from_pretrained(str(out), extra_ids=0)
    tokenizer.model_max_length = TEXT_TOKENS
    tokenizer.save_pretrained(out)
    return tokenizer


def _build_t5(out: Path, corpus: list[str], seed: int) -> None:
    import torch
    from transformers import T5Config, T5EncoderModel

    tokenizer = t5_tokenizer(corpus, out)
    config = T5Config(vocab_size=len(tokenizer), d_model=T5_D_MODEL, d_kv=32, d_ff=2 * T5_D_MODEL, num_layers=2,
                      num_heads=2, feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1,
                      decoder_start_token_id=0)
    torch.manual_seed(seed)
    T5EncoderModel(config).save_pretrained(out)


def demo_encoders_config(root: Path) -> EncodersConfig:
    base = (root / DEMO_DIRNAME).resolve()  # absolute: the manifest records these, read from any directory
    return EncodersConfig(
        autoencoder=AutoencoderSpec(kind="pixel", factor=2),
        clip_l=TextEncoderSpec(path=str(base / "clip_l")),
        clip_g=TextEncoderSpec(path=str(base / "clip_g")),
        t5=TextEncoderSpec(path=str(base / "t5")),
        tokens=TEXT_TOKENS, dtype="fp32", batch_size=32)


def build_demo_encoders(root: Path) -> EncodersConfig:
    """Build (or reuse) the demo encoders under `root/demo` and return their config.

    Built under a temporary name and renamed into place, so concurrent parts of one run either
    see a complete set or build their own identical copy; an existing set is reused as is.
    """
    final = root / DEMO_DIRNAME
    if not (final / "encoders.yaml").exists():
        root.mkdir(parents=True, exist_ok=True)
        tmp = temp_name(final)
        shutil.rmtree(tmp, ignore_errors=True)
        from data_pipeline.encoders.encoder_set import quiet_hub_progress

        quiet_hub_progress()
        corpus = demo_corpus()
        _build_clip(tmp / "clip_l", corpus, SEEDS["clip_l"])
        _build_clip(tmp / "clip_g", corpus, SEEDS["clip_g"])
        _build_t5(tmp / "t5", corpus, SEEDS["t5"])
        # Paths relative to the YAML, so `--encoders OUT/encoders/demo/encoders.yaml` survives a move.
        relative = {"autoencoder": {"kind": "pixel", "factor": 2},
                    **{name: {"path": name} for name in SEEDS},
                    "tokens": TEXT_TOKENS, "dtype": "fp32", "batch_size": 32}
        (tmp / "encoders.yaml").write_text(
            "# The demo encoder set (seeded, built by `mmdit-scale prepare --encoders demo`).\n"
            + yaml.safe_dump(relative, sort_keys=False))
        try:
            os.rename(tmp, final)
        except OSError:  # another process finished first; its files are identical
            shutil.rmtree(tmp, ignore_errors=True)
    return demo_encoders_config(root)
