"""Training metrics: TensorBoard scalars, a plain `metrics.jsonl`, and a tqdm bar on rank 0.

Per-step statistics stay on the device and are summed between log lines; one all-reduce per
log interval turns them into global numbers (no host sync per step). Logged every
`logging.every` steps:
- loss (mean over the interval's applied steps and all ranks) and loss per t bin;
- learning rate and the global gradient norm (of the last step of the interval);
- samples/s, tokens/s (image + text tokens) and MFU (`plan.peaks`, `plan.flops`), from rank 0's wall clock;
- peak memory of the busiest rank (accelerator memory, or resident memory on CPU);
- skipped steps so far (non-finite guard);
- `eta_s`: the steps left times the interval's seconds per step, so that logs without the bar (a
  SLURM job's .out file) say how long the run has left.
Image metrics (`image_eval`) are logged as their own `images` records when due.
Every console line goes through `Metrics.console`, which moves the bar out of the way.
"""
from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from tqdm import tqdm

from mmdit_scale.plan.peaks import mfu
from mmdit_scale.run.eta import duration_text, eta_seconds
from mmdit_scale.run.layout import METRICS_FILE, TENSORBOARD_DIR
from mmdit_scale.train.step import T_BINS, StepResult

BIN_NAMES = tuple(f"{i / T_BINS:.1f}-{(i + 1) / T_BINS:.1f}" for i in range(T_BINS))


def peak_memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _number(x: Any) -> float | None:
    if x is None:
        return None
    return float(x.item() if isinstance(x, torch.Tensor) else x)


class Metrics:
    def __init__(self, run_dir: Path, every: int, tensorboard: bool, start_step: int, total_steps: int,
                 device: torch.device, peak_flops: float | None):
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.every, self.device, self.peak_flops = every, device, peak_flops
        self.total_steps, self.last_logged = total_steps, start_step
        # [loss sum, samples, flops, tokens, T_BINS bin sums, T_BINS bin counts]
        # loss, samples, flops, tokens, T_BINS loss sums, T_BINS counts, REPA alignment loss sum
        self.acc = torch.zeros(5 + 2 * T_BINS, dtype=torch.float64, device=device)
        self.repa = False
        """Whether the steps carry a REPA loss (train.repa on): then records have `repa_loss`."""
        self.grad_norm: Any = None
        self.skipped = 0
        self.t0 = time.perf_counter()
        self.file = self.writer = self.bar = None
        if self.rank == 0:
            self.file = open(run_dir / METRICS_FILE, "a", buffering=1)
            if tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                # purge_step drops events a killed attempt logged after the checkpoint resumed from.
                self.writer = SummaryWriter(str(run_dir / TENSORBOARD_DIR), purge_step=start_step + 1)
            self.bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True,
                            disable=not sys.stderr.isatty())

    def add(self, result: StepResult, skipped_total: int) -> None:
        self.skipped = skipped_total
        if self.bar is not None:
            self.bar.update(1)
        if not result.applied:
            return
        self.acc[0] += result.loss_sum
        self.acc[1] += result.samples
        self.acc[2] += result.flops
        self.acc[3] += result.tokens
        self.acc[4:4 + T_BINS] += result.bin_sum
        self.acc[4 + T_BINS:4 + 2 * T_BINS] += result.bin_count
        if result.repa_sum is not None:
            self.repa = True
            self.acc[-1] += result.repa_sum
        self.grad_norm = result.grad_norm

    def due(self, step: int) -> bool:
        return step % self.every == 0

    def log_train(self, step: int, lr: float) -> dict[str, Any]:
        """A collective: every rank calls it at the same steps. Returns the record (rank 0)."""
        acc = self.acc.clone()
        dist.all_reduce(acc)
        memory = torch.tensor([peak_memory_gib(self.device)], device=self.device)
        dist.all_reduce(memory, op=dist.ReduceOp.MAX)
        now = time.perf_counter()
        elapsed, self.t0 = now - self.t0, now
        steps, self.last_logged = step - self.last_logged, step
        self.acc.zero_()
        loss_sum, samples, flops, tokens = (float(v) for v in acc[:4])
        sums, counts = acc[4:4 + T_BINS].tolist(), acc[4 + T_BINS:4 + 2 * T_BINS].tolist()
        record = {
            "kind": "train", "step": step, "time": time.time(),
            "loss": loss_sum / samples if samples else None,
            "loss_t": {name: s / c for name, s, c in zip(BIN_NAMES, sums, counts) if c},
            "lr": lr, "grad_norm": _number(self.grad_norm),
            "samples_per_s": samples / elapsed, "tokens_per_s": tokens / elapsed,
            "mfu": mfu(flops, elapsed, self.world, self.peak_flops),
            "memory_gib": float(memory.item()), "skipped_steps": self.skipped,
            "eta_s": eta_seconds(step, self.total_steps, elapsed / steps) if steps > 0 else None,
        }
        if self.repa:
            record["repa_loss"] = float(acc[-1]) / samples if samples else None
        self._write(step, record)
        return record

    def log_val(self, step: int, mean: float, per_t: dict[str, float]) -> None:
        self._write(step, {"kind": "val", "step": step, "time": time.time(), "val_loss": mean, "val_loss_t": per_t})

    def log_images(self, record: dict[str, Any] | None, grid) -> None:
        """Rank 0's image metrics (`image_eval`): a metrics.jsonl record of `eval/<name>` keys, which
        scaling-report pairs with the validation loss of the same step, and the generated images' grid."""
        if record is None:
            return
        self._write(record["step"], record)
        if self.writer is not None and grid is not None:
            self.writer.add_image("eval/images", grid, record["step"], dataformats="HWC")

    def log_grid(self, step: int, grid) -> None:
        """Rank 0's sample grid, (H, W, 3) uint8, as a TensorBoard image."""
        if self.writer is not None and grid is not None:
            self.writer.add_image("samples", grid, step, dataformats="HWC")

    def message(self, text: str) -> None:
        """A line on rank 0's console, above the bar when there is one."""
        if self.rank == 0:
            self.console(text)

    @staticmethod
    def console(text: str) -> None:
        """A line on this process's console that leaves any open bar whole: tqdm.write clears the
        bars shown on the terminal, prints, and draws them again (a plain print when none is shown).
        The trainer's own messages (checkpoints, resumes) come here too, also before a bar exists."""
        tqdm.write(text)
        sys.stdout.flush()  # a job's log file must have the line now, not when a buffer fills

    def _write(self, step: int, record: dict[str, Any]) -> None:
        if self.rank != 0:
            return
        self.file.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in _scalars(record):
                self.writer.add_scalar(key, value, step)
        self.message(_line(record))

    def close(self) -> None:
        if self.rank == 0:
            self.bar.close()
            if self.writer is not None:
                self.writer.close()
            self.file.close()


def _scalars(record: dict[str, Any]):
    if record["kind"] == "images":
        yield from ((key, value) for key, value in record.items() if key.startswith("eval/"))
        return
    if record["kind"] == "val":
        yield "val/loss", record["val_loss"]
        for t, v in record["val_loss_t"].items():
            yield f"val/loss_t/{t}", v
        return
    names = {"loss": "train/loss", "lr": "train/lr", "grad_norm": "train/grad_norm",
             "skipped_steps": "train/skipped_steps", "samples_per_s": "perf/samples_per_s",
             "tokens_per_s": "perf/tokens_per_s", "mfu": "perf/mfu", "memory_gib": "perf/memory_gib"}
    for key, tag in names.items():
        if record[key] is not None:
            yield tag, record[key]
    for name, v in record["loss_t"].items():
        yield f"train/loss_t/{name}", v
    if record.get("repa_loss") is not None:
        yield "train/repa_loss", record["repa_loss"]


def _line(record: dict[str, Any]) -> str:
    if record["kind"] == "images":
        scores = " | ".join(f"{key[len('eval/'):]} {value:.4g}" for key, value in record.items()
                            if key.startswith("eval/"))
        return f"step {record['step']} | {scores} ({record['images']} images, {record['seconds']:.0f} s)"
    if record["kind"] == "val":
        return f"step {record['step']} | val loss {record['val_loss']:.5f}"
    parts = [f"step {record['step']}"]
    if record["loss"] is not None:
        parts.append(f"loss {record['loss']:.5f}")
    parts.append(f"lr {record['lr']:.3g}")
    if record["grad_norm"] is not None:
        parts.append(f"gnorm {record['grad_norm']:.3g}")
    parts.append(f"{record['samples_per_s']:.1f} samples/s")
    if record["mfu"] is not None:
        parts.append(f"MFU {100 * record['mfu']:.1f}%")
    parts.append(f"mem {record['memory_gib']:.2f} GiB")
    if record["skipped_steps"]:
        parts.append(f"skipped {record['skipped_steps']}")
    if record["eta_s"] is not None:
        parts.append(f"ETA {duration_text(record['eta_s'])}")
    return " | ".join(parts)
