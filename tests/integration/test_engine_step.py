"""benchmarks/engine_step.py's CPU smoke case: the trainer's engine, loader, step and EMA, timed,
with every key of its JSON line present (the GPU run is the same script on bigger cases), and its
profile pass (`--profile`): ranked ops, the table and the Chrome trace on disk."""
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
        "plan_memory_gb", "sdpa_backend", "profile"}


def test_the_smoke_case_runs_zero_2_and_3_through_the_trainers_own_step(tmp_path):
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    profiles = tmp_path / "profile"
    done = subprocess.run([sys.executable, "benchmarks/engine_step.py", "--device", "cpu", "--smoke", "--data",
                           str(tmp_path), "--profile", "1", "--profile-dir", str(profiles)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    line = json.loads(done.stdout.strip().splitlines()[-1])
    rows = line["results"]
    assert [r["zero_stage"] for r in rows] == [2, 3] and all(KEYS <= set(r) for r in rows)
    for r in rows:
        assert r["engine"] == "deepspeed" and r["case"] == "smoke" and r["applied"]
        assert r["samples_per_s"] > 0 and r["tokens_per_s"] == pytest.approx(r["samples_per_s"] * (2 * 2 + 2 * 77))  # 32 px: a 2x2 grid
        assert r["mfu"] is None and r["peak_memory_gb"] is None          # no data-sheet peak, no CUDA on CPU
        assert 0 < r["mfu_vs_matmul"] < 1 and r["plan_memory_gb"] > 0
        assert r["sdpa_backend"] is None                                  # a CUDA backend name, null on CPU
    for r in rows:  # the profile pass: after the timed steps, ops ranked by self time, files per case and stage
        profile, label = r["profile"], f"smoke-z{r['zero_stage']}"
        assert profile["steps"] == 1 and Path(profile["trace"]) == profiles / f"{label}.trace.json.gz"
        assert Path(profile["trace"]).stat().st_size > 0
        assert (profiles / f"{label}.kernels.txt").read_text().splitlines()[2].startswith(profile["top"][0]["name"][:40])
        times = [row["total_ms"] for row in profile["top"]]
        assert times == sorted(times, reverse=True) and all(row["calls"] > 0 for row in profile["top"])
        assert profile["top"][0]["pct_of_step"] == pytest.approx(100 * times[0] / r["step_ms"])
