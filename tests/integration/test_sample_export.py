"""`sample` and `export` on a checkpoint in the trainer's on-disk layout, over real demo shards.

The checkpoint holds random (not zero-initialised) weights of the demo recipe's model, so every
output depends on every weight; the trainer itself is exercised by test_train and test_demo.
"""
from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from data_pipeline.demo_data import all_combos, write_demo_data
from data_pipeline.layout import TEXT_ENCODERS
from data_pipeline.loader import LoaderConfig, ShardLoader
from data_pipeline.prepare import PrepareOptions, run_prepare
from launcher.cli import main
from mmdit_scale.config import load_config, to_yaml
from launcher.demo_job import DEMO_TEXT_TOKENS
from mmdit_scale.eval.sampling import RunSampler, SampleSettings, write_grid
from mmdit_scale.model import MMDiT
from mmdit_scale.run import checkpoints, layout
from mmdit_scale.run.data_dims import fill_from_data

REPO = Path(__file__).resolve().parents[2]
PROMPTS = ["a red circle in the top left", "a blue square in the bottom right"]


@torch.no_grad()

def run_shift(run_dir: Path) -> float:
    """flow.shift of the run's saved config: the demo recipe's (4.5 since the shape study), not 1.0."""
    shift = RunSampler(run_dir).config.flow.shift
    assert shift > 1.0  # a shift that does nothing would not show which one was used
    return shift

def _random_weights(model: MMDiT, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=gen) * (v[0].numel() ** -0.5 if v.ndim > 1 else 0.1) + (
        "norm" in k) for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, demo_encoders) -> Path:
    """Demo shards plus a run dir whose `latest` checkpoint has random weights and a different EMA."""
    root = tmp_path_factory.mktemp("sample")
    write_demo_data(root / "images", count=8)
    run_prepare(PrepareOptions(input=root / "images", output=root / "shards",
                               encoders=demo_encoders, resolution=32, progress=False))
    cfg, _ = fill_from_data(load_config(REPO / "recipes" / "demo.yaml", [f"data.train={root / 'shards'}"]))
    model = MMDiT(cfg.model)
    ckpt = root / "run" / layout.CHECKPOINTS / layout.checkpoint_name(7)
    ckpt.mkdir(parents=True)
    save_file(_random_weights(model, 0), ckpt / layout.MODEL_FILE)
    save_file(_random_weights(model, 1), ckpt / layout.EMA_FILE)
    (ckpt / layout.CONFIG_FILE).write_text(to_yaml(cfg))
    (ckpt / layout.STATE_FILE).write_text(json.dumps({"step": 7}))
    checkpoints.write_latest(ckpt.parent, ckpt.name)
    return root / "run"


@pytest.fixture(scope="module")
def sampler(run_dir) -> RunSampler:
    return RunSampler(run_dir)


def test_prompts_are_encoded_exactly_like_the_training_text(sampler):
    loader = ShardLoader(str(sampler.config.data.train), LoaderConfig(batch_size=8), validation=True)
    batch = next(iter(loader))  # validation: original captions, nothing dropped
    context, pooled = sampler.encode_prompts(list(batch["caption"]))
    assert context.shape == (8, 154, 64) and pooled.shape == (8, 64)
    assert torch.equal(context, batch["context"].float()) and torch.equal(pooled, batch["pooled"].float())


def test_sample_writes_a_deterministic_grid_that_depends_on_prompt_seed_and_weights(run_dir, sampler, tmp_path):
    base = ["sample", str(run_dir), "--prompt", PROMPTS[0], "--prompt", PROMPTS[1], "--steps", "4",
            "--per-prompt", "3"]
    assert main(base + ["--out", str(tmp_path / "a.png")]) == 0
    # A second sampler (the module's) with the same settings writes the same bytes.
    again = SampleSettings(steps=4, per_prompt=3)
    write_grid(sampler.sample(PROMPTS, again), PROMPTS, again, tmp_path / "b.png", sampler.checkpoint)
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    grid = Image.open(tmp_path / "a.png")
    assert grid.size == (3 * 96 + 4 * 2, 2 * 96 + 3 * 2)  # 32 px cells shown at 3x, 2 px gutters
    record = json.loads((tmp_path / "a.json").read_text())
    assert record["prompts"] == PROMPTS and record["steps"] == 4 and record["cfg"] == 3.0
    assert record["checkpoint"].endswith("step_0000007")
    assert record["shift"] == sampler.config.flow.shift == run_shift(run_dir)  # the shift used, at the run's own resolution

    settings = SampleSettings(steps=4, per_prompt=2)
    images = sampler.sample(PROMPTS, settings)
    assert images.shape == (4, 32, 32, 3) and images.dtype == np.uint8
    assert not np.array_equal(images[0], images[1])  # two noises
    swapped = sampler.sample(PROMPTS[::-1], settings)
    assert not np.array_equal(images[0], swapped[0])  # same noise, other prompt
    reseeded = sampler.sample(PROMPTS, SampleSettings(steps=4, per_prompt=2, seed=1))
    assert not np.array_equal(images, reseeded)
    ema = RunSampler(run_dir, ema=True).sample(PROMPTS, settings)
    assert not np.array_equal(images, ema)


def test_every_demo_caption_fits_the_demo_text_length(demo_encoders):
    from transformers import AutoTokenizer

    captions = [c.caption for c in all_combos()] + [c.syn_caption for c in all_combos()]
    for name in TEXT_ENCODERS:
        tokenizer = AutoTokenizer.from_pretrained(Path(demo_encoders).parent / name)
        longest = max(len(ids) for ids in tokenizer(captions).input_ids)  # BOS/EOS included
        assert longest <= DEMO_TEXT_TOKENS, (name, longest)


def test_sample_errors_exit_2(run_dir, tmp_path, capsys):
    assert main(["sample", str(tmp_path), "--prompt", "x", "--out", str(tmp_path / "x.png")]) == 2
    assert "not a checkpoint" in capsys.readouterr().err
    # Bytes that are not UTF-8 reach argv as surrogates (what `--prompt $'\xff'` gives).
    assert main(["sample", str(run_dir), "--prompt", "a \udcff circle", "--out", str(tmp_path / "x.png")]) == 2
    assert 'prompt 1 ("a \\udcff circle") is not valid UTF-8 text' in capsys.readouterr().err


def test_weights_of_another_model_size_are_refused_by_sample_and_export(run_dir, tmp_path, capsys):
    import shutil

    other = tmp_path / "run"
    shutil.copytree(run_dir, other)
    ckpt = checkpoints.resolve(other)
    cfg = checkpoints.load_run_config(ckpt)
    bigger = MMDiT(replace(cfg.model, depth=cfg.model.depth + 1))
    save_file(_random_weights(bigger, 0), ckpt / layout.MODEL_FILE)
    assert main(["sample", str(other), "--prompt", "x", "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert f"{ckpt}: the weights do not fit the model its config.yaml describes (depth {cfg.model.depth}" in err
    assert main(["export", str(other), "--out", str(tmp_path / "exported")]) == 2
    assert "the weights do not fit the model" in capsys.readouterr().err


def test_a_prompt_past_the_token_limit_warns_once_and_the_json_has_what_was_encoded(run_dir, tmp_path, capsys):
    long = " ".join([PROMPTS[0]] * 30)   # words the demo tokenizers know, so the kept text decodes back
    out = tmp_path / "long.png"
    assert main(["sample", str(run_dir), "--prompt", long, "--prompt", PROMPTS[0], "--steps", "1",
                 "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert err.count("exceed the text encoders'") == 1 and "1 prompt(s)" in err
    encoded = json.loads(out.with_suffix(".json").read_text())["encoded"]
    assert list(encoded) == [long] and set(encoded[long]) == {"clip_l", "clip_g", "t5"}
    for text in encoded[long].values():
        words = text.split()
        assert 0 < len(words) < len(long.split()) and words == long.split()[:len(words)], encoded


@pytest.mark.parametrize("ema", [False, True])
def test_diffusers_export_loads_and_gives_the_same_outputs(run_dir, tmp_path, ema):
    from diffusers import SD3Transformer2DModel

    out = tmp_path / "sd3"
    assert main(["export", str(run_dir), "--format", "diffusers", "--out", str(out)] + ["--ema"] * ema) == 0
    theirs = SD3Transformer2DModel.from_pretrained(out).eval()
    ours = checkpoints.build_model(run_dir, ema=ema)
    gen = torch.Generator().manual_seed(0)
    x, t = torch.randn(3, 12, 16, 16, generator=gen), torch.rand(3, generator=gen)
    context, pooled = torch.randn(3, 154, 64, generator=gen), torch.randn(3, 64, generator=gen)
    with torch.no_grad():
        expected = ours(x, t, context, pooled)
        got = theirs(hidden_states=x, encoder_hidden_states=context, pooled_projections=pooled,
                     timestep=1000 * t).sample
    assert expected.abs().max() > 0.1
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5 * float(expected.abs().max()))


def test_safetensors_export_round_trips(run_dir, tmp_path):
    out = tmp_path / "model.safetensors"
    assert main(["export", str(run_dir), "--format", "safetensors", "--out", str(out)]) == 0
    weights = load_file(out)
    ckpt = checkpoints.resolve(run_dir)
    assert weights.keys() == checkpoints.load_weights(ckpt).keys()
    assert all(torch.equal(weights[k], v) for k, v in checkpoints.load_weights(ckpt).items())
    from safetensors import safe_open

    with safe_open(out, "pt") as f:
        assert json.loads(f.metadata()["mmdit_config"])["in_channels"] == 12


def test_sampling_follows_the_training_shift_rule_for_its_size(sampler):
    """32 px images from a run whose data.resolution is 16: flow.shift x sqrt(32^2 / 16^2)."""
    base = sampler.config
    try:
        sampler.config = replace(base, data=replace(base.data, resolution=16))
        assert sampler.resolved(SampleSettings()).shift == pytest.approx(2 * base.flow.shift)
        assert sampler.resolved(SampleSettings(shift=1.5)).shift == 1.5   # an explicit shift wins
    finally:
        sampler.config = base


def test_sample_draws_any_size_the_position_table_covers(run_dir, tmp_path, capsys):
    out = tmp_path / "wide.png"
    assert main(["sample", str(run_dir), "--prompt", PROMPTS[0], "--steps", "2", "--height", "24", "--width", "40",
                 "--out", str(out)]) == 0
    record = json.loads(out.with_suffix(".json").read_text())
    assert (record["height"], record["width"]) == (24, 40)
    assert record["shift"] == pytest.approx(run_shift(run_dir) * (24 * 40) ** 0.5 / 32)  # the training rule at 24x40
    sampler = RunSampler(run_dir)
    images = sampler.sample(PROMPTS[:1], sampler.resolved(SampleSettings(steps=2, height=24, width=40)))
    assert images.shape == (1, 24, 40, 3)
    # 16 positions per side x 4 px (pixel factor 2 x patch 2) = 64 px at most; sides in steps of 4 px.
    assert main(["sample", str(run_dir), "--prompt", "x", "--height", "68", "--out", str(out)]) == 2
    assert "68x32 px is a 17x8 token grid, beyond the model's position table (16 per side)" in capsys.readouterr().err
    assert main(["sample", str(run_dir), "--prompt", "x", "--width", "30", "--out", str(out)]) == 2
    assert "sides must be multiples of 4 px" in capsys.readouterr().err


def test_the_exported_folder_in_stable_diffusion_3_pipeline_reproduces_sample(run_dir, tmp_path):
    """The export's scheduler (the run's shift) and sampling.json's settings (zero null condition,
    sigma grid, text length) make diffusers' own pipeline, with the run's own text encoders, give
    what `sample` gives for the same prompts, noise and guidance. The demo's pixel autoencoder has no
    diffusers twin, so the pipeline returns latents and the run's autoencoder decodes them."""
    import numpy as np
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    from mmdit_scale.eval.sampling import to_uint8

    out = tmp_path / "sd3"
    umask = os.umask(0o022)
    try:
        assert main(["export", str(run_dir), "--format", "diffusers", "--out", str(out)]) == 0
    finally:
        os.umask(umask)
    assert all(p.stat().st_mode & 0o044 == 0o044 for p in out.iterdir())       # readable by group and others
    notes = json.loads((out / "sampling.json").read_text())
    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(out)
    assert scheduler.config.shift == notes["shift"] == run_shift(run_dir)

    sampler = RunSampler(run_dir)
    settings = sampler.resolved(SampleSettings(steps=6, cfg=3.0, seed=5))
    expected = sampler.sample(PROMPTS, settings)
    enc = {name: sampler.encoders.text[name] for name in ("clip_l", "clip_g", "t5")}
    pipe = StableDiffusion3Pipeline(
        transformer=SD3Transformer2DModel.from_pretrained(out), scheduler=scheduler, vae=None,
        text_encoder=enc["clip_l"].model, tokenizer=enc["clip_l"].tokenizer,
        text_encoder_2=enc["clip_g"].model, tokenizer_2=enc["clip_g"].tokenizer,
        text_encoder_3=enc["t5"].model, tokenizer_3=enc["t5"].tokenizer)
    channels, h, w = sampler.latent_shape(settings)
    noise = torch.randn((len(PROMPTS), channels, h, w), generator=torch.Generator().manual_seed(settings.seed))
    context, pooled = sampler.encode_prompts(PROMPTS)
    latents = pipe(prompt=PROMPTS, height=h * pipe.vae_scale_factor, width=w * pipe.vae_scale_factor,
                   num_inference_steps=settings.steps, sigmas=list(np.linspace(1, 0, settings.steps + 1)[:-1]),
                   guidance_scale=settings.cfg, latents=noise.clone(), output_type="latent",
                   negative_prompt_embeds=torch.zeros_like(context), negative_pooled_prompt_embeds=torch.zeros_like(pooled),
                   max_sequence_length=notes["max_sequence_length"]).images
    got = to_uint8(sampler.encoders.autoencoder.decode(latents.float()).cpu())
    diff = np.abs(got.astype(int) - expected.astype(int))
    assert expected.std() > 10 and diff.mean() <= 1.0 and diff.max() <= 4, (diff.mean(), diff.max())
    # As documented nowhere before: the encoded empty string as the null, the scheduler's own grid.
    plain = pipe(prompt=PROMPTS, height=h * pipe.vae_scale_factor, width=w * pipe.vae_scale_factor,
                 num_inference_steps=settings.steps, guidance_scale=settings.cfg, latents=noise.clone(),
                 output_type="latent", max_sequence_length=notes["max_sequence_length"]).images
    off = np.abs(to_uint8(sampler.encoders.autoencoder.decode(plain.float()).cpu()).astype(int) - expected.astype(int))
    assert off.mean() > 4 * diff.mean() + 1, (off.mean(), diff.mean())


def test_prepare_stores_the_encoded_empty_string_and_a_run_can_use_it_as_no_prompt(run_dir, sampler, tmp_path):
    """data.null_text=empty: the null condition is each encoder's encoding of "" (stored by prepare
    beside the manifest, rounded like the shards), so the pipeline's own negative prompt '' then
    reproduces `sample` with no zero embeddings passed."""
    import numpy as np
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from safetensors.torch import load_file

    from data_pipeline.format import assemble_text
    from data_pipeline.layout import NULL_TEXT_FILE
    from mmdit_scale.eval.sampling import to_uint8

    stored = load_file(Path(sampler.config.data.train) / NULL_TEXT_FILE)
    context, pooled = assemble_text(stored, "orig", sampler.layout)
    empty_context, empty_pooled = sampler.encode_prompts([""])
    assert torch.equal(context.float(), empty_context[0]) and torch.equal(pooled.float(), empty_pooled[0])

    base = sampler.config
    try:
        sampler.config = replace(base, data=replace(base.data, null_text="empty"))
        settings = sampler.resolved(SampleSettings(steps=6, cfg=3.0, seed=5))
        expected = sampler.sample(PROMPTS, settings)
        out = tmp_path / "sd3"
        ckpt = checkpoints.resolve(run_dir)
        enc = {name: sampler.encoders.text[name] for name in ("clip_l", "clip_g", "t5")}
        from mmdit_scale.interop.diffusers_sd3 import to_diffusers

        to_diffusers(checkpoints.build_model(ckpt)).save_pretrained(out)
        pipe = StableDiffusion3Pipeline(
            transformer=SD3Transformer2DModel.from_pretrained(out),
            scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=base.flow.shift), vae=None,
            text_encoder=enc["clip_l"].model, tokenizer=enc["clip_l"].tokenizer,
            text_encoder_2=enc["clip_g"].model, tokenizer_2=enc["clip_g"].tokenizer,
            text_encoder_3=enc["t5"].model, tokenizer_3=enc["t5"].tokenizer)
        channels, h, w = sampler.latent_shape(settings)
        noise = torch.randn((len(PROMPTS), channels, h, w), generator=torch.Generator().manual_seed(settings.seed))
        latents = pipe(prompt=PROMPTS, height=h * pipe.vae_scale_factor, width=w * pipe.vae_scale_factor,
                       num_inference_steps=settings.steps, sigmas=list(np.linspace(1, 0, settings.steps + 1)[:-1]),
                       guidance_scale=settings.cfg, latents=noise.clone(), output_type="latent",
                       max_sequence_length=77).images
        got = to_uint8(sampler.encoders.autoencoder.decode(latents.float()).cpu())
        diff = np.abs(got.astype(int) - expected.astype(int))
        assert expected.std() > 10 and diff.mean() <= 1.0 and diff.max() <= 4, (diff.mean(), diff.max())
        zeros_null = RunSampler(run_dir).sample(PROMPTS, settings)
        assert np.abs(zeros_null.astype(int) - expected.astype(int)).mean() > 1   # the choice matters
    finally:
        sampler.config = base
