"""`mmdit-scale train` before any rank starts, SLURM layouts, exit codes and parent-death kills.
Everything here is torch-free on the launcher side."""
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher.local_launch import first_host, local_layout, slurm_layout, torchrun_command
from mmdit_scale.run import exit_codes

REPO = Path(__file__).resolve().parents[2]


def slurm(**kw):
    env = {"SLURM_JOB_ID": "4242", "SLURM_PROCID": "0", "SLURM_NNODES": "2", "SLURM_NODEID": "0",
           "SLURM_JOB_NODELIST": "node[07-08]"}
    env.update({k: str(v) for k, v in kw.items()})
    return env


def test_one_slurm_task_per_node_starts_the_nodes_ranks_through_torchrun():
    layout = slurm_layout(slurm(SLURM_NTASKS=2, SLURM_NODEID=1, SLURM_PROCID=1, SLURM_GPUS_ON_NODE=4), None)
    assert (layout.nnodes, layout.node_rank, layout.nproc_per_node, layout.world_size) == (2, 1, 4, 8)
    assert (layout.master_addr, layout.master_port, layout.direct_rank) == ("node07", 20000 + 4242, None)
    assert not layout.writes_config  # only node 0's launcher writes the run dir's config
    cmd = torchrun_command(layout, Path("/runs/x"))
    assert cmd[1:3] == ["-m", "torch.distributed.run"] and "--standalone" not in cmd
    assert cmd[cmd.index("--nnodes") + 1] == "2" and cmd[cmd.index("--node_rank") + 1] == "1"
    assert cmd[-4:] == ["-m", "mmdit_scale.train.entry", "--run-dir", "/runs/x"]


def test_one_slurm_task_per_rank_becomes_the_rank():
    layout = slurm_layout(slurm(SLURM_NTASKS=8, SLURM_PROCID=5, SLURM_NODEID=1, SLURM_LOCALID=1,
                                MASTER_ADDR="10.0.0.1", MASTER_PORT=1234), None)
    assert (layout.direct_rank, layout.local_rank, layout.world_size) == (5, 1, 8)
    assert (layout.master_addr, layout.master_port) == ("10.0.0.1", 1234)
    with pytest.raises(ValueError, match="contradicts"):
        slurm_layout(slurm(SLURM_NTASKS=8), 2)


@pytest.mark.parametrize("job_id", [1, 4242, 12767, 12768, 15000, 19999, 45678, 2**31 - 1])
def test_a_jobs_rendezvous_port_lies_below_linuxs_ephemeral_range(job_id):
    """Linux gives outgoing connections (every rank's NCCL and gloo ones) local ports from 32768-60999:
    a rendezvous port in that range can already be held on the first node."""
    port = slurm_layout(slurm(SLURM_JOB_ID=job_id), None).master_port
    assert 20000 <= port <= 32767
    assert port == slurm_layout(slurm(SLURM_JOB_ID=job_id, SLURM_RESTART_COUNT=1), None).master_port  # requeued


def test_outside_slurm_a_local_standalone_run():
    assert slurm_layout({"PATH": "/bin"}, 2) is None
    layout = local_layout({}, 2)
    assert layout.world_size == 2 and layout.writes_config
    assert "--standalone" in torchrun_command(layout, Path("/r"))


def test_first_host_of_a_node_list():
    assert first_host("gpu[07-09,12],cpu1") == "gpu07"
    assert first_host("solo") == "solo"


def test_the_most_severe_rank_code_wins():
    assert exit_codes.combine([0, 0]) == 0
    assert exit_codes.combine([75, 75]) == exit_codes.PREEMPTED
    assert exit_codes.combine([75, 1]) == exit_codes.FAILED
    assert exit_codes.combine([65, 75]) == exit_codes.NONFINITE
    assert exit_codes.combine([0, 9]) == exit_codes.FAILED and exit_codes.combine([]) == exit_codes.FAILED
    # Ranks the agent stopped after one rank's own error leave no code: that rank's error explains it.
    assert exit_codes.combine([exit_codes.IO_ERROR], expected=2) == exit_codes.IO_ERROR
    assert exit_codes.combine([0], expected=2) == exit_codes.FAILED           # killed from outside
    assert exit_codes.combine([74, 74]) == exit_codes.IO_ERROR and exit_codes.combine([74, 1]) == exit_codes.FAILED


def test_ranks_report_their_codes_and_exit_nonzero_to_the_agent_only_on_a_crash(tmp_path, monkeypatch):
    from mmdit_scale.run.process import STATUS_DIR_ENV, read_exit_codes, report_exit

    monkeypatch.setenv(STATUS_DIR_ENV, str(tmp_path))
    codes = [exit_codes.FINISHED, exit_codes.PREEMPTED, exit_codes.CONFIG_ERROR, exit_codes.NONFINITE,
             exit_codes.IO_ERROR]
    assert [report_exit(rank, code) for rank, code in enumerate(codes)] == [0, 0, 0, 0, 0]
    assert report_exit(5, exit_codes.FAILED) == exit_codes.FAILED
    assert read_exit_codes(str(tmp_path)) == {**dict(enumerate(codes)), 5: exit_codes.FAILED}


def run_cli(*args, tmp_path):
    code = ("import sys; from launcher.cli import main; rc = main(sys.argv[1:]); "
            "assert 'torch' not in sys.modules, 'the launcher imported torch'; sys.exit(rc)")
    return subprocess.run([sys.executable, "-c", code, "train", *args, "--run-dir", str(tmp_path / "run")],
                          cwd=REPO, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("args,message", [
    (("recipes/tiny.yaml", "optim.lrr=1"), "did you mean 'optim.lr'"),
    (("recipes/tiny.yaml", "data.train=/x", "train.global_batch=12", "--nproc", "2"),
     "train.global_batch 12 is not a multiple of train.micro_batch 4 x 2 ranks = 8"),
    (("recipes/tiny.yaml",), "data.train is empty"),
])
def test_bad_configs_fail_before_any_rank_starts(args, message, tmp_path):
    out = run_cli(*args, tmp_path=tmp_path)
    assert out.returncode == exit_codes.CONFIG_ERROR, out.stderr
    assert message in out.stderr
    assert not (tmp_path / "run").exists()


def test_a_process_dies_with_its_parent():
    """The mechanism that keeps ranks from outliving the launcher: kill the parent, the child follows."""
    child = ("import os, sys, time; from mmdit_scale.run.process import die_with_parent; die_with_parent(); "
             "print(os.getpid(), flush=True); time.sleep(60)")
    parent = ("import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', sys.argv[1]], "
              "stdout=sys.stdout); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", parent, child], cwd=REPO, stdout=subprocess.PIPE, text=True)
    grandchild = int(proc.stdout.readline())
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while alive(grandchild):
        assert time.monotonic() < deadline, "the child outlived its parent"
        time.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
