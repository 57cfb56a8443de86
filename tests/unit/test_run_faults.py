"""Faults refused before any rank starts: a run dir in use, a resume with another model, a
checkpoint file altered after it was written, values and overrides that do not parse."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from data_pipeline.loader.synthetic import TINY_TEXT, SyntheticSpec, write_synthetic
from launcher import cli
from mmdit_scale.config import ConfigError, load_config
from mmdit_scale.run import integrity, layout, lock
from mmdit_scale.run.checkpoints import load_weights, write_latest
from mmdit_scale.run.data_dims import fill_from_data
from mmdit_scale.run.exit_codes import CONFIG_ERROR

REPO = Path(__file__).resolve().parents[2]
TINY = "recipes/tiny.yaml"
HOLD = ("import sys, time; from pathlib import Path; from mmdit_scale.run import lock; "
        "lock.acquire(Path(sys.argv[1])); print('held', flush=True); time.sleep(60)")


@pytest.fixture
def shards(tmp_path: Path) -> Path:
    write_synthetic(tmp_path / "shards", SyntheticSpec(shards=1, per_shard=4, latent_sizes=((8, 8),), text=TINY_TEXT))
    return tmp_path / "shards"


def train(*args: str) -> int:
    return cli.main(["train", TINY, *args])


def test_a_second_trainer_on_a_run_dir_in_use_is_refused_naming_the_holder(shards, tmp_path, capsys) -> None:
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert train(f"data.train={shards}", "--run-dir", str(run)) == CONFIG_ERROR
        err = capsys.readouterr().err
        assert f"{run} is in use by another trainer (pid {holder.pid} on host {socket.gethostname()}" in err
        assert not (run / layout.CONFIG_FILE).exists()
    finally:
        holder.kill()
        holder.wait()
    # SIGKILL left the holder's record behind, but the kernel dropped its lock: the next one takes over.
    fd, note = lock.acquire(run)
    try:
        assert note.startswith(f"took over the lock of a run that ended without releasing it (pid {holder.pid}")
    finally:
        lock.release(fd)
    fd, note = lock.acquire(run)   # a released lock leaves no record: nothing to take over
    lock.release(fd)
    assert note == ""


def fake_checkpoint(run: Path, cfg, step: int = 4) -> Path:
    """A complete checkpoint dir (as far as `latest` and the launcher can tell) written with `cfg`."""
    from safetensors.torch import save_file
    import torch

    ckpt = run / layout.CHECKPOINTS / layout.checkpoint_name(step)
    ckpt.mkdir(parents=True)
    save_file({"w": torch.arange(6.0)}, ckpt / layout.MODEL_FILE)
    layout.write_config(cfg, ckpt / layout.CONFIG_FILE)
    (ckpt / layout.STATE_FILE).write_text(json.dumps({"step": step}))
    integrity.write_checksums(ckpt, integrity.hash_share(ckpt, integrity.checkpoint_files(ckpt)))
    write_latest(ckpt.parent, ckpt.name)
    return ckpt


def test_a_resume_with_another_model_is_refused_and_keeps_the_run_config(shards, tmp_path, capsys) -> None:
    run = tmp_path / "run"
    cfg, _ = fill_from_data(load_config(TINY, [f"data.train={shards}"]))
    fake_checkpoint(run, cfg)
    layout.write_config(cfg, run / layout.CONFIG_FILE)
    before = (run / layout.CONFIG_FILE).read_bytes()
    assert train(f"data.train={shards}", "model.depth=3", "--run-dir", str(run)) == CONFIG_ERROR
    err = capsys.readouterr().err
    assert "the model differs from the one" in err and "model.depth: 2 -> 3" in err
    assert (run / layout.CONFIG_FILE).read_bytes() == before


def test_checksums_name_a_truncated_altered_or_added_file(tmp_path) -> None:
    cfg = load_config(TINY, ["model.in_channels=4", "model.context_dim=8", "model.pooled_dim=8"])
    ckpt = fake_checkpoint(tmp_path, cfg)
    (ckpt / layout.DS_TAG).mkdir()
    assert integrity.problems(ckpt) == []
    shard = ckpt / layout.MODEL_FILE
    data = shard.read_bytes()
    shard.write_bytes(data[:-3])
    assert integrity.problems(ckpt) == [f"{shard} has {len(data) - 3} bytes, {len(data)} were written "
                                        "(truncated or replaced)"]
    with pytest.raises(integrity.CheckpointCorrupt, match="truncated or replaced"):
        load_weights(ckpt)                      # sample, export and init_from read through this
    shard.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    assert integrity.problems(ckpt) == [f"{shard} has other bytes than were written (sha256 differs)"]
    shard.write_bytes(data)
    (ckpt / layout.DS_TAG / "mp_rank_00_model_states.pt").write_bytes(b"a pickle")
    assert integrity.problems(ckpt) == [f"{ckpt / layout.DS_TAG / 'mp_rank_00_model_states.pt'} is not recorded "
                                        f"in {layout.CHECKSUMS_FILE} (added after the checkpoint was written)"]
    (ckpt / layout.DS_TAG / "mp_rank_00_model_states.pt").unlink()
    (ckpt / layout.UNIVERSAL_TAG).mkdir()
    (ckpt / layout.UNIVERSAL_TAG / "x.pt").write_bytes(b"rebuilt before every use, never trusted")
    assert integrity.problems(ckpt) == []
    # Split over ranks, the shares cover every file once.
    shares = [integrity.problems(ckpt, rank, 3) for rank in range(3)]
    assert shares == [[], [], []]
    (ckpt / layout.CHECKSUMS_FILE).unlink()
    assert "has no checksums.json" in integrity.problems(ckpt)[0]
    assert integrity.problems(ckpt, rank=1, world=2) == []


@pytest.mark.parametrize("override, message", [
    ("optim.lr=.inf", "bad value for 'optim.lr' in override 'optim.lr=.inf': expected a finite number, got float inf"),
    ("flow.shift=.nan", "expected a finite number, got float nan"),
    ("optim.lr=[1", "cannot parse override 'optim.lr=[1': while parsing a flow sequence"),
])
def test_values_and_overrides_that_cannot_be_used_are_config_errors(override: str, message: str, capsys) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(".", r"\.")):
        load_config(TINY, [override])
    assert train(override) == CONFIG_ERROR
    assert message in capsys.readouterr().err


def test_hostile_yaml_is_refused_and_runs_nothing(tmp_path, capsys) -> None:
    canary = tmp_path / "CANARY"
    recipe = tmp_path / "hostile.yaml"
    recipe.write_text(f'train: !!python/object/apply:os.system ["touch {canary}"]\n')
    assert cli.main(["config", str(recipe)]) == CONFIG_ERROR
    assert "could not determine a constructor for the tag" in capsys.readouterr().err and not canary.exists()
