"""What a high-resolution fine-tune is checked for before any rank starts: buckets from one source,
sizes that fit the autoencoder and the patch, and token grids the position table covers."""
from __future__ import annotations

from pathlib import Path

import pytest

from data_pipeline.loader.synthetic import TINY_TEXT, SyntheticSpec, write_synthetic
from launcher import cli
from mmdit_scale.config import load_config
from mmdit_scale.run.data_dims import check_sources, fill_from_data
from mmdit_scale.run.exit_codes import CONFIG_ERROR

TINY = "recipes/tiny.yaml"
LATENTS = ((8, 8), (6, 10), (10, 6))
"""Three buckets of the 8x autoencoder: 64x64, 48x80 and 80x48 px."""


@pytest.fixture(scope="module")
def bucketed(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bucketed")
    write_synthetic(root, SyntheticSpec(shards=1, per_shard=6, latent_sizes=LATENTS, text=TINY_TEXT, channels=4))
    return root


def test_buckets_come_from_the_manifest(bucketed) -> None:
    cfg, note = fill_from_data(load_config(TINY, [f"data.train={bucketed}"]))
    assert set(cfg.data.buckets) == {(64, 64), (48, 80), (80, 48)} and "data.buckets=(3 buckets)" in note


def test_recipe_buckets_that_differ_from_the_manifest_are_refused_naming_the_first_difference(bucketed) -> None:
    same = "data.buckets=[[80, 48], [64, 64], [48, 80]]"
    assert set(fill_from_data(load_config(TINY, [f"data.train={bucketed}", same]))[0].data.buckets) == \
        {(64, 64), (48, 80), (80, 48)}
    with pytest.raises(ValueError, match=r"data.buckets disagrees with the manifest .* \(2 buckets against 3\): "
                                         r"40x96 is in data.buckets but not in the data"):
        fill_from_data(load_config(TINY, [f"data.train={bucketed}", "data.buckets=[[64, 64], [40, 96]]"]))


def test_bucket_sides_follow_the_data_not_a_fixed_eight() -> None:
    """The demo's pixel autoencoder (factor 2) with patch 2 gives 4 px buckets such as 104x40."""
    assert load_config(TINY, ["data.buckets=[[104, 40], [40, 104]]"]).data.buckets == ((104, 40), (40, 104))


def test_a_bucket_beyond_the_position_table_is_refused_before_any_rank_starts(bucketed, tmp_path, capsys) -> None:
    small = ["model.pos_embed_max_size=4", f"data.train={bucketed}"]
    with pytest.raises(ValueError, match=r"its 48x80 px bucket is a 3x5 token grid, beyond the position table's 4 "
                                         r"per side: raise model.pos_embed_max_size to at least 5"):
        check_sources(fill_from_data(load_config(TINY, small))[0])
    code = cli.main(["train", TINY, *small, "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == CONFIG_ERROR and "raise model.pos_embed_max_size to at least 5" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
    # The validation set's buckets count too.
    val = [f"data.train={bucketed}", f"data.val={bucketed}", "model.pos_embed_max_size=4"]
    with pytest.raises(ValueError, match="beyond the position table"):
        check_sources(fill_from_data(load_config(TINY, val))[0])


def test_sizes_that_are_not_multiples_of_factor_times_patch_are_refused(bucketed) -> None:
    with pytest.raises(ValueError, match=r"its 48x80 px images are not multiples of 32 px \(autoencoder factor 8 x "
                                         r"model.patch_size 4\)"):
        check_sources(fill_from_data(load_config(TINY, [f"data.train={bucketed}", "model.patch_size=4"]))[0])


def test_null_text_empty_without_the_stored_encoding_is_refused_before_any_rank(bucketed, tmp_path, capsys) -> None:
    code = cli.main(["train", TINY, f"data.train={bucketed}", "data.null_text=empty", "--run-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == CONFIG_ERROR and f"data.null_text=empty needs the encoded empty string {bucketed}/null_text" in err
    assert "or set data.null_text=zeros" in err and not (tmp_path / "r").exists()
