"""Batch-script rendering: the #SBATCH block, quoting in both of its languages, template checks."""
from __future__ import annotations

import re
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from launcher.slurm.quoting import SubmitError, check_option, directive, job_name, shell
from launcher.slurm.render import (Environment, PrepareJob, Resources, TrainJob, fill, render_prepare_array,
                                   render_prepare_merge, render_train)

ENV = Environment(workdir=Path("/work dir"), python="/venv/bin/python", site_env=Path("/etc/site.env"))
HOSTILE = "it's a \"run\" $(touch CANARY) `touch CANARY` ; & | * ~ ${HOME} %j #x"


def sbatch_lines(script: str) -> list[str]:
    return re.findall(r"^#SBATCH (.*)$", script, re.M)


def test_cpu_job_asks_one_task_per_node_with_a_cpu_per_rank_and_is_requeueable():
    job = TrainJob(recipe=Path("/r/tiny.yaml"), overrides=("train.steps=5",), nodes=2, gpus_per_node=3, cpu=True,
                   run_dir=Path("/runs/tiny"), env=ENV)
    assert sbatch_lines(render_train(job)) == [
        "--job-name=mmdit-tiny", "--nodes=2", "--ntasks-per-node=1", "--cpus-per-task=3", "--requeue",
        "--signal=B:USR1@300", "--open-mode=append", "--output=/runs/tiny/slurm/%j.out"]


def test_gpu_job_with_every_sbatch_option_and_a_dependency():
    res = Resources(partition="gpu,gpu-long", account="proj1", qos="high", time="2-00:00:00", constraint="a100&ib",
                    mem="500G", exclusive=True)
    job = TrainJob(recipe=Path("/r/d24.yaml"), overrides=(), nodes=8, gpus_per_node=8, cpu=False,
                   run_dir=Path("/runs/ft"), env=ENV, resources=res, after="1234", signal_lead=600)
    script = render_train(job)
    assert sbatch_lines(script) == [
        "--job-name=mmdit-ft", "--nodes=8", "--ntasks-per-node=1", "--gpus-per-node=8", "--partition=gpu,gpu-long",
        "--account=proj1", "--qos=high", "--time=2-00:00:00", '--constraint="a100&ib"', "--mem=500G", "--exclusive",
        "--dependency=afterok:1234", "--requeue", "--signal=B:USR1@600", "--open-mode=append",
        "--output=/runs/ft/slurm/%j.out"]
    assert "ACCELERATOR=gpu\n" in script
    assert "TRAIN=(/venv/bin/python -m launcher.cli train /r/d24.yaml --nproc 8 --run-dir /runs/ft)" in script


def test_rendered_script_is_valid_bash_without_leftover_placeholders():
    job = TrainJob(recipe=Path(f"/r/{HOSTILE}/tiny.yaml"), overrides=(f"data.train=/d/{HOSTILE}",), nodes=1,
                   gpus_per_node=1, cpu=True, run_dir=Path(f"/runs/{HOSTILE}"), env=ENV)
    for script in (render_train(job), render_prepare_array(_prepare_job()), render_prepare_merge(_prepare_job())):
        assert "{{" not in script and script.startswith("#!/bin/bash\n#SBATCH ")
        done = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
        assert done.returncode == 0, done.stderr


def _prepare_job() -> PrepareJob:
    return PrepareJob(source=Path(f"/src/{HOSTILE}"), output=Path("/out/shards"), parts=4,
                      prepare_args=("--encoders", "demo"), gpus_per_node=0, env=ENV)


def test_prepare_array_and_merge_directives():
    job = _prepare_job()
    assert sbatch_lines(render_prepare_array(job)) == [
        "--job-name=prepare-shards", "--array=0-3", "--nodes=1", "--ntasks=1", "--cpus-per-task=1",
        "--output=/out/shards/slurm/prepare-%A_%a.out"]
    assert sbatch_lines(render_prepare_merge(job)) == [
        "--job-name=merge-shards", "--nodes=1", "--ntasks=1", "--cpus-per-task=1", "--time=00:30:00",
        "--output=/out/shards/slurm/merge-%j.out"]


def test_the_merge_job_gets_the_arrays_time_limit_else_half_an_hour():
    """Without a limit SLURM would give the merge (seconds of work) the partition's default, often days."""
    for resources, time in ((Resources(time="4:00:00", partition="cpu", mem="500G"), "4:00:00"),
                            (Resources(partition="cpu", mem="500G"), "00:30:00")):
        merge = sbatch_lines(render_prepare_merge(replace(_prepare_job(), resources=resources)))
        assert [line for line in merge if line.startswith(("--time", "--partition", "--mem"))] == [
            "--partition=cpu", f"--time={time}"]  # the array's memory is not the merge's


@pytest.mark.parametrize("value,expected", [
    ("/runs/plain_1.0", "/runs/plain_1.0"),
    ("/runs/with space", '"/runs/with space"'),
    ("a'b", '"a\'b"'),
    ('a"b c', '"a"\'"\'"b c"'),
    ("x#y", '"x#y"'),
])
def test_sbatch_directive_quoting(value, expected):
    """sbatch joins adjacent quoted parts; a double quote can only live inside single quotes."""
    assert directive(value) == expected


@pytest.mark.parametrize("value", ["a\nb", "a\rb", "a\tb", "a\x00b"])
def test_control_characters_are_refused_in_both_languages(value):
    """A newline would end an #SBATCH or bash line early."""
    for quote in (directive, shell):
        with pytest.raises(SubmitError, match="control character"):
            quote(value)


def test_backslashes_are_refused_only_where_sbatch_would_eat_them():
    with pytest.raises(SubmitError, match="backslash"):
        directive("/runs/a\\b")
    assert shell("/runs/a\\b") == "'/runs/a\\b'"


@pytest.mark.parametrize("flag,value", [("--partition", "gpu;rm"), ("--account", "a b"), ("--time", "1 hour"),
                                        ("--mem", "5 GB"), ("--after", "12$(x)"), ("--constraint", "a'b"),
                                        ("--qos", '"x"')])
def test_user_sbatch_options_are_validated(flag, value):
    with pytest.raises(SubmitError, match=re.escape(flag)):
        check_option(flag, value)


def test_job_names_keep_only_safe_characters():
    assert job_name("mmdit-" + HOSTILE) == "mmdit-it_s_a_run_touch_CANARY_touch_CANARY_HOME_j_x"
    assert len(job_name("x" * 200)) == 64


def test_fill_refuses_missing_or_unused_values():
    assert fill("a {{X}} b", {"X": "1"}) == "a 1 b"
    with pytest.raises(SubmitError):
        fill("a {{X}} {{Y}}", {"X": "1"})
    with pytest.raises(SubmitError):
        fill("a {{X}}", {"X": "1", "Z": "2"})
