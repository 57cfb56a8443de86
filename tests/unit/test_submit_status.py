"""`mmdit-scale status`: a run dir's jobs and progress, from the files the job and the trainer write."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from launcher import cli
from launcher.slurm import records
from launcher.slurm.run_status import run_status, to_text
from launcher.slurm.sbatch import parse_fields
from mmdit_scale.config import load_config
from mmdit_scale.run.layout import METRICS_FILE, write_config

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A run preempted once and resumed (job 41), as the job script and the trainer leave it."""
    run = tmp_path / "run"
    write_config(load_config(REPO / "recipes" / "tiny.yaml", ["train.steps=12"]), run / "config.yaml")
    ckpt = run / "checkpoints" / "step_0000010"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text(json.dumps({"step": 10}))
    (run / "checkpoints" / "latest").write_text("step_0000010\n")
    train = {"kind": "train", "lr": 1e-3, "grad_norm": 0.3, "memory_gib": 0.4, "skipped_steps": 0, "loss_t": {}}
    lines = [{**train, "step": 10, "loss": 0.52, "samples_per_s": 40.0, "tokens_per_s": 6800.0, "mfu": None},
             {"kind": "val", "step": 10, "val_loss": 0.61, "val_loss_t": {}},
             {**train, "step": 12, "loss": None, "samples_per_s": 44.0, "tokens_per_s": 7480.0, "mfu": 0.012}]
    (run / METRICS_FILE).write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"kind": "tra')
    (run / "slurm").mkdir()
    records.record_submission(run, records.new_submission(41, nodes=2, ranks_per_node=1, cpu=True, after=None))
    (run / "slurm" / "events.tsv").write_text(
        "100\t41\t0\tstart\tnode[1-2]\n100\t41\t0\tsignal\tUSR1\n101\t41\t0\texit\t75\n101\t41\t0\trequeue\t\n"
        "120\t41\t1\tstart\tnode[3-4]\n130\t41\t1\texit\t0\n131\t41\t1\tex")
    return run


def test_status_from_the_run_dir_alone(run_dir):
    s = run_status(run_dir, ask_slurm=False)
    assert [(j.job_id, j.state, j.restarts, j.nodes, j.last_exit, j.source) for j in s.jobs] == [
        (41, "COMPLETED", 1, "node[3-4]", 0, "run dir")]
    assert (s.step, s.total_steps, s.checkpoint, s.checkpoint_step) == (12, 12, "step_0000010", 10)
    # The newest record without a loss (all steps skipped) does not hide the last loss.
    assert (s.loss, s.loss_step, s.val_loss, s.val_step) == (0.52, 10, 0.61, 10)
    assert (s.samples_per_s, s.tokens_per_s, s.mfu) == (44.0, 7480.0, 0.012)
    text = to_text(s)
    assert "job         41: COMPLETED, restarts 1, nodes node[3-4], last trainer exit 0 [run dir]\n" in text
    assert "step        12 / 12\n" in text
    assert "loss        0.52000 at step 10 (val 0.61000 at step 10)\n" in text
    assert "throughput  44.0 samples/s, 7480 tokens/s, MFU 1.2%\n" in text


def test_the_step_is_the_later_of_log_and_checkpoint_and_the_eta_comes_from_the_time_stamps(run_dir, capsys):
    """Logged to step 12, checkpointed at 14 (preempted between log lines), of 40 steps. 3 s a step,
    except one interval that holds a requeue's 500 s wait: the rate is the median, not the mean."""
    write_config(load_config(REPO / "recipes" / "tiny.yaml", ["train.steps=40"]), run_dir / "config.yaml")
    ckpt = run_dir / "checkpoints" / "step_0000014"
    ckpt.mkdir()
    (ckpt / "trainer_state.json").write_text(json.dumps({"step": 14, "samples_seen": 112}))
    (run_dir / "checkpoints" / "latest").write_text("step_0000014\n")
    times = {step: 1000.0 + 3 * step + (500 if step > 8 else 0) for step in range(2, 13, 2)}
    lines = [{"kind": "train", "step": step, "time": t, "loss": 0.5} for step, t in times.items()]
    (run_dir / METRICS_FILE).write_text("".join(json.dumps(r) + "\n" for r in lines))
    s = run_status(run_dir, ask_slurm=False)
    assert (s.step, s.checkpoint_step, s.total_steps) == (14, 14, 40)
    assert (s.seconds_per_step, s.eta_s, s.last_record_time) == (3.0, (40 - 14) * 3.0, times[12])
    text = to_text(s)
    assert "step        14 / 40\n" in text
    assert f"eta         1m18s at 3 s/step (last record {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(times[12]))})\n" in text
    assert cli.main(["status", str(run_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["eta_s"] == 78.0


def test_a_job_between_preemption_and_restart_reads_as_requeued(run_dir):
    events = run_dir / "slurm" / "events.tsv"
    events.write_text("".join(events.read_text().splitlines(keepends=True)[:4]))
    [job] = run_status(run_dir, ask_slurm=False).jobs
    assert (job.state, job.restarts, job.last_exit) == ("REQUEUED", 0, 75)


def test_status_cli_json_and_refusal(run_dir, capsys, tmp_path):
    assert cli.main(["status", str(run_dir), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["step"] == 12 and out["jobs"][0]["job_id"] == 41 and out["checkpoint"] == "step_0000010"
    assert cli.main(["status", str(tmp_path / "nothing")]) == 2
    assert "is not a run dir" in capsys.readouterr().err


def test_scontrol_fields_with_spaces_in_paths():
    line = ("JobId=7 JobName=mmdit-run UserId=root(0) JobState=RUNNING Reason=None Dependency=(null) Requeue=1 "
            "Restarts=1 BatchFlag=1 ExitCode=0:0 NodeList=node[1-2] Command=/tmp/a b/slurm/7.sbatch "
            "WorkDir=/tmp/work dir StdOut=/tmp/a b/slurm/7.out")
    f = parse_fields(line)
    assert (f["JobState"], f["Restarts"], f["ExitCode"], f["NodeList"], f["Reason"]) == (
        "RUNNING", "1", "0:0", "node[1-2]", "None")
    assert (f["Command"], f["WorkDir"], f["StdOut"]) == ("/tmp/a b/slurm/7.sbatch", "/tmp/work dir", "/tmp/a b/slurm/7.out")
