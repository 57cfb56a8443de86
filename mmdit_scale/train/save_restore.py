"""Save and restore a whole training run: DeepSpeed state, weights, EMA, loader and RNG positions.

Both functions are collectives: every rank calls them at the same step. The write protocol
(`ckpt_files` describes the layout) makes a kill at any moment harmless:
1. rank 0 removes stale temporaries and creates `.tmp-step_N/`;
2. every rank writes its DeepSpeed shards there; rank 0 writes the consolidated weights, the EMA,
   the config and the trainer state (each file fsynced);
3. after a barrier rank 0 renames the directory to `step_N/`, then replaces `latest`, then
   prunes to `checkpoint.keep`.
Until step 3 `latest` names the previous checkpoint, which a restart resumes from exactly.
"""
from __future__ import annotations

import base64
import json
import random
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import save as st_save

from data_pipeline.atomic import fsync_dir, write_atomic
from mmdit_scale.config import RunConfig
from mmdit_scale.run import checkpoints, integrity, layout
from mmdit_scale.train import hooks
from mmdit_scale.train.ema import ShardedEMA
from mmdit_scale.train.engine import full_fp32_params


@dataclass
class TrainerState:
    """Rank-independent progress of a run, saved as trainer_state.json."""

    step: int = 0
    """Optimizer steps done (skipped non-finite steps included: they consumed their data)."""
    samples_seen: int = 0
    skipped_steps: int = 0
    """Steps whose update was skipped because the loss or a gradient was not finite."""
    world_size: int = 1
    loader: list[dict] = field(default_factory=list)
    """Every rank's training-loader state, indexed by rank."""
    rng: list[dict] = field(default_factory=list)
    """Every rank's Python, numpy and torch RNG states (plain JSON, `_rng_state`), by rank."""


def _rng_state() -> dict[str, Any]:
    """This rank's Python, numpy, torch (and CUDA) RNG states as plain JSON: no pickle to load back."""
    version, internal, gauss = random.getstate()
    key, words, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [key, words.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode("ascii"),
    }
    if torch.cuda.is_available():
        state["cuda"] = base64.b64encode(torch.cuda.get_rng_state().numpy().tobytes()).decode("ascii")
    return state


def _bytes_tensor(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8)


def _restore_rng(state: Any) -> bool:
    """Restore `_rng_state()`'s output; False for a state this code does not read (an older
    checkpoint's pickled blob, which is never unpickled)."""
    if not isinstance(state, dict):
        return False
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    key, words, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((key, np.array(words, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(_bytes_tensor(state["torch"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(_bytes_tensor(state["cuda"]))
    return True


def _gather(obj: Any) -> list[Any]:
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def save(engine, cfg: RunConfig, root: Path, state: TrainerState, ema: ShardedEMA, loader_state: dict) -> Path:
    """Write checkpoint `step_<state.step>` under `root` (see the module docstring for the protocol)."""
    rank = dist.get_rank()
    name = layout.checkpoint_name(state.step)
    final, tmp = root / name, root / (layout.TMP_PREFIX + name)
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        checkpoints.remove_stale(root)
        tmp.mkdir()
    dist.barrier()
    engine.save_checkpoint(str(tmp), tag=layout.DS_TAG, save_latest=False)
    weights = {n: t.cpu() for n, t in full_fp32_params(engine)} if rank == 0 else None
    if rank != 0:
        for _ in full_fp32_params(engine):  # the gathers are collective
            pass
    ema_full = ema.consolidated() if ema.enabled else None
    state.loader = _gather(loader_state)
    state.rng = _gather(_rng_state())
    if rank == 0:
        write_atomic(tmp / layout.MODEL_FILE, st_save(weights))
        hooks.pause_in_checkpoint(state.step, tmp)
        if ema_full is not None:
            write_atomic(tmp / layout.EMA_FILE, st_save(ema_full))
        layout.write_config(cfg, tmp / layout.CONFIG_FILE)
        write_atomic(tmp / layout.STATE_FILE, json.dumps(asdict(state)).encode())
    dist.barrier()  # every rank's DeepSpeed shards are on disk
    records: dict[str, dict] = {}
    for share in _gather(integrity.hash_share(tmp, integrity.checkpoint_files(tmp), rank, dist.get_world_size())):
        records.update(share)
    if rank == 0:
        integrity.write_checksums(tmp, records)
        if final.exists():  # written by an attempt that died before updating `latest`
            shutil.rmtree(final)
        tmp.rename(final)
        fsync_dir(root)
        checkpoints.write_latest(root, name)
        checkpoints.prune(root, cfg.checkpoint.keep)
    dist.barrier()
    return final


def prepare_universal(ckpt: Path) -> None:
    """Convert `ckpt`'s DeepSpeed state to DeepSpeed's universal format (`universal/`).

    A collective: rank 0 converts (offline, in a subprocess), the others wait. The universal
    format stores every parameter and its optimizer state whole, so any world size can load it.
    It is rebuilt on every such resume from the verified `deepspeed/` shards, never reused: its
    files are pickles too, and the checkpoint's checksums do not cover them.
    """
    target = ckpt / layout.UNIVERSAL_TAG
    if dist.get_rank() == 0:
        tmp = ckpt / (layout.TMP_PREFIX + layout.UNIVERSAL_TAG)
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(target, ignore_errors=True)
        out = subprocess.run(
            [sys.executable, "-m", "deepspeed.checkpoint.ds_to_universal", "--input_folder", str(ckpt / layout.DS_TAG),
             "--output_folder", str(tmp), "--inject_missing_state", "--num_extract_workers", "1",
             "--num_merge_workers", "1"], capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"converting {ckpt} to a universal checkpoint failed:\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
        tmp.rename(target)
    dist.barrier()


def load(engine, ckpt: Path, ema: ShardedEMA, device: torch.device) -> TrainerState:
    """Restore engine, EMA and RNG from `ckpt`; returns the trainer state (its `loader` list
    holds every saved rank's loader state for the caller to hand to its loader).

    On another world size the engine must have been built with `load_universal` and
    `prepare_universal(ckpt)` called: model, optimizer and schedule then come from the universal
    state, and RNG states (per rank) are not restored. Not bit-exact, by nature.
    """
    state = TrainerState(**checkpoints.read_state(ckpt))
    same_world = state.world_size == dist.get_world_size()
    tag = layout.DS_TAG if same_world else layout.UNIVERSAL_TAG
    path, _ = engine.load_checkpoint(str(ckpt), tag=tag, load_optimizer_states=True, load_lr_scheduler_states=True)
    if path is None:
        raise RuntimeError(f"DeepSpeed could not load {ckpt / tag}")
    if ema.enabled:
        ema.load(checkpoints.load_weights(ckpt, ema=True), device)
    if same_world and not _restore_rng(state.rng[dist.get_rank()]):
        if dist.get_rank() == 0:
            print(f"{ckpt} keeps its RNG states in a form this version does not load (a pickle, never "
                  "unpickled): they start fresh, so the resume is not bit-exact", flush=True)
    return state
