"""`mmdit-scale submit` and `submit-prepare` on a real SLURM cluster: two simulated nodes on this machine.

The session fixture starts the cluster with cluster/local/up.sh (installing SLURM if needed) and
stops it with down.sh if it started it. Jobs run the tiny recipe with one CPU rank per node.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher.slurm import records, sbatch
from launcher.slurm.run_status import run_status

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
UP, DOWN = REPO / "cluster" / "local" / "up.sh", REPO / "cluster" / "local" / "down.sh"
TIMEOUT = 300
STEPS = 30
"""Enough steps (about 0.25 s each) that USR1, sent at step 2, lands mid-run."""
HOSTILE = "it's a \"run\" $(touch CANARY) `touch CANARY` ;&|* %j"
TEXT = {"clip_l": (32, 32), "clip_g": (32, 32), "t5": (64, None)}
"""The tiny recipe's text widths: context 64 (T5), pooled 64 (CLIP-L + CLIP-G)."""
FINAL = {"CANCELLED", "COMPLETED", "FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE",
         "PREEMPTED"}


@pytest.fixture(scope="session")
def cluster():
    if os.geteuid() != 0:
        pytest.skip("the local SLURM cluster needs root (cluster/local/up.sh installs packages, starts daemons)")
    if shutil.which("sbatch") is None and shutil.which("apt-get") is None:
        pytest.skip("SLURM is not installed and apt-get is not available to install it")
    already_up = Path("/run/mmdit-slurm/nodes").is_file()
    done = subprocess.run([str(UP), "2"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    yield
    if not already_up:
        subprocess.run([str(DOWN)], capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> tuple[Path, Path]:
    from data_pipeline.loader.synthetic import SyntheticSpec, write_synthetic

    root = tmp_path_factory.mktemp("shards")
    for name, count, seed in (("train", 2, 0), ("val", 1, 7)):
        write_synthetic(root / name, SyntheticSpec(shards=count, per_shard=16, latent_sizes=((8, 8),), text=TEXT,
                                                   seed=seed))
    return root / "train", root / "val"


def cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"}
    return subprocess.run([sys.executable, "-m", "launcher.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def submit(run_dir: Path, shards, *extra: str) -> int:
    train, val = shards
    done = cli("submit", "recipes/tiny.yaml", f"data.train={train}", f"data.val={val}", f"train.steps={STEPS}",
               "optim.warmup_steps=2", "eval.every=0", "logging.every=2", "checkpoint.every=100", *extra,
               "--nodes", "2", "--gpus-per-node", "1", "--cpu", "--run-dir", str(run_dir))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("Submitted batch job ")
    job_id = int(lines[0].split()[-1])
    assert lines[1] == f"job {job_id} run dir {run_dir}"
    return job_id


def log(path: Path) -> str:
    return path.read_text() if path.is_file() else f"({path} does not exist)"


def wait_final(job_id: int, logfile: Path) -> str:
    deadline = time.monotonic() + TIMEOUT
    while True:
        info = sbatch.query(job_id)
        if info is not None and info.state in FINAL:
            return info.state
        if time.monotonic() > deadline:
            subprocess.run(["scancel", str(job_id)])
            pytest.fail(f"job {job_id} did not finish ({info}):\n{log(logfile)[-4000:]}")
        time.sleep(0.5)


def test_two_node_job_requeues_on_usr1_resumes_and_matches_an_uninterrupted_job(cluster, shards, tmp_path):
    # The uninterrupted reference runs in a run dir named to break any unquoted shell or #SBATCH line.
    ref = tmp_path / f"ref {HOSTILE}"
    run = tmp_path / "preempted"
    ref_id, run_id = submit(ref, shards), submit(run, shards)

    # A job that waits for the reference (afterok) and starts from its weights: stage chaining.
    done = cli("submit", "recipes/tiny.yaml", f"data.train={shards[0]}", "train.steps=2", "eval.every=0",
               f"train.init_from={ref}", "--nodes", "1", "--gpus-per-node", "1", "--cpu", "--after", str(ref_id),
               "--run-dir", str(tmp_path / "stage2"))
    assert done.returncode == 0, done.stderr
    stage2_id = int(done.stdout.split()[3])
    info = sbatch.query(stage2_id)
    assert (info.state, info.reason) == ("PENDING", "Dependency")

    # Submitting a run dir whose job is queued or running is refused: two jobs must never share one.
    again = cli("submit", "recipes/tiny.yaml", f"data.train={shards[0]}", "--nodes", "2", "--gpus-per-node", "1",
                "--cpu", "--run-dir", str(run))
    assert again.returncode == 2 and re.search(f"job {run_id} of .* is (PENDING|RUNNING)", again.stderr), again.stderr

    # USR1 to the batch shell once the trainer has logged a step: checkpoint, exit 75, requeue, resume.
    deadline = time.monotonic() + TIMEOUT
    while "step 2 |" not in log(run / "slurm" / f"{run_id}.out"):
        assert time.monotonic() < deadline, log(run / "slurm" / f"{run_id}.out")
        time.sleep(0.1)
    subprocess.run(["scancel", "--signal=USR1", "--batch", str(run_id)], check=True)

    for job_id, run_dir in ((ref_id, ref), (run_id, run), (stage2_id, tmp_path / "stage2")):
        out = log(run_dir / "slurm" / f"{job_id}.out")
        assert wait_final(job_id, run_dir / "slurm" / f"{job_id}.out") == "COMPLETED", out[-4000:]

    assert not list(tmp_path.rglob("CANARY")) and not list(REPO.glob("CANARY"))
    ref_log, run_log = log(ref / "slurm" / f"{ref_id}.out"), log(run / "slurm" / f"{run_id}.out")
    # One launcher per node, labelled by srun's task id, each with one of the 2 ranks.
    for task in (0, 1):
        assert f"{task}: mmdit-scale train: {ref} (starting fresh), 2 rank(s)" in ref_log
    assert f"rendezvous node1:{20000 + ref_id % 20000}" in ref_log

    events = [(e.restart, e.kind, e.detail) for e in records.read_events(run)]
    final = json.loads((run / "checkpoints" / f"step_{STEPS:07d}" / "trainer_state.json").read_text())
    assert events == [(0, "start", "node[1-2]"), (0, "signal", "USR1"), (0, "exit", "75"), (0, "requeue", ""),
                      (1, "start", "node[1-2]"), (1, "exit", "0")], run_log
    assert "resumed from" in run_log and final["world_size"] == 2
    for name in ("model.safetensors", "ema.safetensors"):
        a = (ref / "checkpoints" / f"step_{STEPS:07d}" / name).read_bytes()
        b = (run / "checkpoints" / f"step_{STEPS:07d}" / name).read_bytes()
        assert a == b, f"{name}: the requeued run ended with other weights than the uninterrupted one"

    status = run_status(run)
    [job] = status.jobs
    assert (job.job_id, job.state, job.restarts, job.last_exit) == (run_id, "COMPLETED", 1, 0)
    assert (status.step, status.total_steps, status.checkpoint) == (STEPS, STEPS, f"step_{STEPS:07d}")
    text = cli("status", str(run)).stdout
    assert f"job         {run_id}: COMPLETED, restarts 1, nodes node[1-2], last trainer exit 0 [scontrol]" in text

    stage2_log = log(tmp_path / "stage2" / "slurm" / f"{stage2_id}.out")
    assert "init_from: " in stage2_log and f"from {ref}/checkpoints/step_{STEPS:07d}" in stage2_log, stage2_log


def test_prepare_job_array_then_merge(cluster, tmp_path):
    images, out = tmp_path / "images", tmp_path / f"shards {HOSTILE}"
    done = cli("make-demo-data", "--out", str(images), "--n", "12", "--size", "64")
    assert done.returncode == 0, done.stderr
    done = cli("submit-prepare", str(images), str(out), "--parts", "2", "--prepare-flags", "--encoders", "demo",
               "--resolution", "32", "--samples-per-shard", "4")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [ln.split()[:3] for ln in lines[:2]] == [["Submitted", "batch", "job"]] * 2
    array_id, merge_id = (int(ln.split()[-1]) for ln in lines[:2])
    assert wait_final(merge_id, out / "slurm" / f"merge-{merge_id}.out") == "COMPLETED", [
        log(p) for p in sorted((out / "slurm").glob("*.out"))]
    for task in (0, 1):
        assert f"prepare part {task}/2 (job " in log(out / "slurm" / f"prepare-{array_id}_{task}.out")
    manifest = json.loads((out / "manifest.json").read_text())
    names = sorted(s["name"] for s in manifest["shards"])
    assert sum(s["samples"] for s in manifest["shards"]) == 12
    assert {n.split("-")[1] for n in names} == {"00000", "00001"}, names  # shards of both parts
    assert not list(tmp_path.rglob("CANARY"))
