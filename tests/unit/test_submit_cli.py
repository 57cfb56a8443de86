"""`mmdit-scale submit` and `submit-prepare` up to the point of calling sbatch: dry runs and refusals."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from launcher import cli
from launcher.slurm.options import environment
from launcher.slurm.render import (MERGE_DEFAULT_TIME, PrepareJob, Resources, TrainJob, render_prepare_array,
                                   render_prepare_merge, render_train)

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "recipes" / "tiny.yaml"
HOSTILE = "it's \"odd\" $(touch CANARY) `touch CANARY` ;&|*"


def submit(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(["submit", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_dry_run_prints_exactly_the_script_and_messages_go_to_stderr(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe_dir = tmp_path / HOSTILE
    recipe_dir.mkdir()
    recipe = recipe_dir / "tiny.yaml"
    recipe.write_text(TINY.read_text())
    run_dir = tmp_path / f"runs {HOSTILE}"
    overrides = [f"data.train={tmp_path}/shards {HOSTILE}", "train.steps=7", "train.global_batch=16"]
    code, out, err = submit(capsys, str(recipe), *overrides, "--nodes", "2", "--gpus-per-node", "2", "--cpu",
                            "--run-dir", str(run_dir), "--time", "01:00:00", "--dry-run")
    assert code == 0, err
    expected = TrainJob(recipe=recipe, overrides=tuple(overrides), nodes=2, gpus_per_node=2, cpu=True,
                        run_dir=run_dir, env=environment(),
                        resources=Resources(time="01:00:00"))
    assert out == render_train(expected)
    assert f"note: data.train={tmp_path}/shards {HOSTILE} does not exist (yet)" in err
    assert not run_dir.exists() and not list(tmp_path.rglob("CANARY"))


def test_cpu_dry_run_imports_no_torch():
    code = ("import sys; from launcher.cli import main; "
            "rc = main(['submit', 'recipes/tiny.yaml', '--nodes', '1', '--gpus-per-node', '1', '--cpu', '--dry-run']); "
            "assert rc == 0 and 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)[:3]")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("#!/bin/bash\n#SBATCH --job-name=mmdit-tiny\n")


@pytest.mark.parametrize("args,message", [
    (["optim.lrr=1"], "optim.lr"),
    (["--nodes", "3"], "not a multiple of train.micro_batch 4 x 3 ranks"),
    (["--partition", "a b"], "--partition 'a b' is not a valid SLURM value"),
    (["--after", "12;rm"], "--after"),
    (["--run-dir", "/tmp/a\nb"], "control character"),
    (["--run-dir", "/tmp/a\\b"], "backslash"),
])
def test_refusals_print_nothing_on_stdout(capsys, args, message):
    nodes = [] if "--nodes" in args else ["--nodes", "1"]
    code, out, err = submit(capsys, str(TINY), *args, *nodes, "--gpus-per-node", "1", "--cpu", "--dry-run")
    assert code == 2 and out == ""
    assert message in err


def test_a_real_submission_needs_data(capsys, tmp_path):
    code, out, err = submit(capsys, str(TINY), "--nodes", "1", "--gpus-per-node", "1", "--cpu",
                            "--run-dir", str(tmp_path / "run"))
    assert code == 2 and out == ""
    assert "data.train is empty" in err
    assert not (tmp_path / "run").exists()


def test_gpu_jobs_are_checked_against_the_memory_plan(capsys):
    code, out, err = submit(capsys, str(TINY), "--nodes", "1", "--gpus-per-node", "2", "--dry-run")
    assert code == 0 and out.count("#SBATCH --gpus-per-node=2") == 1
    assert "plan: ZeRO-2 fp32" in err
    big = REPO / "recipes" / "ladder" / "d38.yaml"
    code, out, err = submit(capsys, str(big), "train.micro_batch=256", "parallel.zero_stage=1", "--nodes", "1",
                            "--gpus-per-node", "8", "--dry-run")
    assert code == 2 and out == ""
    assert "plan: ZeRO-1 needs" in err and "GiB per GPU" in err


def test_submit_prepare_dry_run_prints_the_array_then_the_merge_script(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    src = tmp_path / f"images {HOSTILE}"
    src.mkdir()
    code = cli.main(["submit-prepare", str(src), "shards", "--parts", "3", "--time", "30:00", "--dry-run",
                     "--prepare-flags", "--encoders", "demo", "--resolution", "32"])
    out, err = capsys.readouterr()
    assert code == 0, err
    job = PrepareJob(source=src, output=tmp_path / "shards", parts=3, prepare_args=("--encoders", "demo",
                     "--resolution", "32"), gpus_per_node=0, env=environment(),
                     resources=Resources(time="30:00"))
    assert out == render_prepare_array(job) + render_prepare_merge(job)
    assert "#SBATCH --array=0-2" in out and "afterok" in err
    merge = out[out.index("#!/bin/bash", 1):]
    assert "#SBATCH --time=30:00\n" in merge  # the array's limit, not the partition's default


def test_submit_prepare_help_names_the_merge_jobs_default_time(capsys):
    with pytest.raises(SystemExit):
        cli.main(["submit-prepare", "--help"])
    assert f"The merge job gets the array's --time, or {MERGE_DEFAULT_TIME} without one" in " ".join(
        capsys.readouterr().out.split())


def test_an_array_task_runs_its_own_part(tmp_path):
    """Task 2 of 3 execs `prepare ... --part 2/3` (a stand-in python records its arguments)."""
    python = tmp_path / "python"
    python.write_text('#!/bin/bash\nprintf "%s\\0" "$@" > "$LOG"\n')
    python.chmod(0o755)
    env = environment()
    job = PrepareJob(source=tmp_path / HOSTILE, output=tmp_path / "out", parts=3, prepare_args=("--encoders", "demo"),
                     gpus_per_node=0, env=type(env)(workdir=tmp_path, python=str(python), site_env=tmp_path / "none"))
    script = tmp_path / "array.sbatch"
    script.write_text(render_prepare_array(job))
    log = tmp_path / "args"
    done = subprocess.run(["bash", str(script)], env={**os.environ, "LOG": str(log), "SLURM_ARRAY_TASK_ID": "2",
                                                     "SLURM_JOB_ID": "9", "SLURM_JOB_NODELIST": "node1"},
                          cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert log.read_text().split("\0")[:-1] == [
        "-m", "launcher.cli", "prepare", "--input", str(tmp_path / HOSTILE), "--output", str(tmp_path / "out"),
        "--no-merge", "--no-progress", "--encoders", "demo", "--part", "2/3"]
    assert not list(tmp_path.rglob("CANARY"))


@pytest.mark.parametrize("extra,message", [(["--resolutoin", "32"], "unrecognized arguments"),
                                           (["--part", "1/2"], "--part is set by submit-prepare"),
                                           (["--merge-only"], "--merge-only is set by submit-prepare")])
def test_submit_prepare_checks_prepare_flags_before_queueing(capsys, tmp_path, extra, message):
    code = cli.main(["submit-prepare", str(tmp_path), str(tmp_path / "out"), "--parts", "2", "--dry-run",
                     "--prepare-flags", *extra])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert message in err
