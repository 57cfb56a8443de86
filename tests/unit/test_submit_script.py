"""The rendered training script run by bash, with stand-in `srun` and `scontrol` commands on PATH.

The stand-ins record what the script asked of SLURM, so these tests check in a second what the
script does with hostile strings, signals and exit codes; tests/integration/test_slurm.py runs
the same script under a real SLURM.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from launcher.local_launch import slurm_layout
from launcher.slurm.records import read_events
from launcher.slurm.render import Environment, TrainJob, render_train

HOSTILE = "it's a \"run\" $(touch CANARY1) `touch CANARY2` ; touch CANARY3 & | * ~ ${HOME} %j #x"
"""Run by a shell, it would leave CANARY files in the working directory."""

SRUN = r"""#!/bin/bash
# Stand-in for srun: record the arguments, then act as SRUN_MODE says.
printf '%s\0' "$@" > "$LOG/srun.args"
case "$SRUN_MODE" in
    exit*) exit "${SRUN_MODE#exit}" ;;
    preemptible)
        trap 'echo USR1 >> "$LOG/srun.signals"; exit 75' USR1
        trap 'echo TERM >> "$LOG/srun.signals"; exit 75' TERM
        touch "$LOG/srun.ready"
        while :; do sleep 0.05; done ;;
esac
"""
SCONTROL = r"""#!/bin/bash
# Stand-in for scontrol: the first host of any node list is node1; requeues are recorded.
case "$1" in
    show) echo node1; echo node2 ;;
    requeue) echo "$2" >> "$LOG/requeued" ;;
esac
"""


@pytest.fixture
def sandbox(tmp_path: Path) -> dict:
    hostile = HOSTILE
    bin_dir, log = tmp_path / "bin", tmp_path / "log"
    bin_dir.mkdir()
    log.mkdir()
    for name, text in (("srun", SRUN), ("scontrol", SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    workdir = tmp_path / f"work {hostile}"
    site_env = tmp_path / f"site {hostile}.env"
    workdir.mkdir()
    site_env.write_text("export FROM_SITE_ENV=yes\n")
    job = TrainJob(recipe=tmp_path / f"recipes {hostile}" / "tiny.yaml",
                   overrides=(f"data.train={tmp_path}/{hostile}", "train.steps=3"), nodes=2, gpus_per_node=2,
                   cpu=True, run_dir=tmp_path / f"run {hostile}",
                   env=Environment(workdir=workdir, python="/venv/bin/python", site_env=site_env))
    (job.run_dir / "slurm").mkdir(parents=True)
    script = tmp_path / "job.sbatch"
    script.write_text(render_train(job))
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "LOG": str(log), "SLURM_JOB_ID": "4242",
           "SLURM_JOB_NODELIST": "node[1-2]", "SLURM_CPUS_ON_NODE": "4", "SLURM_CPUS_PER_TASK": "2",
           "HOME": str(tmp_path)}
    return {"job": job, "script": script, "env": env, "log": log, "root": tmp_path}


def run_script(sb: dict, mode: str) -> subprocess.Popen:
    return subprocess.Popen(["bash", str(sb["script"])], env={**sb["env"], "SRUN_MODE": mode}, cwd=sb["root"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def srun_args(sb: dict) -> list[str]:
    return (sb["log"] / "srun.args").read_text().split("\0")[:-1]


def kinds(sb: dict) -> list[tuple[str, str]]:
    return [(e.kind, e.detail) for e in read_events(sb["job"].run_dir)]


def test_hostile_strings_reach_the_trainer_intact_and_run_nothing(sandbox):
    proc = run_script(sandbox, "exit0")
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    job = sandbox["job"]
    assert srun_args(sandbox) == ["--ntasks-per-node=1", "--cpus-per-task=2", "--label", "--wait=120",
                                  *job.train_command()]
    assert not list(sandbox["root"].rglob("CANARY*"))
    assert kinds(sandbox) == [("start", "node[1-2]"), ("exit", "0")]
    assert f"rendezvous node1:{20000 + 4242}, run dir {job.run_dir}" in out
    assert not (sandbox["log"] / "requeued").exists()


def test_site_env_and_rendezvous_reach_srun(sandbox):
    """srun inherits the script's environment: what the site file and the script export. The script's
    port is the one the launcher derives from the job id (19999: 39999 once, in the ephemeral range)."""
    sandbox["env"].update(SRUN_MODE="exit0", SLURM_JOB_ID="19999")
    probe = sandbox["script"].with_name("probe.sbatch")
    text = sandbox["script"].read_text().replace(
        'srun --ntasks', 'env > "$LOG/env"; srun --ntasks', 1)
    probe.write_text(text)
    done = subprocess.run(["bash", str(probe)], env=sandbox["env"], cwd=sandbox["root"], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
    env = dict(line.split("=", 1) for line in (sandbox["log"] / "env").read_text().splitlines() if "=" in line)
    port = slurm_layout({"SLURM_JOB_ID": "19999", "SLURM_PROCID": "0"}, 1).master_port
    assert (env["FROM_SITE_ENV"], env["DS_ACCELERATOR"], env["MASTER_ADDR"], env["MASTER_PORT"]) == (
        "yes", "cpu", "node1", str(port))
    assert 20000 <= port <= 32767


@pytest.mark.parametrize("code", [1, 2, 65])
def test_a_failed_or_finished_trainer_is_never_requeued(sandbox, code):
    proc = run_script(sandbox, f"exit{code}")
    proc.communicate(timeout=30)
    assert proc.returncode == code
    assert kinds(sandbox) == [("start", "node[1-2]"), ("exit", str(code))]
    assert not (sandbox["log"] / "requeued").exists()


def _wait_ready(sb: dict, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 20
    while not (sb["log"] / "srun.ready").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
        time.sleep(0.02)


def test_usr1_is_forwarded_and_the_checkpointed_job_requeues_itself(sandbox):
    proc = run_script(sandbox, "preemptible")
    _wait_ready(sandbox, proc)
    proc.send_signal(signal.SIGUSR1)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert (sandbox["log"] / "srun.signals").read_text() == "USR1\n"
    assert (sandbox["log"] / "requeued").read_text() == "4242\n"
    assert kinds(sandbox) == [("start", "node[1-2]"), ("signal", "USR1"), ("exit", "75"), ("requeue", "")]
    assert "requeueing job 4242" in out


def test_term_is_forwarded_but_a_cancelled_job_is_not_requeued(sandbox):
    proc = run_script(sandbox, "preemptible")
    _wait_ready(sandbox, proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 75, out
    assert (sandbox["log"] / "srun.signals").read_text() == "TERM\n"
    assert not (sandbox["log"] / "requeued").exists()
    assert kinds(sandbox) == [("start", "node[1-2]"), ("signal", "TERM"), ("exit", "75")]
