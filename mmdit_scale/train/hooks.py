"""Fault injection for the integration tests, switched on by environment variables (off when unset).

- `MMDIT_TEST_PAUSE_IN_CHECKPOINT=N`: while writing checkpoint N, rank 0 stops after
  model.safetensors (DeepSpeed shards written, nothing renamed, `latest` untouched), creates
  `PAUSED` in the temporary directory and sleeps, so a test can SIGKILL the run mid-write.
- `MMDIT_TEST_NAN_STEPS=3,5,6`: rank 0's loss is multiplied by NaN at these optimizer steps
  (1-based), as a bad sample would make it; the other ranks stay finite.
"""
from __future__ import annotations

import os
import time
from pathlib import Path


def _steps(var: str) -> frozenset[int]:
    return frozenset(int(s) for s in os.environ.get(var, "").split(",") if s.strip())


def pause_in_checkpoint(step: int, tmp_dir: Path) -> None:
    if step in _steps("MMDIT_TEST_PAUSE_IN_CHECKPOINT"):
        (tmp_dir / "PAUSED").touch()
        time.sleep(3600)


def nan_steps() -> frozenset[int]:
    return _steps("MMDIT_TEST_NAN_STEPS")
