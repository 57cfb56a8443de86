"""One optimizer step: gradient accumulation over micro-batches, the flow loss, the non-finite guard.

Timesteps and noise come from a generator seeded by (train.seed, step, rank, micro-batch), not
from a running RNG, so a resumed run draws exactly what an uninterrupted one would. Timesteps are
drawn from `flow.timestep_sampler`, then shifted for the batch's bucket:
alpha = flow.shift * sqrt(bucket pixels / data.resolution^2) (`flow.shift_for_size`), i.e.
`flow.shift` at the recipe's resolution and the paper's sqrt(m/n) rule for buckets of other areas.
The FLOPs each step logs (for MFU) are `plan`'s exact count for the batch's tokens.

REPA (`train.repa`, weight > 0): the loss is the flow loss + weight * the mean over samples of
`model.repa.alignment_loss` between the projector's output on block `train.repa.block`'s image tokens
and the shards' encoder features, resized to the token grid (and taken at the kept tokens where
that block is routed). The logged `loss` stays the flow loss, so runs with and without REPA compare;
`repa_loss` is logged beside it.

Non-finite guard: a NaN/inf loss on any rank makes that rank's gradients non-finite, and
DeepSpeed's ZeRO-1/2/3 and bf16 optimizers then skip the update on every rank (no weight,
optimizer-state or schedule change). ZeRO-0 fp32 has no such check in DeepSpeed, so there the
trainer checks the reduced gradients itself and skips the update the same way.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from data_pipeline.loader.rng import hash_ints
from mmdit_scale.config.schema import FlowConfig, RunConfig
from mmdit_scale.flow import get_formulation, get_timestep_sampler, shift_for_size, shift_timesteps
from mmdit_scale.flow.timestep_samplers import TimestepSampler
from mmdit_scale.model.repa import alignment_loss, target_tokens
from mmdit_scale.plan.flops import run_training_flops
from mmdit_scale.plan.tokens import TokenLayout, Tokens, sample_tokens
from mmdit_scale.train import hooks
from mmdit_scale.train.engine import compute_dtype

T_BINS = 10
"""Equal-width t bins the training loss is also reported in (loss/t_0.0-0.1, ...)."""

_NOISE_DOMAIN = 0x7E57
"""Keeps the trainer's noise seeds apart from the loader's counter-based draws."""


def timestep_sampler(flow: FlowConfig) -> TimestepSampler:
    options = {"lognorm": {"m": flow.lognorm_m, "s": flow.lognorm_s}, "mode": {"s": flow.mode_s}}
    return get_timestep_sampler(flow.timestep_sampler, **options.get(flow.timestep_sampler, {}))


@dataclass
class StepResult:
    applied: bool
    """False when the update was skipped for a non-finite loss or gradient."""
    loss_sum: torch.Tensor
    """() this rank's sum of per-sample losses (stays on the device: no sync per step)."""
    bin_sum: torch.Tensor
    """(T_BINS,) per-sample losses summed by t bin."""
    bin_count: torch.Tensor
    """(T_BINS,) samples per t bin."""
    samples: int
    tokens: int
    flops: float
    grad_norm: torch.Tensor | float | None
    """Global gradient norm before clipping, as DeepSpeed reports it (None when it keeps none)."""
    nonfinite_keys: list[str]
    """Keys of this rank's samples whose latent or text held NaN or inf (looked for only when the
    update was skipped)."""
    repa_sum: torch.Tensor | None = None
    """() per-sample REPA alignment losses (mean 1 - cos) summed; None with REPA off."""


def nonfinite_samples(batches: list[dict]) -> list[str]:
    """Keys of the samples whose latent, context or pooled text holds a NaN or an infinity."""
    keys = []
    for batch in batches:
        finite = torch.ones(len(batch["keys"]), dtype=torch.bool)
        for name in ("latent", "context", "pooled"):
            finite &= torch.isfinite(batch[name].float()).flatten(1).all(1).cpu()
        keys += [key for key, ok in zip(batch["keys"], finite.tolist()) if not ok]
    return keys


class TrainStep:
    def __init__(self, engine, cfg: RunConfig, tokens: TokenLayout, device: torch.device, rank: int, grad_accum: int):
        """`tokens`: the training data's autoencoder factor and text length."""
        self.engine, self.cfg, self.device, self.rank, self.grad_accum = engine, cfg, device, rank, grad_accum
        self.formulation = get_formulation(cfg.flow.formulation)
        self.sampler = timestep_sampler(cfg.flow)
        self.dtype = compute_dtype(cfg)
        self.tokens = tokens
        self._flops: dict[Tokens, float] = {}
        self.own_guard = cfg.parallel.zero_stage == 0 and self.dtype == torch.float32
        self.nan_steps = hooks.nan_steps()

    def shift(self, height: int, width: int) -> float:
        """Timestep shift for a latent of height x width."""
        factor = self.tokens.autoencoder_factor
        return shift_for_size(self.cfg.flow.shift, (height * factor, width * factor), self.cfg.data.resolution)

    def sample_cost(self, height: int, width: int) -> tuple[Tokens, float]:
        """Tokens and training FLOPs of one sample whose latent is height x width (cached per shape)."""
        factor = self.tokens.autoencoder_factor
        tokens = sample_tokens(height * factor, width * factor, self.cfg.model.patch_size, self.tokens)
        if tokens not in self._flops:
            self._flops[tokens] = run_training_flops(self.cfg, tokens).training
        return tokens, self._flops[tokens]

    def _generator(self, step: int, micro: int) -> torch.Generator:
        seed = hash_ints(self.cfg.train.seed, _NOISE_DOMAIN, step, self.rank, micro) & (2**63 - 1)
        return torch.Generator(device=self.device).manual_seed(seed)

    def model(self, z: torch.Tensor, t: torch.Tensor, context: torch.Tensor, pooled: torch.Tensor,
              keep: torch.Tensor | None = None, aligned: list[torch.Tensor] | None = None) -> torch.Tensor:
        """The engine as a flow `model_fn`: the flow math runs in fp32, the model in the compute dtype.
        `keep`: the image tokens that go through the routed blocks (train.routing), else all.
        With REPA on the engine also returns the projected block tokens: appended to `aligned` when
        given (training), dropped otherwise (validation, sample grids)."""
        if keep is None:
            out = self.engine(z.to(self.dtype), t, context, pooled)
        else:
            out = self.engine(z.to(self.dtype), t, context, pooled, keep=keep, routing=self.cfg.train.routing)
        if not self.cfg.train.repa.enabled:
            return out
        velocity, projected = out
        if aligned is not None:
            aligned.append(projected)
        return velocity

    def repa_loss(self, projected: torch.Tensor, features: torch.Tensor, height: int, width: int,
                  keep: torch.Tensor | None) -> torch.Tensor:
        """(B,) alignment loss of the projected tokens (B, N or K, De) against the batch's encoder
        features (B, grid^2, De) on the latent's token grid."""
        repa, patch = self.cfg.train.repa, self.cfg.model.patch_size
        routed = self.cfg.train.routing.routes(repa.block_of(self.cfg.model.depth))
        target = target_tokens(features.to(self.device), height // patch, width // patch,
                               keep if routed else None)  # (B, N or K, De)
        return alignment_loss(projected, target)

    def route(self, batch: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor | None:
        """(B, K) sorted indices of the image tokens each sample keeps through the routed blocks, drawn
        from the step's seeded generator (so a resumed run draws the same); None with routing off."""
        routing = self.cfg.train.routing
        if not routing.enabled:
            return None
        patch = self.cfg.model.patch_size
        n = (height // patch) * (width // patch)
        order = torch.rand((batch, n), generator=generator, device=self.device).argsort(dim=1)  # (B, N)
        return order[:, :routing.kept(n)].sort(dim=1).values  # (B, K)

    def run(self, step: int, batches: list[dict]) -> StepResult:
        """Optimizer step `step` (1-based) over `grad_accum` micro-batches of this rank."""
        if len(batches) != self.grad_accum:
            raise ValueError(f"step needs {self.grad_accum} micro-batches, got {len(batches)}")
        loss_sum = torch.zeros((), device=self.device)
        repa = self.cfg.train.repa
        repa_sum = torch.zeros((), device=self.device) if repa.enabled else None
        bin_sum = torch.zeros(T_BINS, device=self.device)
        bin_count = torch.zeros(T_BINS, device=self.device)
        samples = tokens = 0
        flops = 0.0
        own_skip = False
        for micro, batch in enumerate(batches):
            x0 = batch["latent"].to(self.device, torch.float32, non_blocking=True)  # (B, C, h, w)
            context = batch["context"].to(self.device, self.dtype, non_blocking=True)  # (B, T, Dc)
            pooled = batch["pooled"].to(self.device, self.dtype, non_blocking=True)  # (B, Dp)
            b, _, h, w = x0.shape
            g = self._generator(step, micro)
            t = shift_timesteps(self.sampler.sample(b, generator=g, device=self.device), self.shift(h, w))  # (B,)
            noise = torch.randn(x0.shape, generator=g, device=self.device)  # (B, C, h, w)
            routed = {} if (keep := self.route(b, h, w, g)) is None else {"keep": keep}  # drawn after the noise
            aligned: list[torch.Tensor] = []
            extra = {"aligned": aligned} if repa.enabled else {}
            out = self.formulation.training_losses(self.model, x0, t, noise, self.cfg.flow.contrastive_weight,
                                                   context=context, pooled=pooled, **routed, **extra)
            loss = out.loss.mean()
            if repa_sum is not None:
                align = self.repa_loss(aligned[0], batch["repa_features"], h, w, keep)  # (B,)
                loss = loss + repa.weight * align.mean()
                repa_sum += align.detach().sum()
            if self.rank == 0 and step in self.nan_steps:
                loss = loss * float("nan")
            self.engine.backward(loss)
            if micro == len(batches) - 1 and self.own_guard:
                own_skip = not self._grads_finite()
            if own_skip:
                self._skip_update()
            else:
                self.engine.step()
            per_sample = out.loss.detach()
            loss_sum += per_sample.sum()
            bins = (out.t.detach() * T_BINS).long().clamp_(0, T_BINS - 1)
            bin_sum.index_add_(0, bins, per_sample.float())
            bin_count.index_add_(0, bins, torch.ones_like(per_sample, dtype=torch.float32))
            sample, sample_flops = self.sample_cost(h, w)
            samples += b
            tokens += b * sample.total
            flops += b * sample_flops
        applied = self.engine.was_step_applied() and not own_skip
        grad_norm = self.engine.get_global_grad_norm() if not self.own_guard else self._own_norm
        return StepResult(applied=applied, loss_sum=loss_sum, bin_sum=bin_sum, bin_count=bin_count,
                          samples=samples, tokens=tokens, flops=flops, grad_norm=grad_norm,
                          nonfinite_keys=[] if applied else nonfinite_samples(batches), repa_sum=repa_sum)

    def _grads_finite(self) -> bool:
        """ZeRO-0: the gradients are all-reduced by now, so every rank reaches the same answer."""
        grads = [p.grad for p in self.engine.module.parameters() if p.grad is not None]
        self._own_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))
        return bool(torch.isfinite(self._own_norm))

    def _skip_update(self) -> None:
        """Let DeepSpeed run its step bookkeeping (counters, zero_grad) without touching the weights,
        reporting the step as an overflow exactly as its own ZeRO optimizers do."""
        optimizer = self.engine.optimizer
        optimizer.step = lambda *args, **kwargs: None
        optimizer.overflow = True
        try:
            self.engine.step()
        finally:
            del optimizer.step
            del optimizer.overflow
