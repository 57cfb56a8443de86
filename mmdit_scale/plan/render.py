"""Human-readable forms of a plan: the terminal report and the markdown ladder table of docs/recipes.md."""
from __future__ import annotations

from typing import Sequence

from mmdit_scale.plan.flops import REPA_PLAN_ENCODER_DIM, run_training_flops
from mmdit_scale.plan.memory import GIB, USABLE_FRACTION, checkpointing_label
from mmdit_scale.plan.report import Plan
from mmdit_scale.plan.tokens import square_tokens

LADDER_RESOLUTIONS = (256, 1024)


def _si(value: float, unit: str) -> str:
    for scale, prefix in ((1e21, "Z"), (1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


def _count(n: int) -> str:
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.3g}{suffix}"
    return str(n)


def _duration(seconds: float) -> str:
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.1f} hours"
    return f"{seconds / 60:.1f} minutes"


def to_text(plan: Plan, title: str) -> str:
    cfg, hw, m = plan.cfg, plan.hardware, plan.cfg.model
    par = cfg.parallel
    limit = USABLE_FRACTION * hw.gpu_memory_gib
    lines = [
        f"{title} on {hw.gpus} GPUs of {hw.gpu_memory_gib:g} GiB; {par.precision}, ZeRO-{par.zero_stage}, "
        f"micro-batch {cfg.train.micro_batch}, "
        f"activation checkpointing {checkpointing_label(par.activation_checkpointing)}",
        "",
        f"model        depth {m.depth}, width {m.hidden_size}, {m.num_heads} heads"
        f"{', QK-norm' if m.qk_norm else ''}{', MM-DiT-X' if m.dual_attention_layers else ''}",
        f"inputs       latent {m.in_channels} channels, context {m.context_dim}, pooled {m.pooled_dim}; "
        f"{plan.input_dims_from}",
        f"parameters   {plan.params.total:,} ({_count(plan.params.total)})",
        f"tokens       {plan.tokens.image} image + {plan.tokens.text} text = {plan.tokens.total} per sample "
        f"at {cfg.data.resolution} px" + (f" (largest bucket: {plan.largest.image} image)"
                                          if plan.largest.image != plan.tokens.image else "")
        + f"; {plan.layout.autoencoder_factor}x autoencoder, layout from {plan.layout.source}",
        f"FLOPs        {_si(plan.flops.training, 'FLOP')} per training sample "
        f"(forward {_si(plan.flops.forward, 'FLOP')}, attention {100 * plan.flops.attention_fraction:.1f}%; "
        f"72LD^2S + 12LDS^2 = {_si(plan.flops.headline, 'FLOP')})" + _repa_note(cfg),
        "",
        f"memory per GPU (GiB)  weights  grads  optimizer    EMA  activations  buffers   total  fits (<= {limit:.1f})",
    ]
    for stage, memory in plan.memory.items():
        g = memory.gib()
        mark = " (recipe)" if stage == par.zero_stage else ""
        lines.append(f"ZeRO-{stage}{mark:<16}{g['weights']:8.2f}{g['gradients']:7.2f}{g['optimizer']:11.2f}"
                     f"{g['ema']:7.2f}{g['activations']:13.2f}{g['buffers']:9.2f}{g['total']:8.2f}  "
                     f"{'yes' if plan.fits_by_stage[stage] else 'no'}")
    lines.append(f"host memory per rank to build the model: {plan.build_host_bytes / GIB:.2f} GiB "
                 + ("(ZeRO-3 builds it sharded: its fp32 shard plus one module at a time)" if par.zero_stage >= 3
                    else "(the whole model in fp32; ZeRO-3 would build it sharded)"))
    lines += ["", f"activation checkpointing   blocks  activations GiB  recomputed per sample "
                  f"(micro-batch {cfg.train.micro_batch}, {plan.largest.total} tokens)"]
    for every, policy in plan.checkpointing.items():
        name = checkpointing_label(every) + (" (recipe)" if every == par.activation_checkpointing else "")
        extra = f" (+{100 * policy.recompute_flops / plan.flops.training:.1f}%)" if policy.recompute_flops else ""
        lines.append(f"{name:<26}{policy.blocks:>4}/{m.depth:<4}{policy.activations / GIB:14.2f}  "
                     f"{_si(policy.recompute_flops, 'FLOP')}{extra}")
    lines += [
        "",
        f"batch        {plan.samples_per_step} samples per step = micro {cfg.train.micro_batch} x {hw.gpus} GPUs x "
        f"{plan.grad_accum} accumulation steps",
    ]
    if plan.samples_per_step != cfg.train.global_batch:
        lines.append(f"             (train.global_batch {cfg.train.global_batch} is not a multiple of "
                     f"micro-batch x GPUs = {cfg.train.micro_batch * hw.gpus})")
    lines += [
        f"time         {plan.step_seconds:.3g} s per step at {100 * hw.mfu:g}% MFU of {plan.peak_tflops:g} TFLOP/s; "
        f"{cfg.train.steps:,} steps = {_duration(cfg.train.steps * plan.step_seconds)} "
        f"({_si(plan.total_flops, 'FLOP')} in all)",
        f"data         {_si(plan.data.total, 'B')} per sample ({plan.data.variants} caption variant"
        f"{'s' if plan.data.variants > 1 else ''}); {_si(plan.total_bytes, 'B')} read over the run, "
        f"{_si(plan.samples_per_second_per_gpu * plan.data.total, 'B')}/s per GPU",
    ]
    if plan.suggestions or not plan.fits:
        lines.append("")
        lines.append("nothing fits." if not plan.fits else f"ZeRO-{par.zero_stage} does not fit.")
        if plan.suggestions:
            lines.append("what would fit:")
            lines += [f"  - {s.change}: {s.memory_gib:.1f} GiB per GPU ({' '.join(s.overrides)})"
                      for s in plan.suggestions]
        else:
            lines.append("one sample per GPU with every block checkpointed is already too large: "
                         "use GPUs with more memory or a lower data.resolution.")
    return "\n".join(lines) + "\n"


def _repa_note(cfg) -> str:
    repa = cfg.train.repa
    if not repa.enabled:
        return ""
    width = (f"{repa.encoder_dim}-wide" if repa.encoder_dim else
             f"{REPA_PLAN_ENCODER_DIM}-wide (assumed, DINOv2-B's; set train.repa.encoder_dim or data.train)")
    return f"; with REPA's projector on block {repa.block_of(cfg.model.depth)} to {width} features"


def ladder_markdown(plans: Sequence[Plan]) -> str:
    """One row per plan: the ladder table of docs/recipes.md (memory at each recipe's own micro-batch)."""
    hw = plans[0].hardware
    res = " | ".join(f"TFLOP/sample {r} px" for r in LADDER_RESOLUTIONS)
    rows = [
        f"| depth | width | heads | parameters | {res} | micro-batch "
        f"| ZeRO-2 GiB/GPU | ZeRO-3 GiB/GPU |",
        "|---:|---:|---:|---:|" + "---:|" * len(LADDER_RESOLUTIONS) + "---:|---:|---:|",
    ]
    for plan in plans:
        m = plan.cfg.model
        flops = " | ".join(f"{run_training_flops(plan.cfg, square_tokens(plan.cfg, plan.layout, r)).training / 1e12:.2f}"
                           for r in LADDER_RESOLUTIONS)
        memory = " | ".join(f"{plan.memory[s].total / GIB:.1f}{'' if plan.fits_by_stage[s] else ' (no)'}"
                            for s in (2, 3))
        rows.append(f"| {m.depth} | {m.hidden_size} | {m.num_heads} | {plan.params.total / 1e9:.3f}B | {flops} "
                    f"| {plan.cfg.train.micro_batch} | {memory} |")
    return "\n".join(rows) + "\n" + (
        f"\n{hw.gpus} GPUs of {hw.gpu_memory_gib:g} GiB, {plans[0].cfg.parallel.precision}, "
        f"{plans[0].cfg.data.resolution} px, activation checkpointing "
        f"{checkpointing_label(plans[0].cfg.parallel.activation_checkpointing)}; "
        f"'(no)': above {100 * USABLE_FRACTION:g}% of the card.\n")
