"""Weighted mixtures a recipe can name (`data.train: [{path, weight, manifest}]`), remote and
pattern specs with their manifests, and sources whose provenance differs, refused by name."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from data_pipeline.loader.synthetic import TINY_TEXT, SyntheticSpec, write_synthetic
from data_pipeline.manifest import MANIFEST_NAME
from launcher import cli
from mmdit_scale.config import DataSource, load_config
from mmdit_scale.run.data_dims import check_sources, fill_from_data
from mmdit_scale.run.exit_codes import CONFIG_ERROR
from mmdit_scale.train.data import train_loader

TINY = "recipes/tiny.yaml"
Z_999 = 3.2905
"""Two-sided 99.9% quantile of the standard normal."""


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("mix")
    spec = dict(per_shard=16, latent_sizes=((4, 4),), text=TINY_TEXT, channels=4)
    write_synthetic(root / "a", SyntheticSpec(shards=3, seed=0, **spec))
    write_synthetic(root / "b", SyntheticSpec(shards=2, seed=1, **spec))
    write_synthetic(root / "other", SyntheticSpec(shards=1, seed=2, weights_tag="another-t5", **spec))
    return {name: root / name for name in ("a", "b", "other")}


def mixture(sources, *extra: str) -> list[str]:
    return [f"data.train=[{{path: {sources['a']}, weight: 3}}, {{path: {sources['b']}, weight: 1}}]",
            "train.micro_batch=8", "train.global_batch=8", *extra]


def test_a_recipe_names_a_mixture_and_the_config_round_trips(sources, tmp_path) -> None:
    from mmdit_scale.run.layout import write_config

    cfg = load_config(TINY, mixture(sources))
    assert cfg.data.train == (DataSource(str(sources["a"]), 3.0), DataSource(str(sources["b"]), 1.0))
    write_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


def test_realised_shares_match_the_weights_within_a_binomial_bound(sources) -> None:
    cfg, _ = fill_from_data(load_config(TINY, mixture(sources)))
    loader = iter(train_loader(cfg, rank=0, world_size=1))
    drawn = torch.cat([next(loader)["source"] for _ in range(250)])   # 2000 samples, several epochs of b
    n, p = len(drawn), 3 / 4
    first = int((drawn == 0).sum())
    assert abs(first - n * p) <= Z_999 * math.sqrt(n * p * (1 - p)), (first, n)
    assert set(drawn.tolist()) == {0, 1}


def test_a_mixture_resumed_from_its_checkpointed_state_gives_identical_batches(sources) -> None:
    cfg, _ = fill_from_data(load_config(TINY, mixture(sources)))
    reference = iter(train_loader(cfg, 0, 1))
    expected = [next(reference) for _ in range(12)]
    first = train_loader(cfg, 0, 1)
    it = iter(first)
    head = [next(it) for _ in range(5)]
    state = json.loads(json.dumps(first.state_dict()))   # as trainer_state.json stores it
    del first, it                                         # the run is killed here
    resumed = train_loader(cfg, 0, 1)
    resumed.load_state_dict(state)
    it = iter(resumed)
    tail = [next(it) for _ in range(7)]
    for got, want in zip(head + tail, expected):
        assert got["keys"] == want["keys"] and torch.equal(got["latent"], want["latent"])
        assert torch.equal(got["source"], want["source"]) and torch.equal(got["context"], want["context"])


def test_a_source_of_another_provenance_is_refused_before_any_rank_naming_it(sources, tmp_path, capsys) -> None:
    bad = f"data.train=[{{path: {sources['a']}}}, {{path: {sources['other']}}}]"
    cfg, _ = fill_from_data(load_config(TINY, [bad]))
    with pytest.raises(ValueError, match=f"dataset '{sources['other']}' has a different provenance"):
        check_sources(cfg)
    code = cli.main(["train", TINY, bad, "--run-dir", str(tmp_path / "run")])
    assert code == CONFIG_ERROR and f"dataset '{sources['other']}' has a different provenance" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    val = load_config(TINY, [f"data.train={sources['a']}", f"data.val={sources['other']}"])
    with pytest.raises(ValueError, match="has a different provenance from 'the training data'"):
        check_sources(fill_from_data(val)[0])


def test_pipe_and_pattern_specs_read_dims_from_an_explicit_manifest(sources) -> None:
    a = sources["a"]
    remote = (f"data.train=[{{path: 'pipe:cat {a}/shard-{{000000..000002}}.tar', "
              f"manifest: 'pipe:cat {a}/{MANIFEST_NAME}'}}]")
    cfg, note = fill_from_data(load_config(TINY, [remote, "train.micro_batch=8", "train.global_batch=8"]))
    assert (cfg.model.in_channels, cfg.data.resolution) == (4, 32)
    assert f"from the manifest pipe:cat {a}/{MANIFEST_NAME}" in note
    check_sources(cfg)
    local, _ = fill_from_data(load_config(TINY, [f"data.train={a}", "train.micro_batch=8", "train.global_batch=8"]))
    piped, direct = next(iter(train_loader(cfg, 0, 1))), next(iter(train_loader(local, 0, 1)))
    assert piped["keys"] == direct["keys"] and torch.equal(piped["latent"], direct["latent"])


def test_submit_accepts_pipe_and_brace_specs(sources, capsys) -> None:
    from launcher.slurm.checks import _missing_manifest

    a = sources["a"]
    assert _missing_manifest(f"{a}/shard-{{000000..000002}}.tar") is None
    assert _missing_manifest(f"pipe:cat {a}/shard-{{000000..000002}}.tar") is None   # read when the job runs
    assert _missing_manifest(f"file://{a}") is None
    assert "no manifest" in _missing_manifest(f"{a}/nowhere/shard-{{000000..000002}}.tar")
    code = cli.main(["submit", TINY, f"data.train=pipe:cat {a}/shard-{{000000..000002}}.tar", "--cpu", "--nodes", "1",
                     "--gpus-per-node", "1", "--dry-run"])
    out = capsys.readouterr()
    assert code == 0 and "does not exist" not in out.err and out.out.startswith("#!")
