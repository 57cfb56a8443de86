"""Start the ranks of a training run and route signals to them (torch-free).

Two layouts:
- one launcher per node (a local run, or one SLURM task per node): the launcher starts
  `python -m torch.distributed.run`, which starts this node's ranks;
- one SLURM task per rank (`srun --ntasks-per-node=G`): the task becomes the rank itself (exec),
  with RANK, WORLD_SIZE and LOCAL_RANK taken from SLURM_PROCID, SLURM_NTASKS and SLURM_LOCALID.
Under SLURM the rendezvous is MASTER_ADDR/MASTER_PORT when set, else the first host of
SLURM_JOB_NODELIST and a port derived from the job id (rendezvous.py: below the ephemeral range).

Lifetimes: the agent gets SIGKILL when the launcher dies and each rank when the agent dies
(`process.die_with_parent`), so a SIGKILL to the launcher's process group leaves no rank behind.
Signals: the agent ignores SIGINT, SIGTERM and SIGUSR1 (its own handling would kill the ranks
after 30 s); the launcher forwards SIGUSR1 and SIGTERM to the ranks, which checkpoint and stop
(exit code 75). A first Ctrl-C does the same; a second one kills the ranks at once.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from launcher.rendezvous import job_port
from mmdit_scale.run import exit_codes
from mmdit_scale.run.process import STATUS_DIR_ENV, die_with_parent, read_exit_codes

ENTRY_MODULE = "mmdit_scale.train.entry"
_RESEND_S = 5.0
"""A rank ignores signals until its handler is installed, so a request is repeated while ranks run."""


@dataclass(frozen=True)
class Layout:
    nnodes: int
    node_rank: int
    nproc_per_node: int
    master_addr: str | None
    """None: a single local node that lets torch pick a free rendezvous port (--standalone)."""
    master_port: int | None
    direct_rank: int | None = None
    """Set when this process is one rank (one SLURM task per rank): exec the rank here."""
    local_rank: int = 0

    @property
    def world_size(self) -> int:
        return self.nnodes * self.nproc_per_node

    @property
    def writes_config(self) -> bool:
        """Only one launcher of a multi-node job writes the run dir's config."""
        return self.node_rank == 0 and (self.direct_rank in (None, 0))


def default_nproc() -> int:
    """GPUs visible to this process, or 1 on CPU (DS_ACCELERATOR=cpu or no GPU)."""
    if os.environ.get("DS_ACCELERATOR") == "cpu":
        return 1
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return max(1, len([d for d in visible.split(",") if d.strip()]))
    return max(1, len([d for d in os.listdir("/dev") if re.fullmatch(r"nvidia\d+", d)])) if os.path.isdir("/dev") else 1


def first_host(nodelist: str) -> str:
    """First host of a SLURM node list such as 'n[1-3,7],gpu01' -> 'n1'."""
    if shutil.which("scontrol"):
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.split():
            return out.stdout.split()[0]
    match = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist)
    if not match:
        raise ValueError(f"cannot read the SLURM node list {nodelist!r}")
    prefix, ranges = match.groups()
    return prefix if not ranges else prefix + ranges.split(",")[0].split("-")[0]


def slurm_layout(env: dict[str, str], nproc: int | None) -> Layout | None:
    """The layout SLURM's environment describes, or None outside a SLURM job step."""
    if "SLURM_JOB_ID" not in env or "SLURM_PROCID" not in env:
        return None
    nnodes = int(env.get("SLURM_NNODES", "1"))
    ntasks = int(env.get("SLURM_NTASKS", str(nnodes)))
    addr = env.get("MASTER_ADDR") or first_host(env.get("SLURM_JOB_NODELIST", env.get("SLURM_NODELIST", "localhost")))
    port = int(env.get("MASTER_PORT") or job_port(int(env["SLURM_JOB_ID"])))
    if ntasks > nnodes:
        per_node = ntasks // nnodes
        if nproc not in (None, per_node):
            raise ValueError(f"--nproc {nproc} contradicts SLURM's {per_node} tasks per node")
        return Layout(nnodes=nnodes, node_rank=int(env.get("SLURM_NODEID", "0")), nproc_per_node=per_node,
                      master_addr=addr, master_port=port, direct_rank=int(env["SLURM_PROCID"]),
                      local_rank=int(env.get("SLURM_LOCALID", "0")))
    gpus = env.get("SLURM_GPUS_ON_NODE")
    per_node = nproc or (int(gpus) if gpus and gpus.isdigit() and int(gpus) > 0 else default_nproc())
    return Layout(nnodes=nnodes, node_rank=int(env.get("SLURM_NODEID", "0")), nproc_per_node=per_node,
                  master_addr=addr, master_port=port)


def local_layout(env: dict[str, str], nproc: int | None) -> Layout:
    port = env.get("MASTER_PORT")
    return Layout(nnodes=1, node_rank=0, nproc_per_node=nproc or default_nproc(),
                  master_addr="127.0.0.1" if port else None, master_port=int(port) if port else None)


def rank_env(env: dict[str, str], layout: Layout) -> dict[str, str]:
    out = dict(env)
    if "OMP_NUM_THREADS" not in out:
        out["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // layout.nproc_per_node))
    out["PYTHONUNBUFFERED"] = "1"
    return out


def torchrun_command(layout: Layout, run_dir: Path) -> list[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(layout.nproc_per_node),
           "--max_restarts", "0", "--monitor_interval", "0.5"]
    if layout.master_addr is None:
        cmd += ["--standalone"]
    else:
        cmd += ["--nnodes", str(layout.nnodes), "--node_rank", str(layout.node_rank),
                "--master_addr", layout.master_addr, "--master_port", str(layout.master_port)]
    return cmd + ["-m", ENTRY_MODULE, "--run-dir", str(run_dir)]


def exec_rank(layout: Layout, run_dir: Path, env: dict[str, str]) -> None:
    """Become the rank (one SLURM task per rank): signals and the exit code are the rank's own."""
    env = rank_env(env, layout)
    env.update(RANK=str(layout.direct_rank), WORLD_SIZE=str(layout.world_size), LOCAL_RANK=str(layout.local_rank),
               LOCAL_WORLD_SIZE=str(layout.nproc_per_node), MASTER_ADDR=str(layout.master_addr),
               MASTER_PORT=str(layout.master_port))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", ENTRY_MODULE, "--run-dir", str(run_dir)], env)


def _agent_preexec() -> None:
    die_with_parent()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_IGN)


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids += [int(k) for k in f.read().split()]
    except OSError:
        pass
    return kids


def _say(text: str) -> None:
    """A line on stderr from a signal handler: os.write, since buffered streams are not reentrant."""
    os.write(2, (text + "\n").encode())


class _Router:
    """Launcher signal handlers: forward preemption requests to the ranks, kill on a second Ctrl-C;
    and stop every rank once one reports an error of its own (the others may be waiting for it in
    a collective that never returns)."""

    def __init__(self, agent: subprocess.Popen, status_dir: str):
        self.agent, self.requested, self.interrupts, self.last_sent = agent, 0, 0, 0.0
        self.status_dir = status_dir
        for sig in (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame) -> None:
        if signum == signal.SIGINT:
            self.interrupts += 1
            if self.interrupts > 1:
                _say("mmdit-scale train: second interrupt, killing the ranks")
                self.agent.kill()
                return
            signum = signal.SIGTERM
        if not self.requested:
            _say(f"mmdit-scale train: {signal.Signals(signum).name}, asking the ranks to checkpoint and stop")
        self.requested = signum
        self.forward()

    def forward(self) -> None:
        if self.requested:
            self.last_sent = time.monotonic()
            for pid in _children(self.agent.pid):
                try:
                    os.kill(pid, self.requested)
                except ProcessLookupError:
                    pass

    def wait(self) -> int:
        while True:
            try:
                return self.agent.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                if self.requested and time.monotonic() - self.last_sent > _RESEND_S:
                    self.forward()
                if any(code not in exit_codes.AGREED for code in read_exit_codes(self.status_dir).values()):
                    self.agent.kill()  # its ranks follow it (parent-death signal)


def launch(layout: Layout, run_dir: Path, env: dict[str, str] | None = None) -> int:
    """Run this node's ranks to the end; returns the run's exit code (see mmdit_scale.run.exit_codes)."""
    env = dict(os.environ if env is None else env)
    if layout.direct_rank is not None:
        exec_rank(layout, run_dir, env)
    status_dir = tempfile.mkdtemp(prefix="mmdit-status-")
    try:
        env = rank_env(env, layout)
        env[STATUS_DIR_ENV] = status_dir
        env["TORCHELASTIC_SIGNALS_TO_HANDLE"] = "SIGHUP,SIGQUIT"
        agent = subprocess.Popen(torchrun_command(layout, run_dir), env=env, preexec_fn=_agent_preexec,
                                 start_new_session=True)
        router = _Router(agent, status_dir)
        agent_rc = router.wait()
        codes = read_exit_codes(status_dir)
    finally:
        shutil.rmtree(status_dir, ignore_errors=True)
    if len(codes) < layout.nproc_per_node:  # a rank died without reporting (killed, crashed hard)
        print(f"mmdit-scale train: {layout.nproc_per_node - len(codes)} rank(s) ended without an exit report "
              f"(agent exit status {agent_rc})", file=sys.stderr, flush=True)
    return exit_codes.combine(list(codes.values()), expected=layout.nproc_per_node)
