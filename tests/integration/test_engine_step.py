"""benchmarks/engine_step.py's CPU smoke case: the trainer's engine, loader, step and EMA, timed,
with every key of its JSON line present (the GPU run is the same script on bigger cases)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
KEYS = {"engine", "zero_stage", "case", "samples_per_s", "tokens_per_s", "mfu", "mfu_vs_matmul", "peak_memory_gb",
        "plan_memory_gb"}


def test_the_smoke_case_runs_zero_2_and_3_through_the_trainers_own_step(tmp_path):
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "benchmarks/engine_step.py", "--device", "cpu", "--smoke", "--data",
                           str(tmp_path)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    line = json.loads(done.stdout.strip().splitlines()[-1])
    rows = line["results"]
    assert [r["zero_stage"] for r in rows] == [2, 3] and all(KEYS <= set(r) for r in rows)
    for r in rows:
        assert r["engine"] == "deepspeed" and r["case"] == "smoke" and r["applied"]
        assert r["samples_per_s"] > 0 and r["tokens_per_s"] == pytest.approx(r["samples_per_s"] * (2 * 2 + 2 * 77))  # 32 px: a 2x2 grid
        assert r["mfu"] is None and r["peak_memory_gb"] is None          # no data-sheet peak, no CUDA on CPU
        assert 0 < r["mfu_vs_matmul"] < 1 and r["plan_memory_gb"] > 0
