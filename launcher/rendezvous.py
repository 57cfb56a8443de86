"""The rendezvous port of a SLURM job, from its job id: the same after a requeue, distinct for jobs
that share a node (unless their ids are PORT_COUNT apart), and outside the ephemeral range.

Linux hands out the local ports of outgoing connections from net.ipv4.ip_local_port_range,
32768-60999 by default; every rank's NCCL and gloo connections take ports from it. A rendezvous
port inside that range can already be held by any such connection on the first node, and the
job then fails to bind it. 20000 + job id mod 12768 keeps to 20000-32767, below the range
(20000 and up also stays clear of the well-known services below it).
"""
from __future__ import annotations

PORT_BASE = 20000
PORT_COUNT = 12768
"""Ports PORT_BASE .. PORT_BASE + PORT_COUNT - 1 = 32767, the last one below the ephemeral range."""


def job_port(job_id: int) -> int:
    return PORT_BASE + job_id % PORT_COUNT
