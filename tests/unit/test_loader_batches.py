"""Loader batches against the format's own decoder and assembler, bucket grouping, and the
load-time augmentation statistics (per-encoder dropout 0.464, caption mix 50/50)."""
import math

import pytest
import torch
import webdataset as wds

from data_pipeline.format import assemble_text, decode_sample
from data_pipeline.layout import CAPTION_VARIANTS, TEXT_ENCODERS, TextLayout
from data_pipeline.loader import LoaderConfig, ShardLoader
from data_pipeline.loader.collate import padding_blocks
from data_pipeline.loader.synthetic import TINY_TEXT, SyntheticSpec, write_synthetic
from data_pipeline.manifest import Manifest

SIZES = ((4, 4), (4, 6), (6, 4))


@pytest.fixture(scope="module")
def bucketed(tmp_path_factory):
    root = tmp_path_factory.mktemp("bucketed")
    write_synthetic(root, SyntheticSpec(shards=3, per_shard=12, latent_sizes=SIZES, text=TINY_TEXT))
    return root


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    root = tmp_path_factory.mktemp("many")
    write_synthetic(root, SyntheticSpec(shards=4, per_shard=150, latent_sizes=((2, 2),),
                                        text=TINY_TEXT, tokens=4))
    return root


def oracle(root):
    """Every stored sample, read with WebDataset's own tar reader and format.decode_sample."""
    man = Manifest.load(root)
    urls = [str(root / s.name) for s in man.shards]
    return {s["__key__"]: decode_sample(s) for s in wds.WebDataset(urls, shardshuffle=False)}, man


def take(loader, n_batches):
    it = iter(loader)
    return [next(it) for _ in range(n_batches)]


def test_batches_equal_format_assembly_of_the_stored_samples(bucketed):
    samples, man = oracle(bucketed)
    layout = man.provenance.text_layout()
    batches = take(ShardLoader(str(bucketed), LoaderConfig(batch_size=4, shuffle_buffer=6, seed=3)), 12)
    dropped = 0
    for b in batches:
        assert b["context"].shape[1:] == (154, 32) and b["pooled"].shape[1:] == (20,)
        assert b["context"].dtype == torch.bfloat16
        for i, key in enumerate(b["keys"]):
            s = samples[key]
            variant = CAPTION_VARIANTS[int(b["caption_variant"][i])]
            keep = {e: bool(b["text_keep"][i, j]) for j, e in enumerate(TEXT_ENCODERS)}
            dropped += sum(not k for k in keep.values())
            context, pooled = assemble_text(s.tensors, variant, layout, keep)
            assert torch.equal(b["latent"][i], s.tensors["latent"])
            assert torch.equal(b["context"][i], context)
            assert torch.equal(b["pooled"][i], pooled)
            assert b["caption"][i] == s.captions[variant]
            assert tuple(b["original_size"][i].tolist()) == s.original_size
            assert tuple(b["crop_box"][i].tolist()) == s.crop_box
    assert dropped > 0  # the comparison covered dropped encoders too


def test_each_batch_holds_one_bucket_and_every_bucket_is_served(bucketed):
    samples, _ = oracle(bucketed)
    seen = set()
    for b in take(ShardLoader(str(bucketed), LoaderConfig(batch_size=3, shuffle_buffer=8)), 30):
        shape = tuple(b["latent"].shape[1:])
        assert all(tuple(samples[k].tensors["latent"].shape) == shape for k in b["keys"])
        seen.add(shape[1:])
    assert seen == set(SIZES)


def test_dropout_and_caption_rates(many):
    n_batches = 64  # 2048 samples over more than three epochs: draws differ per epoch
    batches = take(ShardLoader(str(many), LoaderConfig(batch_size=32, shuffle_buffer=16)), n_batches)
    keep = torch.cat([b["text_keep"] for b in batches])  # (N, 3)
    n = keep.shape[0]
    tol = 3.5 * math.sqrt(0.464 * 0.536 / n)
    drop_rate = 1 - keep.float().mean(0)
    assert torch.all((drop_rate - 0.464).abs() < tol), drop_rate
    all_dropped = (~keep).all(1).float().mean().item()
    assert abs(all_dropped - 0.464 ** 3) < 3.5 * math.sqrt(0.1 * 0.9 / n)  # independent per encoder
    syn = torch.cat([b["caption_variant"] for b in batches]).float().mean().item()
    assert abs(syn - 0.5) < 3.5 * math.sqrt(0.25 / n)
    # Dropped parts are zeros (hidden states and pooled vector); kept parts are the stored data.
    blocks = {"clip_l": (slice(0, 4), slice(0, 8), slice(0, 8)),
              "clip_g": (slice(0, 4), slice(8, 20), slice(8, 20)),
              "t5": (slice(4, 8), slice(0, 32), None)}
    for b in batches[:8]:
        for i in range(b["keys"].__len__()):
            for j, enc in enumerate(TEXT_ENCODERS):
                rows, cols, pooled = blocks[enc]
                part = b["context"][i, rows, cols]
                kept = bool(b["text_keep"][i, j])
                assert bool((part != 0).any()) == kept
                if pooled is not None:
                    assert bool((b["pooled"][i, pooled] != 0).any()) == kept
            assert not bool(b["context"][i, 0:4, 20:].any())  # CLIP's padding up to the T5 width


def test_dropout_and_caption_off(many):
    cfg = LoaderConfig(batch_size=16, shuffle_buffer=0, text_dropout=0.0, synthetic_caption_prob=1.0)
    b = take(ShardLoader(str(many), cfg), 1)[0]
    assert bool(b["text_keep"].all())
    assert b["caption_variant"].tolist() == [1] * 16


def test_absent_encoder_shrinks_context(tmp_path):
    write_synthetic(tmp_path, SyntheticSpec(shards=1, per_shard=4, latent_sizes=((2, 2),),
                                            text={"clip_l": (8, 8), "clip_g": (12, 12)}))
    b = take(ShardLoader(str(tmp_path), LoaderConfig(batch_size=4, shuffle_buffer=0, text_dropout=0.0)), 1)[0]
    assert b["context"].shape == (4, 77, 20)
    assert b["text_keep"][:, 2].tolist() == [False] * 4  # T5 absent: never "kept"


def test_padding_blocks_are_the_context_cells_no_encoder_covers():
    """What the collator zeroes in a fresh (uninitialised) batch tensor; the rest is written per sample."""
    sd3 = TextLayout(clip_l=768, clip_l_pooled=768, clip_g=1280, clip_g_pooled=1280, t5=4096)
    assert padding_blocks(sd3.placements(), sd3.width) == ((0, 77, 2048, 4096),)
    demo = TextLayout(clip_l=32, clip_l_pooled=32, clip_g=32, clip_g_pooled=32, t5=64)
    assert padding_blocks(demo.placements(), demo.width) == ()
    no_t5 = TextLayout(clip_l=8, clip_l_pooled=4, clip_g=8, clip_g_pooled=4, context_dim=32)
    assert padding_blocks(no_t5.placements(), no_t5.width) == ((0, 77, 16, 32),)


def check_against_oracle(b, samples, layout):
    for i, key in enumerate(b["keys"]):
        s = samples[key]
        variant = CAPTION_VARIANTS[int(b["caption_variant"][i])]
        keep = {e: bool(b["text_keep"][i, j]) for j, e in enumerate(TEXT_ENCODERS)}
        context, pooled = assemble_text(s.tensors, variant, layout, keep)
        assert torch.equal(b["latent"][i], s.tensors["latent"])
        assert torch.equal(b["context"][i], context) and torch.equal(b["pooled"][i], pooled)
        assert b["caption"][i] == s.captions[variant]
    assert b["text_keep"].dtype == torch.bool
    assert all(b[k].dtype == torch.long for k in ("caption_variant", "source", "epoch", "original_size", "crop_box"))


@pytest.mark.parametrize("workers,kind", [(0, "thread"), (2, "thread"), (2, "process")])
def test_batch_memory_is_reused_only_once_released(bucketed, workers, kind):
    """Released batches' tensors are recycled (stale dropped parts must not leak into the next
    batch; in process mode through shared slots); a batch still held is never overwritten."""
    samples, man = oracle(bucketed)
    layout = man.provenance.text_layout()
    cfg = LoaderConfig(batch_size=4, shuffle_buffer=6, seed=5, num_workers=workers, worker_type=kind)
    it = iter(ShardLoader(str(bucketed), cfg))
    kept = next(it)
    kept_copy = {k: kept[k].clone() for k in ("latent", "context", "pooled")}
    view = kept["context"][:, 77:]  # a view alone also pins the memory
    del kept["context"]
    pointers = []
    for _ in range(24):
        b = next(it)
        check_against_oracle(b, samples, layout)
        pointers.append(b["context"].data_ptr())
        del b
    assert len(set(pointers)) < len(pointers)  # memory was recycled
    assert torch.equal(view, kept_copy["context"][:, 77:])
    assert all(torch.equal(kept[k], kept_copy[k]) for k in ("latent", "pooled"))


@pytest.mark.parametrize("workers,kind", [(0, "thread"), (2, "process")])
def test_dropped_encoders_are_zeros_whatever_memory_is_reused(bucketed, workers, kind):
    """A dropped encoder is written only where the reused memory does not hold zeros already;
    holding one tensor of a batch (its pooled, another's context) makes later batches pair
    reused context memory with other pooled memory than last time."""
    samples, man = oracle(bucketed)
    layout = man.provenance.text_layout()
    cfg = LoaderConfig(batch_size=4, shuffle_buffer=6, seed=8, text_dropout=0.6, num_workers=workers,
                       worker_type=kind)
    it = iter(ShardLoader(str(bucketed), cfg))
    held = [next(it)["pooled"], next(it)["context"]]
    dropped = 0
    for _ in range(40):
        b = next(it)
        check_against_oracle(b, samples, layout)
        dropped += int((~b["text_keep"]).sum())
        del b
    assert dropped > 40 and len(held) == 2


def test_a_dropped_encoder_gets_the_encoded_empty_string_when_asked(tmp_path):
    """data.null_text=empty: where text-encoder dropout drops an encoder, its part of the context and
    pooled text is the stored encoding of "" (null_text.safetensors), not zeros."""
    import torch
    from safetensors.torch import save_file

    from data_pipeline.format import text_key
    from data_pipeline.layout import NULL_TEXT_FILE
    from data_pipeline.loader import LoaderConfig, ShardLoader
    from data_pipeline.loader.synthetic import TINY_TEXT, SyntheticSpec, write_synthetic

    write_synthetic(tmp_path, SyntheticSpec(shards=1, per_shard=8, latent_sizes=((4, 4),), text=TINY_TEXT))
    g = torch.Generator().manual_seed(0)
    null = {}
    for enc, (hidden, pooled) in TINY_TEXT.items():
        null[text_key("orig", enc)] = torch.randn(77, hidden, generator=g).to(torch.bfloat16)
        if pooled:
            null[text_key("orig", enc, pooled=True)] = torch.randn(pooled, generator=g).to(torch.bfloat16)
    save_file(null, tmp_path / NULL_TEXT_FILE)
    batch = next(iter(ShardLoader(str(tmp_path), LoaderConfig(batch_size=8, text_dropout=1.0,
                                                              null_text=str(tmp_path / NULL_TEXT_FILE)))))
    assert not batch["text_keep"].any()
    layout = ShardLoader(str(tmp_path), LoaderConfig(batch_size=8)).layout
    for enc, at in layout.placements().items():
        (r0, r1), (c0, c1) = at.rows, at.cols
        assert torch.equal(batch["context"][:, r0:r1, c0:c1], null[text_key("orig", enc)].expand(8, -1, -1)), enc
        if at.pooled is not None:
            s0, s1 = at.pooled
            assert torch.equal(batch["pooled"][:, s0:s1], null[text_key("orig", enc, pooled=True)].expand(8, -1))
    zeros = next(iter(ShardLoader(str(tmp_path), LoaderConfig(batch_size=8, text_dropout=1.0))))
    assert not zeros["context"].any() and not zeros["pooled"].any()      # the default: zeros
    del null[text_key("orig", "t5")]
    save_file(null, tmp_path / "short.safetensors")
    with pytest.raises(ValueError, match=r"short.safetensors: orig.t5 is None, the data needs \(77, 32\)"):
        ShardLoader(str(tmp_path), LoaderConfig(batch_size=8, null_text=str(tmp_path / "short.safetensors")))
