"""Model input dims a recipe leaves unset (latent channels, context and pooled widths) come from the
shard manifest: `train` fills them before any rank starts, `plan` falls back to SD3's, and a model
is never built with them unset."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from data_pipeline.loader import LoaderConfig, ShardLoader
from data_pipeline.loader.synthetic import SyntheticSpec, write_synthetic
from data_pipeline.locate import locate_manifests
from data_pipeline.manifest import Manifest, check_against_model
from launcher import cli
from mmdit_scale.config import load_config
from mmdit_scale.run.layout import write_config
from mmdit_scale.model import MMDiT, MMDiTConfig
from mmdit_scale.model.config import SD3_INPUT_DIMS, InputDims
from mmdit_scale.run import exit_codes
from mmdit_scale.run.data_dims import fill_from_data

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "recipes" / "tiny.yaml"

DATASETS = {
    # prepare --encoders demo: pixel autoencoder (12 channels), CLIP 32 + 32 side by side, T5 64.
    "demo": (SyntheticSpec(channels=12, factor=2, text={"clip_l": (32, 32), "clip_g": (32, 32), "t5": (64, None)}),
             InputDims(in_channels=12, context_dim=64, pooled_dim=64)),
    # SD3's structure, small: T5 (32) wider than CLIP-L + CLIP-G (8 + 12), which are zero-padded to it.
    "clip+t5": (SyntheticSpec(channels=4, text={"clip_l": (8, 8), "clip_g": (12, 12), "t5": (32, None)}),
                InputDims(in_channels=4, context_dim=32, pooled_dim=20)),
    # Without T5 the context is CLIP-L + CLIP-G, and pooled is no narrower for it.
    "clip-only": (SyntheticSpec(channels=4, text={"clip_l": (8, 6), "clip_g": (12, 10)}),
                  InputDims(in_channels=4, context_dim=20, pooled_dim=16)),
}


def shards(tmp_path: Path, name: str) -> Path:
    spec = replace(DATASETS[name][0], shards=2, per_shard=2, latent_sizes=((8, 8),))
    write_synthetic(tmp_path / name, spec)
    return tmp_path / name


@pytest.mark.parametrize("name", DATASETS)
def test_unset_dims_come_from_the_manifest_and_the_loader_accepts_them(name: str, tmp_path: Path) -> None:
    data = shards(tmp_path, name)
    cfg, note = fill_from_data(load_config(TINY, [f"data.train={data}"]))
    m = cfg.model
    assert InputDims(m.in_channels, m.context_dim, m.pooled_dim) == DATASETS[name][1]
    assert m.out_channels == m.in_channels and m.missing_input_dims() == ()
    # The widths are data_pipeline's own: the natural text layout, and the loader's model check passes.
    provenance = Manifest.load(data).provenance
    layout = provenance.text_layout()
    assert (m.in_channels, m.context_dim, m.pooled_dim) == (provenance.latent.channels, layout.width, layout.pooled_dim)
    assert check_against_model(provenance, in_channels=m.in_channels, context_dim=m.context_dim,
                               pooled_dim=m.pooled_dim, patch_size=m.patch_size) == []
    assert cfg.data.resolution == provenance.resolution
    assert note == (f"model.in_channels={m.in_channels} model.context_dim={m.context_dim} "
                    f"model.pooled_dim={m.pooled_dim} data.resolution={provenance.resolution} "
                    f"from the manifest {data / 'manifest.json'}")
    # A batch of these shards goes through a model of these dims.
    batch = next(iter(ShardLoader(cfg.data.train, LoaderConfig(batch_size=2, shuffle_buffer=0), model=m)))
    with torch.no_grad():
        out = MMDiT(m)(batch["latent"].float(), torch.rand(2), batch["context"].float(), batch["pooled"].float())
    assert out.shape == batch["latent"].shape == (2, m.in_channels, 8, 8)


def test_the_saved_config_has_the_filled_dims(tmp_path: Path) -> None:
    cfg, _ = fill_from_data(load_config(TINY, [f"data.train={shards(tmp_path, 'demo')}"]))
    write_config(cfg, tmp_path / "config.yaml")
    back = load_config(tmp_path / "config.yaml")
    assert back == cfg and (back.model.in_channels, back.model.context_dim, back.model.pooled_dim) == (12, 64, 64)
    assert fill_from_data(back) == (back, "")  # a resume reads them, nothing left to fill


def test_the_manifest_is_found_as_the_loader_finds_it(tmp_path: Path) -> None:
    data = shards(tmp_path, "demo")
    expected = str(data / "manifest.json")

    def manifest_path(value: str) -> str:
        [(_, location)] = locate_manifests(value)
        return location

    assert manifest_path(str(data)) == expected
    assert manifest_path(f"{data}/shard-{{000000..000001}}.tar") == expected
    assert os.path.samefile(manifest_path(f"file://{data}"), expected)
    assert manifest_path(f"pipe:cat {data}/shard-{{000000..000001}}.tar") == f"pipe:cat {expected}"
    pattern, _ = fill_from_data(load_config(TINY, [f"data.train={data}/shard-{{000000..000001}}.tar"]))
    directory, _ = fill_from_data(load_config(TINY, [f"data.train={data}"]))
    assert pattern.model == directory.model


def test_set_dims_are_kept_and_a_wrong_one_is_refused_by_name(tmp_path: Path) -> None:
    data = shards(tmp_path, "demo")
    cfg, note = fill_from_data(load_config(TINY, [f"data.train={data}", "model.in_channels=16"]))
    assert (cfg.model.in_channels, cfg.model.out_channels, cfg.model.context_dim) == (16, 16, 64)
    assert note.startswith("model.context_dim=64 model.pooled_dim=64 data.resolution=16 from")
    with pytest.raises(ValueError, match="latent has 12 channels but the model's in_channels is 16"):
        ShardLoader(cfg.data.train, LoaderConfig(batch_size=2), model=cfg.model)
    wide, _ = fill_from_data(load_config(TINY, [f"data.train={data}", "model.context_dim=128"]))
    with pytest.raises(ValueError, match="T5 hidden width 64 != model context_dim 128"):
        ShardLoader(wide.data.train, LoaderConfig(batch_size=2), model=wide.model)


def test_a_model_is_never_built_with_unset_dims() -> None:
    cfg = MMDiTConfig(depth=1, context_dim=32)
    assert (cfg.in_channels, cfg.out_channels, cfg.missing_input_dims()) == (None, None, ("in_channels", "pooled_dim"))
    with pytest.raises(ValueError, match=r"^model\.in_channels, model\.pooled_dim unset: `mmdit-scale train` fills "
                                         r"unset input dims from the manifest of data\.train;.*set .* in the recipe"):
        MMDiT(cfg)
    filled = cfg.with_input_dims(InputDims(in_channels=4, context_dim=999, pooled_dim=8))
    assert (filled.in_channels, filled.out_channels, filled.context_dim, filled.pooled_dim) == (4, 4, 32, 8)
    assert MMDiT(filled).context_embedder.in_features == 32
    sd3 = MMDiTConfig.from_depth(2)
    assert InputDims(sd3.in_channels, sd3.context_dim, sd3.pooled_dim) == SD3_INPUT_DIMS == InputDims(16, 4096, 2048)


def launcher(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    code = ("import sys; from launcher.cli import main; rc = main(sys.argv[1:]); "
            "assert 'torch' not in sys.modules, 'the launcher imported torch'; sys.exit(rc)")
    return subprocess.run([sys.executable, "-c", code, "train", str(TINY), *args, "--run-dir", str(cwd / "run")],
                          cwd=REPO, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("data, reason", [
    ("pipe:aws s3 cp s3://b/ds/shard-{000000..000003}.tar -",
     "cannot read the manifest pipe:aws s3 cp s3://b/ds/manifest.json -: OSError: the command exited"),
    ("TMP", "cannot read the manifest TMP/manifest.json: FileNotFoundError"),
])
def test_train_fails_before_any_rank_when_unset_dims_cannot_be_read(data: str, reason: str, tmp_path: Path) -> None:
    out = launcher(f"data.train={data.replace('TMP', str(tmp_path))}", cwd=tmp_path)
    assert out.returncode == exit_codes.CONFIG_ERROR, out.stderr
    assert ("model.in_channels, model.context_dim, model.pooled_dim, data.resolution unset and not readable from "
            "the data") in out.stderr
    assert reason.replace("TMP", str(tmp_path)) in out.stderr
    assert "set them in the recipe or as overrides (SD3: model.in_channels=16 model.context_dim=4096" in out.stderr
    assert not (tmp_path / "run").exists()


def test_plan_uses_the_manifest_or_says_it_assumed_sd3(tmp_path: Path, capsys) -> None:
    data = shards(tmp_path, "demo")
    assert cli.main(["plan", str(TINY), f"data.train={data}", "--gpus", "1", "--json"]) == 0
    dims = json.loads(capsys.readouterr().out)["input_dims"]
    assert (dims["in_channels"], dims["context_dim"], dims["pooled_dim"]) == (12, 64, 64)
    assert dims["from"].endswith(f"from the manifest {data / 'manifest.json'}")
    assert cli.main(["plan", str(TINY), "--gpus", "1"]) == 0
    assert ("inputs       latent 16 channels, context 4096, pooled 2048; model.in_channels=16 model.context_dim=4096 "
            "model.pooled_dim=2048 data.resolution=256 from SD3's defaults (data.train is empty: ") in capsys.readouterr().out
    assert cli.main(["plan", "recipes/ladder/d15.yaml", "--gpus", "8", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["input_dims"]["from"] == "set in the recipe"
