"""The training loop of one rank: resume, steps, EMA, logging, validation, checkpoints, stops.

Order of events after optimizer step N (identical on every rank, so collectives line up):
EMA update (if due) -> metrics -> preemption check (all-reduce) -> log line (if due) ->
non-finite stop (if K in a row) -> validation (if due) -> image metrics (if due) -> sample grid (if due) -> checkpoint
(if due, at the last step, or when preempted; never while a non-finite streak is running) ->
exit if preempted.
Nothing in this order draws from a running RNG, which is what makes resume bit-exact.
"""
from __future__ import annotations

import errno
import shutil
from pathlib import Path

import torch
import torch.distributed as dist

from mmdit_scale.config import RunConfig
from mmdit_scale.eval.image_metrics.reference import ReferenceMismatch
from mmdit_scale.plan.peaks import peak_flops
from mmdit_scale.plan.tokens import TokenLayout
from mmdit_scale.run import checkpoints, exit_codes, integrity, layout
from mmdit_scale.train import save_restore
from mmdit_scale.train.save_restore import TrainerState
from mmdit_scale.train.data import null_text_path, train_loader, val_loader
from mmdit_scale.train.ds_config import grad_accumulation
from mmdit_scale.train.ema import ShardedEMA
from mmdit_scale.train.engine import build_engine, compute_dtype, full_fp32_params, param_shapes
from mmdit_scale.train.init_from import load_initial_weights
from mmdit_scale.train.metrics import Metrics
from mmdit_scale.train.preemption import Preemption
from mmdit_scale.train.image_eval import ImageEvaluator
from mmdit_scale.train.sample_grids import GridSampler, null_condition
from mmdit_scale.train.schedule import lr_factor
from mmdit_scale.train.step import TrainStep
from mmdit_scale.train.heldout import Validator


class SetupError(Exception):
    """The recipe, the data or a checkpoint does not allow the run to start (exit code 2)."""


class NonFiniteError(RuntimeError):
    """train.nan_tolerance steps in a row were skipped for non-finite values (exit code 65)."""


DISK_FULL_BYTES = 1 << 20
"""Free bytes below which a failed write is reported as a full disk."""


class CheckpointWriteError(RuntimeError):
    """Writing a checkpoint failed (exit code 74); the message says where, why, and what `latest` is."""


def _disk_full(err: BaseException, where: Path) -> bool:
    """ENOSPC, or a writer that lost the errno (torch.save's 'file write failed') on a full device."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    try:
        return "No space left" in str(err) or shutil.disk_usage(where).free < DISK_FULL_BYTES
    except OSError:
        return False


class Trainer:
    def __init__(self, cfg: RunConfig, run_dir: Path, device: torch.device, device_name: str):
        self.cfg, self.run_dir, self.device = cfg, run_dir, device
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.root = layout.checkpoints_root(cfg, run_dir)
        self.preemption = Preemption(device)  # from here on a signal is a request, not a death
        try:
            self.grad_accum = grad_accumulation(cfg, self.world)
            self.loader = train_loader(cfg, self.rank, self.world)
            validation = val_loader(cfg, self.rank, self.world, reference=self.loader.manifest)
        except ValueError as err:
            raise SetupError(str(err)) from None
        self.resume_from = self._latest()
        self.engine = build_engine(cfg, self.world, run_dir, self._init_weights,
                                   load_universal=self._needs_universal(),
                                   repa_dim=self.loader.repa[1] if self.loader.repa else None)
        self.ema = ShardedEMA(cfg.train.ema_decay, cfg.train.ema_every, self.rank, self.world,
                              param_shapes(self.engine))
        tokens = TokenLayout.of(self.loader.manifest.provenance, source="data.train")
        self.step_fn = TrainStep(self.engine, cfg, tokens, device, self.rank, self.grad_accum)
        self.validator = None if validation is None or not cfg.eval.every else Validator(
            validation, cfg.flow.formulation, cfg.eval.val_batches, cfg.eval.timesteps, cfg.eval.seed,
            compute_dtype(cfg), device, self.step_fn.shift if cfg.eval.shifted else None)
        self.grids = None if not cfg.logging.sample_every else self._grid_sampler(validation)
        self.images = None if not cfg.eval.image_every else self._image_evaluator()
        self.peak = peak_flops(device_name, cfg.parallel.precision, cfg.logging.peak_tflops)

    def _grid_sampler(self, validation) -> GridSampler:
        return GridSampler(validation, self.loader.manifest.provenance, self.step_fn.formulation,
                           self.step_fn.shift, self.cfg.eval.seed, compute_dtype(self.cfg), self.device,
                           self.run_dir, null_text_path(self.cfg))

    def _image_evaluator(self) -> ImageEvaluator:
        """Every rank reads the same prompt set: a one-rank pass over data.val."""
        try:
            loader = val_loader(self.cfg, 0, 1, reference=self.loader.manifest)
            return ImageEvaluator(self.cfg, loader, self.loader.manifest.provenance, self.step_fn.formulation,
                                  self.step_fn.shift, compute_dtype(self.cfg), self.device, self.run_dir,
                                  null_condition(null_text_path(self.cfg), loader))
        except (OSError, ValueError) as err:  # missing feature models, a mismatched reference, too few samples
            raise SetupError(str(err)) from None

    def _needs_universal(self) -> bool:
        """Whether the checkpoint to resume from has another world size; if so, convert it (once)."""
        if self.resume_from is None:
            return False
        try:
            saved_world = checkpoints.read_state(self.resume_from)["world_size"]
            if saved_world == self.world:
                return False
            self._say(f"{self.resume_from} was written by {saved_world} ranks, this run has {self.world}: "
                      "resuming through DeepSpeed's universal checkpoint (not bit-exact)")
            save_restore.prepare_universal(self.resume_from)
        except (OSError, RuntimeError, KeyError) as err:
            raise SetupError(f"cannot resume from {self.resume_from}: {err}") from None
        return True

    def _init_weights(self, model, gathered) -> None:
        """`train.init_from` on a fresh run (a resumed run has its own weights)."""
        if self.cfg.train.init_from and self.resume_from is None:
            try:
                lines = load_initial_weights(model, self.cfg.train.init_from, self.cfg.train.init_from_ema, gathered)
            except (OSError, ValueError) as err:
                raise SetupError(str(err)) from None
            for line in lines:
                self._say(line)

    def _say(self, text: str) -> None:
        if self.rank == 0:
            Metrics.console(text)  # what Metrics.message prints with: above the progress bar, not through it

    def _latest(self) -> Path | None:
        """The checkpoint to resume from, one answer for all ranks: the one `latest` names if every
        file matches its checksums, else the newest older checkpoint that does (saying why). None
        for a fresh run; SetupError when checkpoints exist but none is intact."""
        found: list = [None]
        if self.rank == 0:
            try:
                latest = checkpoints.read_latest(self.root)
            except ValueError as err:
                latest = None
                self._say(f"{err}; looking for an older intact checkpoint")
                found = [[str(p) for p in reversed(checkpoints.list_checkpoints(self.root))]]
            else:
                older = [p for p in reversed(checkpoints.list_checkpoints(self.root))
                         if latest is not None and layout.step_of(p.name) < layout.step_of(latest.name)]
                found = [[str(p) for p in ([latest] if latest is not None else []) + older]]
        dist.broadcast_object_list(found, src=0)
        candidates = [Path(c) for c in found[0]]
        for ckpt in candidates:
            shares: list = [None] * self.world
            dist.all_gather_object(shares, integrity.problems(ckpt, self.rank, self.world))
            problems = [p for share in shares for p in share]
            if not problems:
                if ckpt != candidates[0]:
                    self._say(f"resuming from {ckpt.name}, the newest intact checkpoint, instead")
                return ckpt
            more = f"\n  and {len(problems) - 5} more" if len(problems) > 5 else ""
            self._say(f"checkpoint {ckpt} is refused:\n  " + "\n  ".join(problems[:5]) + more)
        if candidates:
            raise SetupError(f"no intact checkpoint in {self.root} to resume from (see above); move the run dir "
                             "aside or pass another --run-dir to start fresh")
        return None

    def _resume_or_start(self) -> TrainerState:
        latest = self.resume_from
        if latest is None:
            self.ema.reset(full_fp32_params(self.engine))
            return TrainerState(world_size=self.world)
        state = save_restore.load(self.engine, latest, self.ema, self.device)
        if state.world_size != self.world:
            self._check_weights(latest)
        try:
            self.loader.load_state_dict(state.loader)
        except ValueError as err:
            raise SetupError(f"cannot resume the data position of {latest}: {err}") from None
        state.world_size = self.world
        self._say(f"resumed from {latest} at step {state.step}")
        return state

    def _check_weights(self, ckpt: Path) -> None:
        """The weights DeepSpeed restored must be the checkpoint's consolidated ones, bit for bit."""
        saved = checkpoints.load_weights(ckpt)
        wrong = [name for name, full in full_fp32_params(self.engine) if not torch.equal(full.cpu(), saved[name])]
        if wrong:
            raise SetupError(f"the universal checkpoint of {ckpt} restored other weights than its "
                             f"model.safetensors for {wrong[:3]}")

    def _culprits(self, result) -> str:
        """A collective (every rank knows the update was skipped): which samples, on any rank, held
        non-finite values, so a bad sample can be found in its shard."""
        shares: list = [None] * self.world
        dist.all_gather_object(shares, result.nonfinite_keys)
        keys = [key for share in shares for key in share]
        if not keys:
            return "no sample of the step held a non-finite value (the model or the optimizer made it)"
        return f"non-finite values in sample(s) {', '.join(repr(k) for k in keys[:8])}" + (
            f" and {len(keys) - 8} more" if len(keys) > 8 else "")

    def _lr(self) -> float:
        """Learning rate of the last applied update."""
        applied = self.engine.lr_scheduler.last_epoch
        return self.cfg.optim.lr * lr_factor(max(0, applied - 1), self.cfg.optim, self.cfg.train.steps)

    def _validate(self, step: int, metrics: Metrics) -> None:
        mean, per_t = self.validator.run(self.step_fn.model)
        metrics.log_val(step, mean, per_t)

    def _save(self, state: TrainerState, streak: int = 0) -> None:
        try:
            path = save_restore.save(self.engine, self.cfg, self.root, state, self.ema, self.loader.state_dict())
        except (OSError, RuntimeError) as err:
            raise self._write_failure(state.step, err) from None
        since = (f" (the weights of step {state.step - streak}: the {streak} step(s) since had non-finite values "
                 "and changed nothing)") if streak else ""
        self._say(f"checkpoint {path}{since}")

    def _write_failure(self, step: int, err: BaseException) -> "CheckpointWriteError":
        """The error to end on when writing checkpoint `step` failed; removes the partial checkpoint
        (its space is what a full disk needs back), and `latest` still names the last complete one."""
        name = layout.checkpoint_name(step)
        full = _disk_full(err, self.root)  # before the partial checkpoint frees its space
        shutil.rmtree(self.root / (layout.TMP_PREFIX + name), ignore_errors=True)
        try:
            kept = checkpoints.read_latest(self.root)
        except ValueError:
            kept = None
        still = f"`latest` still names {kept.name}" if kept is not None else "no checkpoint was written before"
        if full:
            return CheckpointWriteError(
                f"no space left on the device of {self.root} while writing checkpoint {name}; {still}. Free space "
                "(or set checkpoint.dir elsewhere) and run the same command to resume")
        return CheckpointWriteError(f"writing checkpoint {name} in {self.root} failed: {err}; {still}")

    def run(self) -> int:
        """Train to train.steps; returns an exit code (FINISHED or PREEMPTED)."""
        cfg = self.cfg
        state = self._resume_or_start()
        total = cfg.train.steps
        if state.step >= total:
            self._say(f"nothing to do: the run is at step {state.step} of {total}")
            return exit_codes.FINISHED
        metrics = Metrics(self.run_dir, cfg.logging.every, cfg.logging.tensorboard, state.step, total,
                          self.device, self.peak)
        try:
            if self.validator is not None and state.step == 0:
                self._validate(0, metrics)
            batches = iter(self.loader)
            streak = 0
            while state.step < total:
                step = state.step + 1
                result = self.step_fn.run(step, [next(batches) for _ in range(self.grad_accum)])
                state.step, state.samples_seen = step, state.samples_seen + cfg.train.global_batch
                if result.applied:
                    streak = 0
                else:
                    streak += 1
                    state.skipped_steps += 1
                    metrics.message(f"step {step}: non-finite loss or gradient, update skipped "
                                    f"({streak} in a row, {state.skipped_steps} in all); {self._culprits(result)}")
                if self.ema.due(step):
                    self.ema.update(full_fp32_params(self.engine))
                metrics.add(result, state.skipped_steps)
                stop = self.preemption.agreed()
                if metrics.due(step):
                    metrics.log_train(step, self._lr())
                if streak >= cfg.train.nan_tolerance:
                    raise NonFiniteError(
                        f"{streak} optimizer steps in a row (to step {step}) had a non-finite loss or gradient "
                        f"(train.nan_tolerance={cfg.train.nan_tolerance}); stopping without a checkpoint. "
                        f"The last good one stays `latest` in {self.root}")
                if self.validator is not None and (step % cfg.eval.every == 0 or step == total):
                    self._validate(step, metrics)
                if self.images is not None and (step % cfg.eval.image_every == 0 or step == total):
                    metrics.log_images(*self.images.run(self.step_fn.model, step))
                if self.grids is not None and step % cfg.logging.sample_every == 0:
                    metrics.log_grid(step, self.grids.run(self.step_fn.model, step))
                # During a streak of skipped updates a periodic checkpoint waits for a good step, but the
                # last one is written anyway: skipped updates left weights and optimizer untouched, so it
                # holds the last good state, and "finished" or "preempted" promise a checkpoint.
                if (streak == 0 and step % cfg.checkpoint.every == 0) or step == total or stop:
                    self._save(state, streak)
                if stop:
                    self._say(f"preempted: stopped after step {step}; run the same command again to resume")
                    return exit_codes.PREEMPTED
        finally:
            metrics.close()
        self._say(f"finished: {total} steps")
        return exit_codes.FINISHED
