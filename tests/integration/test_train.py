"""`mmdit-scale train` end to end: 2 CPU ranks (gloo), the tiny recipe, real shards and checkpoints.

Each test starts the real launcher in its own session, as a user would, and judges the run by
what it wrote (exit code, checkpoints, metrics.jsonl). Kept to a handful of short runs.
"""
from __future__ import annotations

import base64
import json
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from data_pipeline.format import REPA_KEY, encode_sample, shard_name
from data_pipeline.loader.synthetic import SyntheticSpec, make_sample, provenance_for
from data_pipeline.manifest import AUTOENCODER, REPA_ENCODER, EncoderInfo, LatentInfo, Manifest, ShardInfo
from data_pipeline.writer import ShardWriter
from mmdit_scale.config import load_config
from mmdit_scale.run import exit_codes, integrity

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
TEXT = {"clip_l": (32, 32), "clip_g": (32, 32), "t5": (64, None)}
"""The tiny recipe's text widths: context 64 (T5), pooled 64 (CLIP-L + CLIP-G)."""
TIMEOUT = 240


def _write_shards(out: Path, shards: int, per_shard: int, seed: int, nan_sample: int | None = None,
                  repa_width: int | None = None) -> None:
    """Real shards (format, writer, manifest) of 16 px images through the weightless pixel
    autoencoder (12 x 8 x 8 latents, so sample grids decode). The latents share a pattern, so a few
    steps visibly lower the loss; the text tensors are random. With `repa_width`, each sample also
    has REPA features on an 8 x 8 grid: a fixed linear map of each latent pixel, a target the image
    determines (the manifest names a synthetic vision encoder)."""
    spec = SyntheticSpec(shards=shards, per_shard=per_shard, channels=12, factor=2, latent_sizes=((8, 8),),
                         text=TEXT, seed=seed)
    provenance = provenance_for(spec)
    provenance.encoders[AUTOENCODER] = EncoderInfo(kind="pixel", model_dir=None, weights_sha256=None, dtype="fp32",
                                                   dims={"channels": 12, "factor": 2})
    if repa_width is not None:
        provenance.encoders[REPA_ENCODER] = EncoderInfo(kind="vision", model_dir="/synthetic/vision",
                                                        weights_sha256="0" * 64, dtype="fp32",
                                                        dims={"hidden": repa_width, "grid": 8, "image_size": 16})
        project = torch.randn(12, repa_width, generator=torch.Generator().manual_seed(99))
    provenance.latent = LatentInfo(channels=12, factor=2, scale=1.0, shift=0.0)
    pattern = torch.randn(12, 8, 8, generator=torch.Generator().manual_seed(1234))
    manifest = Manifest(provenance=provenance)
    out.mkdir(parents=True)
    for s in range(shards):
        with ShardWriter(out / shard_name(s)) as writer:
            for i in range(per_shard):
                sample = make_sample(spec, s, i)
                sample.tensors["latent"] = pattern + 0.3 * sample.tensors["latent"]
                if i == nan_sample:
                    sample.tensors["latent"][0, 0, 0] = float("nan")
                if repa_width is not None:
                    sample.tensors[REPA_KEY] = sample.tensors["latent"].flatten(1).T @ project  # (64, width)
                writer.write(sample.key, encode_sample(sample, spec.dtype))
        written = writer.commit()
        manifest.shards.append(ShardInfo(name=shard_name(s), samples=written.samples, bytes=written.bytes,
                                         sha256=written.sha256))
    manifest.save(out / "manifest.json")


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("shards")
    _write_shards(root / "train", shards=2, per_shard=32, seed=0)
    _write_shards(root / "val", shards=1, per_shard=16, seed=7)
    return root / "train", root / "val"


def start(run_dir: Path, shards, *overrides: str, env: dict | None = None, nproc: int = 2) -> subprocess.Popen:
    """The launcher in a new session (its pid is its process group), output to run_dir/../NAME.log."""
    train, val = shards
    cmd = [sys.executable, "-m", "launcher.cli", "train", "recipes/tiny.yaml", f"data.train={train}",
           f"data.val={val}", "model.in_channels=12", "data.resolution=16", "optim.warmup_steps=2",
           "eval.every=4", "logging.every=2", *overrides,
           "--nproc", str(nproc), "--run-dir", str(run_dir)]
    log = open(run_dir.with_name(run_dir.name + ".log"), "a")
    full_env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.Popen(cmd, cwd=REPO, env=full_env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def log_of(run_dir: Path) -> str:
    return run_dir.with_name(run_dir.name + ".log").read_text()


def finish(proc: subprocess.Popen, run_dir: Path) -> int:
    try:
        return proc.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"run timed out:\n{log_of(run_dir)[-3000:]}")


def wait_for(path: Path, proc: subprocess.Popen, run_dir: Path) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"run ended ({proc.returncode}) before {path} appeared:\n{log_of(run_dir)[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"{path} did not appear:\n{log_of(run_dir)[-3000:]}")
        time.sleep(0.05)


def ranks_of(run_dir: Path) -> list[int]:
    """Pids of live processes started for this run dir (launcher, agent, ranks)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if str(run_dir).encode() in cmdline and entry.name.isdigit():
            pids.append(int(entry.name))
    return pids


def sigkill_group(proc: subprocess.Popen, run_dir: Path) -> None:
    """SIGKILL the launcher's process group; every rank must follow (none is in that group)."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 20
    while ranks_of(run_dir):
        assert time.monotonic() < deadline, f"ranks outlived the launcher: {ranks_of(run_dir)}"
        time.sleep(0.1)


def records(run_dir: Path, kind: str) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def latest(run_dir: Path) -> str:
    return (run_dir / "checkpoints" / "latest").read_text().strip()


def val_losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["val_loss"] for r in records(run_dir, "val")}


def test_sigkill_at_any_moment_then_resume_is_bit_exact(shards, tmp_path):
    steps = ["train.steps=10", "train.ema_every=2"]
    ref = tmp_path / "ref"
    assert finish(start(ref, shards, *steps, "checkpoint.every=10"), ref) == 0, log_of(ref)
    # ZeRO-2 fp32 lowers the loss on the held-out shards.
    losses = val_losses(ref)
    assert losses[10] < 0.95 * losses[0], losses

    run = tmp_path / "killed"
    # 1. Killed in the middle of writing checkpoint 3: DeepSpeed shards and model.safetensors are
    # written, nothing renamed. `latest` must still name checkpoint 2.
    proc = start(run, shards, *steps, "checkpoint.every=1", env={"MMDIT_TEST_PAUSE_IN_CHECKPOINT": "3"})
    wait_for(run / "checkpoints" / ".tmp-step_0000003" / "PAUSED", proc, run)
    sigkill_group(proc, run)
    assert latest(run) == "step_0000002"
    # 2. Resumed, then killed at a random moment after checkpoint 5 (mid-step or mid-write), at the
    # latest when checkpoint 8 appears, so the kill always lands before the end.
    proc = start(run, shards, *steps, "checkpoint.every=1")
    wait_for(run / "checkpoints" / "step_0000005", proc, run)
    delay = random.uniform(0.0, 1.5)
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline and not (run / "checkpoints" / "step_0000008").exists():
        time.sleep(0.01)
    sigkill_group(proc, run)
    # 3. Resumed to the end.
    assert finish(start(run, shards, *steps, "checkpoint.every=1"), run) == 0, log_of(run)
    log = log_of(run)
    assert "resumed from" in log and "step_0000002" in log
    for name in ("model.safetensors", "ema.safetensors"):
        a = (ref / "checkpoints" / "step_0000010" / name).read_bytes()
        b = (run / "checkpoints" / "step_0000010" / name).read_bytes()
        assert a == b, f"{name} differs after kills (second kill {delay:.2f} s after checkpoint 5)"
    state = json.loads((run / "checkpoints" / "step_0000010" / "trainer_state.json").read_text())
    assert (state["step"], state["samples_seen"], state["skipped_steps"]) == (10, 80, 0)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest", "step_0000009", "step_0000010"]


def test_preemption_checkpoints_and_the_run_resumes_on_another_world_size(shards, tmp_path):
    """ZeRO-3 bf16 on 2 ranks: SIGUSR1 to the launcher -> every rank finishes its step, checkpoints,
    exit 75. Resumed on 1 rank through DeepSpeed's universal checkpoint (weights checked bit-exact
    against model.safetensors by the trainer), it trains on to the end."""
    run = tmp_path / "preempt"
    args = ("train.steps=12", "parallel.zero_stage=3", "parallel.precision=bf16", "checkpoint.every=100")
    proc = start(run, shards, *args)
    deadline = time.monotonic() + TIMEOUT
    while not (run / "metrics.jsonl").exists() or not records(run, "train"):
        assert proc.poll() is None and time.monotonic() < deadline, log_of(run)
        time.sleep(0.1)
    proc.send_signal(signal.SIGUSR1)
    assert finish(proc, run) == 75, log_of(run)
    assert "[rank 0] SIGUSR1" in log_of(run) and "[rank 1] SIGUSR1" in log_of(run)
    stopped = json.loads((run / "checkpoints" / latest(run) / "trainer_state.json").read_text())["step"]
    assert 2 <= stopped < 12 and latest(run) == f"step_{stopped:07d}"
    assert finish(start(run, shards, *args, nproc=1), run) == 0, log_of(run)
    log = log_of(run)
    assert "resuming through DeepSpeed's universal checkpoint" in log
    assert f"resumed from {run}/checkpoints/step_{stopped:07d} at step {stopped}" in log
    state = json.loads((run / "checkpoints" / "step_0000012" / "trainer_state.json").read_text())
    assert (state["world_size"], state["samples_seen"]) == (1, 12 * 8)
    losses = val_losses(run)
    assert losses[12] < 0.95 * losses[0], losses


@pytest.fixture(scope="module")
def metric_models(tmp_path_factory) -> tuple[Path, Path]:
    from mmdit_scale.eval.image_metrics.demo_models import build_metric_models

    return build_metric_models(tmp_path_factory.mktemp("metric-models"), ["a caption of a sample"], image_size=16)


@pytest.mark.parametrize("stage,precision,nan_steps", [(2, "bf16", "3"), (3, "fp32", "")])
def test_two_ranks_lower_the_loss(shards, tmp_path, stage, precision, nan_steps, metric_models):
    """ZeRO-2 bf16 and ZeRO-3 fp32 (ZeRO-2 fp32 and ZeRO-3 bf16 are the runs above). The ZeRO-2 run
    also gets a NaN loss on rank 0 at step 3: that update is skipped and counted, training goes on.
    Both log image metrics (tiny random feature models) at steps 5 and 10, 10 prompts over 2 ranks."""
    run = tmp_path / f"z{stage}{precision}"
    rc = finish(start(run, shards, "train.steps=10", f"parallel.zero_stage={stage}",
                      f"parallel.precision={precision}", "checkpoint.every=100", "logging.sample_every=5",
                      "eval.image_every=5", "eval.image_prompts=10", f"eval.metrics.inception={metric_models[0]}",
                      f"eval.metrics.clip={metric_models[1]}",
                      env={"MMDIT_TEST_NAN_STEPS": nan_steps}), run)
    assert rc == 0, log_of(run)
    losses = val_losses(run)
    assert losses[10] < 0.95 * losses[0], losses
    state = json.loads((run / "checkpoints" / "step_0000010" / "trainer_state.json").read_text())
    assert state["skipped_steps"] == (1 if nan_steps else 0)
    assert ("step 3: non-finite loss or gradient, update skipped" in log_of(run)) == bool(nan_steps)
    train = records(run, "train")
    # 4x4 image tokens + 2 x 77 text tokens per sample.
    assert all(r["tokens_per_s"] == pytest.approx(r["samples_per_s"] * (16 + 154)) for r in train)
    # Sample grids at steps 5 and 10: 8 decoded 16 px images (upscaled x6) in 2 rows, and their captions.
    for step in (5, 10):
        grid = Image.open(run / "samples" / f"step_{step:07d}.png")
        assert grid.size == (4 * 96 + 5 * 2, 2 * 96 + 3 * 2)
        assert len((run / "samples" / f"step_{step:07d}.txt").read_text().splitlines()) == 8
    images = records(run, "images")
    assert [r["step"] for r in images] == [5, 10] and all(r["images"] == 10 for r in images)
    assert all(r["eval/fid"] > 0 and r["eval/cmmd"] > 0 and 0 <= r["eval/clip_score"] <= 100 for r in images)
    assert (run / "image_reference.npz").is_file()
    # scaling-report reads them as eval metrics of the validation point at step 10 (eval.every=4 and the last step).
    from mmdit_scale.eval.scaling import read_run

    assert set(read_run(run).at_step(10).evals) == {"fid", "cmmd", "clip_score"}


def test_nonfinite_steps_in_a_row_stop_the_run(shards, tmp_path):
    """ZeRO-0 fp32 (the stage where the trainer, not DeepSpeed, skips the update). NaN loss on rank 0
    at steps 3, 5 and 6 with nan_tolerance=2: 3 is skipped, 5 and 6 in a row stop the run with exit
    code 65 and `latest` at the last good checkpoint."""
    run = tmp_path / "nan"
    proc = start(run, shards, "train.steps=10", "train.nan_tolerance=2", "checkpoint.every=1", "optim.warmup_steps=10",
                 "parallel.zero_stage=0", "eval.every=0", "logging.every=1", env={"MMDIT_TEST_NAN_STEPS": "3,5,6"})
    assert finish(proc, run) == 65, log_of(run)
    assert "2 optimizer steps in a row (to step 6) had a non-finite loss or gradient" in log_of(run)
    assert latest(run) == "step_0000004"
    ckpts = run / "checkpoints"
    assert not (ckpts / "step_0000005").exists() and not (ckpts / "step_0000006").exists()
    assert json.loads((ckpts / "step_0000004" / "trainer_state.json").read_text())["skipped_steps"] == 1
    train = {r["step"]: r for r in records(run, "train")}
    assert [train[s]["skipped_steps"] for s in range(1, 7)] == [0, 0, 1, 1, 2, 3]
    assert train[3]["loss"] is None and all(train[s]["loss"] > 0 for s in (1, 2, 4))
    # A skipped update does not consume the schedule: step 4 is the 3rd update, lr 3/10 of the peak.
    assert [train[s]["lr"] for s in (1, 2, 4)] == pytest.approx([1e-4, 2e-4, 3e-4])


def _pickle_that_touches(canary: Path) -> bytes:
    """A pickle whose loading creates `canary`: what loading any pickle from a checkpoint could run."""
    class Payload:
        def __reduce__(self):
            return exec, (f"open({str(canary)!r}, 'w').close()",)

    return pickle.dumps(Payload())


def test_an_altered_checkpoint_is_refused_and_its_pickles_never_run(shards, tmp_path):
    """A file dropped into the newest checkpoint's DeepSpeed shards (a pickle that DeepSpeed's
    universal conversion would load) and a truncated optimizer shard: the resume, on another world
    size, names both, falls back to the older checkpoint, and no payload runs. Then a capable attacker
    rewrites trainer_state.json's RNG states as a pickle and the checksums to match: our own state is
    JSON, so the pickle is never loaded either."""
    run, canary = tmp_path / "run", tmp_path / "CANARY"
    assert finish(start(run, shards, "train.steps=4", "checkpoint.every=2", "checkpoint.keep=3", nproc=1), run) == 0
    newest = run / "checkpoints" / "step_0000004"
    (newest / "deepspeed" / "evil_model_states.pt").write_bytes(_pickle_that_touches(canary))
    optim, = (newest / "deepspeed").glob("*optim_states.pt")
    optim.write_bytes(optim.read_bytes()[:100])
    assert finish(start(run, shards, "train.steps=6", "checkpoint.every=2", "checkpoint.keep=3"), run) == 0, \
        log_of(run)
    log = log_of(run)
    assert f"checkpoint {newest} is refused:" in log
    assert f"{newest}/deepspeed/evil_model_states.pt is not recorded in checksums.json" in log
    assert f"{optim} has 100 bytes" in log and "(truncated or replaced)" in log
    assert "resuming from step_0000002, the newest intact checkpoint, instead" in log
    assert not canary.exists() and latest(run) == "step_0000006"

    ckpt = run / "checkpoints" / "step_0000006"
    state = json.loads((ckpt / "trainer_state.json").read_text())
    state["rng"] = [base64.b64encode(_pickle_that_touches(canary)).decode()] * len(state["rng"])
    (ckpt / "trainer_state.json").write_text(json.dumps(state))
    integrity.write_checksums(ckpt, integrity.hash_share(ckpt, integrity.checkpoint_files(ckpt)))
    assert finish(start(run, shards, "train.steps=8", "checkpoint.every=2", "checkpoint.keep=3"), run) == 0, \
        log_of(run)
    assert "keeps its RNG states in a form this version does not load (a pickle, never unpickled)" in log_of(run)
    assert not canary.exists() and latest(run) == "step_0000008"


@pytest.fixture
def small_disk(tmp_path):
    """A 64 MiB tmpfs: a filesystem that can fill up (mounting needs root, which CI has)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs to fill needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], check=True, timeout=30)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], timeout=30)


def test_a_full_disk_during_a_checkpoint_ends_with_a_message_and_loses_nothing(shards, tmp_path, small_disk):
    """Checkpoints on a device that fills up before step 4's: exit 74 naming the device, the partial
    checkpoint removed, `latest` on step 2; with space again the run resumes and finishes."""
    run, ckpts = tmp_path / "run", small_disk / "ckpts"
    args = (f"checkpoint.dir={ckpts}", "checkpoint.every=2", "checkpoint.keep=3")
    assert finish(start(run, shards, "train.steps=2", *args), run) == 0, log_of(run)
    one = sum(f.stat().st_size for f in (ckpts / "step_0000002").rglob("*") if f.is_file())
    filler = small_disk / "filler"
    with open(filler, "wb") as f:   # leave a third of a checkpoint free
        f.write(b"\0" * max(0, shutil.disk_usage(small_disk).free - one // 3))
    assert finish(start(run, shards, "train.steps=4", *args), run) == exit_codes.IO_ERROR, log_of(run)
    log = log_of(run)
    assert f"no space left on the device of {ckpts} while writing checkpoint step_0000004" in log
    assert "`latest` still names step_0000002" in log and "Traceback" not in log.split("step 4")[-1]
    assert latest_in(ckpts) == "step_0000002" and not list(ckpts.glob(".tmp-*"))
    filler.unlink()
    assert finish(start(run, shards, "train.steps=4", *args), run) == 0, log_of(run)
    assert latest_in(ckpts) == "step_0000004"


def latest_in(ckpts: Path) -> str:
    return (ckpts / "latest").read_text().strip()


def test_a_nan_sample_is_named_where_its_step_is_skipped(shards, tmp_path):
    """Sample 5 of a one-shard set has a NaN in its latent: the step that draws it is skipped, the
    message names the sample (its key locates it in its shard), and training goes on."""
    data = tmp_path / "nan-shards"
    _write_shards(data, shards=1, per_shard=8, seed=3, nan_sample=5)
    run = tmp_path / "run"
    rc = finish(start(run, (data, shards[1]), "train.steps=4", "train.global_batch=4", "train.micro_batch=4",
                      "parallel.zero_stage=0", "checkpoint.every=4", "eval.every=0", nproc=1), run)
    assert rc == 0, log_of(run)
    named = [line for line in log_of(run).splitlines() if "update skipped" in line]
    assert named and all("non-finite values in sample(s) 's00000_000005'" in line for line in named), named


def test_a_run_that_ends_in_a_streak_of_skipped_steps_still_leaves_its_checkpoint(shards, tmp_path):
    """NaN losses at the last two steps (within train.nan_tolerance): "finished" promises a final
    checkpoint, and it is written; its weights are the last good ones, step 2's, bit for bit."""
    run = tmp_path / "run"
    rc = finish(start(run, shards, "train.steps=4", "checkpoint.every=2", "checkpoint.keep=3", "train.nan_tolerance=5",
                      "parallel.zero_stage=0", "eval.every=0", "train.ema_every=0", nproc=1,
                      env={"MMDIT_TEST_NAN_STEPS": "3,4"}), run)
    assert rc == 0, log_of(run)
    assert latest(run) == "step_0000004"
    assert "(the weights of step 2: the 2 step(s) since had non-finite values and changed nothing)" in log_of(run)
    ckpts = run / "checkpoints"
    assert (ckpts / "step_0000004" / "model.safetensors").read_bytes() == \
        (ckpts / "step_0000002" / "model.safetensors").read_bytes()


def test_compiled_training_matches_eager_and_its_checkpoint_loads_eagerly(shards, tmp_path):
    """train.compile=true (DeepSpeed's engine.compile(), torch.compile's inductor on CPU): 2 ranks,
    ZeRO-2, fp32. The loss at every logged step stays within 1e-3 relative of the eager run's, and the
    checkpoint's weights carry the model's own names (no `_orig_mod.`), so export builds an eager model."""
    from safetensors.torch import load_file

    from mmdit_scale.interop.export import export_checkpoint
    from mmdit_scale.model import MMDiT

    runs = {}
    for name, flag in (("eager", "false"), ("compiled", "true")):
        run = tmp_path / name
        assert finish(start(run, shards, "train.steps=4", "logging.every=1", "checkpoint.every=4", "eval.every=0",
                            f"train.compile={flag}"), run) == 0, log_of(run)
        runs[name] = {r["step"]: r["loss"] for r in records(run, "train")}
    assert runs["eager"].keys() == runs["compiled"].keys() == {1, 2, 3, 4}
    for step, loss in runs["eager"].items():
        assert runs["compiled"][step] == pytest.approx(loss, rel=1e-3), step
    weights = load_file(tmp_path / "compiled" / "checkpoints" / "step_0000004" / "model.safetensors")
    assert not [k for k in weights if "_orig_mod" in k]
    export_checkpoint(tmp_path / "compiled", "safetensors", tmp_path / "exported.safetensors")
    cfg = load_config(tmp_path / "compiled" / "config.yaml")
    MMDiT(cfg.model).load_state_dict(load_file(tmp_path / "exported.safetensors"), strict=True)


def test_routed_training_lowers_the_loss_and_resumes_exactly(shards, tmp_path):
    """TREAD routing (half the image tokens around block 0..1 of the tiny recipe's 2): the validation
    loss falls, and a run stopped at step 4 and resumed ends with the weights of an uninterrupted one
    (the routing draws come from the step's seeded generator)."""
    routing = "train.routing={ratio: 0.5, start_block: 0, end_block: 1}"
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert finish(start(straight, shards, routing, "train.steps=8", "checkpoint.every=8", "eval.every=8",
                        nproc=1), straight) == 0, log_of(straight)
    losses = val_losses(straight)
    assert losses[8] < 0.95 * losses[0], losses
    for steps in (4, 8):
        assert finish(start(resumed, shards, routing, f"train.steps={steps}", "checkpoint.every=4", "eval.every=8",
                            nproc=1), resumed) == 0, log_of(resumed)
    final = "checkpoints/step_0000008/model.safetensors"
    assert (straight / final).read_bytes() == (resumed / final).read_bytes()
