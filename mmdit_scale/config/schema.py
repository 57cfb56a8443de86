"""The typed schema of a training run: one dataclass per recipe section.

Every key a recipe may set is a field here, with its default and a docstring; docs/config.md
lists them all. Choices are `Literal` types so the loader can reject a bad value with the
allowed set in the message. Range checks live in `__post_init__` and name the dotted key.
Pure Python: importing this module must not import torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Optional, Union

from mmdit_scale.flow.names import FORMULATIONS, MODE_S_MAX, MODE_S_MIN, TIMESTEP_SAMPLERS
from mmdit_scale.model.config import MMDiTConfig, Routing

# Built from the flow package's own tuples, so a new formulation or sampler needs no edit here.
Formulation = Literal[FORMULATIONS]  # type: ignore[valid-type]
TimestepSampler = Literal[TIMESTEP_SAMPLERS]  # type: ignore[valid-type]


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


@dataclass
class FlowConfig:
    """Forward process and training-timestep distribution (reference card section 4)."""

    formulation: Formulation = "rf"
    """Forward process and prediction target; the SD3 study's winner is rectified flow (`rf`)."""
    timestep_sampler: TimestepSampler = "lognorm"
    """Distribution of training timesteps t in (0, 1)."""
    lognorm_m: float = 0.0
    """Location m of `lognorm`: t = sigmoid(m + s * n), n ~ N(0, 1)."""
    lognorm_s: float = 1.0
    """Scale s of `lognorm`; lognorm(0.00, 1.00) ranked best in the SD3 study."""
    mode_s: float = 1.29
    """Scale s of `mode` (diffusers' default 1.29); must lie in [-1, 2 / (pi - 2)]."""
    shift: float = 1.0
    """Resolution shift alpha: t -> alpha t / (1 + (alpha - 1) t); 1.0 at 256 px, 3.0 at 1024 px."""
    contrastive_weight: float = 0.0
    """Contrastive flow matching's lambda (ΔFM): the training loss subtracts lambda times the error
    against another sample's target in the batch. 0: off (the paper's objective); ΔFM used 0.05."""

    def __post_init__(self) -> None:
        _require(self.lognorm_s > 0, f"flow.lognorm_s must be > 0, got {self.lognorm_s}")
        _require(MODE_S_MIN <= self.mode_s <= MODE_S_MAX,
                 f"flow.mode_s must lie in [{MODE_S_MIN}, {MODE_S_MAX:.4f}] (monotonic mode map), got {self.mode_s}")
        _require(self.shift > 0, f"flow.shift must be > 0, got {self.shift}")
        _require(0.0 <= self.contrastive_weight < 1.0,
                 f"flow.contrastive_weight must lie in [0, 1), got {self.contrastive_weight}")


@dataclass
class DataSource:
    """One dataset of a weighted mixture (`data.train: [{path: ..., weight: 3}, ...]`)."""

    path: str = ""
    """A shard directory, a brace pattern of shards, a `file:` path, or a `pipe:`/URL pattern."""
    weight: float = 1.0
    """Share of the mixture, relative to the other sources' weights."""
    manifest: str = ""
    """The dataset's manifest (path or URL); empty: found beside its shards (data_pipeline/locate.py)."""

    def __post_init__(self) -> None:
        _require(bool(self.path), "a data source needs a path")
        _require(math.isfinite(self.weight) and self.weight > 0,
                 f"data source {self.path!r}: weight must be a finite number > 0, got {self.weight}")


DataValue = Union[str, tuple[DataSource, ...]]
"""One dataset (a path, pattern or URL), or a weighted mixture of them."""


@dataclass
class DataConfig:
    """Where the pre-encoded shards are and how batches are drawn from them."""

    train: DataValue = ""
    """Pre-encoded training shards (written by `mmdit-scale prepare`): a directory, a brace pattern,
    `file:`, a `pipe:`/URL pattern, or a list of `{path, weight[, manifest]}` to mix; empty: none yet."""
    val: DataValue = ""
    """Held-out shards for the validation loss, in the same forms; empty: no validation."""
    resolution: Optional[int] = None
    """Image side in pixels the shards were encoded at, the base size of the timestep shift rule
    (flow.shift applies at resolution^2; buckets get flow.shift x sqrt(pixels / resolution^2)).
    Unset: taken from data.train's manifest before any rank starts; set: it must agree with it."""
    buckets: tuple[tuple[int, int], ...] = ()
    """(H, W) pixel sizes of the aspect-ratio buckets the shards were encoded with, H * W about
    resolution^2 (SD3's mixed-aspect finetuning); empty: square resolution x resolution crops only.
    Each batch holds one bucket, so this is also the set of shapes the model and memory must handle.
    The manifest's buckets are the truth: unset, they are taken from it; set (for `plan` before the
    shards exist), they must equal it."""
    num_workers: int = 2
    """Loader workers per rank; 0 reads in the training process."""
    caption_mix: float = 0.5
    """Probability of the synthetic caption where a sample has both (SD3: 50/50 original/synthetic)."""
    text_dropout: float = 0.464
    """Probability that each text encoder's part (CLIP-L, CLIP-G, T5) is zeroed, independently (CFG)."""
    null_text: Literal["zeros", "empty"] = "zeros"
    """What "no prompt" is, in text-encoder dropout and as the null condition of guidance (sampling,
    the trainer's grids, an export's pipeline): `zeros`, a dropped encoder's part zeroed (the
    default, argued in docs/sampling.md), or `empty`, its encoding of the empty string, as SD3's own
    inference does (prepare writes it beside the manifest, null_text.safetensors)."""
    verify: Literal["sha256", "size", "none"] = "sha256"
    """How each local shard is checked against its manifest when a loader process first opens it:
    size and sha256 (one extra read per shard and process), size only, or not at all. A shard that
    fails is skipped whole with a warning naming it (docs/loader.md)."""

    def __post_init__(self) -> None:
        # Multiples of autoencoder factor x patch size are checked against the data's manifest
        # (run/data_dims.py): the factor is the data's (8 for SD3's VAE, 2 for the demo's pixels).
        _require(self.resolution is None or self.resolution > 0,
                 f"data.resolution must be a positive number of pixels, got {self.resolution}")
        _require(all(h > 0 and w > 0 for h, w in self.buckets),
                 f"data.buckets sides must be positive numbers of pixels, got {self.buckets}")
        _require(self.num_workers >= 0, f"data.num_workers must be >= 0, got {self.num_workers}")
        for name in ("caption_mix", "text_dropout"):
            value = getattr(self, name)
            _require(0.0 <= value <= 1.0, f"data.{name} is a probability in [0, 1], got {value}")


@dataclass
class Repa:
    """REPA representation alignment (Yu et al., 2025): an MLP projector on block `block`'s image
    tokens is pulled, by negative cosine, towards a frozen vision encoder's patch features of the
    clean image (stored in the shards by `prepare --repa-encoder`). The projector trains with the
    model and is left out of its weights, EMA and export. weight 0: off."""

    weight: float = 0.0
    """lambda: the loss is the flow loss + weight * mean over image tokens of (1 - cos); REPA used 0.5."""
    block: Optional[int] = None
    """0-based block whose output image tokens are aligned; None: depth // 3 (REPA aligned block 8 of
    SiT-XL's 28: early, so the later blocks stay free for generation)."""
    encoder_dim: Optional[int] = None
    """Width of the encoder's features, the projector's output; None: the training shards' manifest's
    (`train` fills it in the run's config.yaml; `plan` without shards assumes DINOv2-B's 768)."""

    def __post_init__(self) -> None:
        _require(math.isfinite(self.weight) and self.weight >= 0,
                 f"train.repa.weight must be a finite number >= 0, got {self.weight}")
        _require(self.block is None or self.block >= 0, f"train.repa.block must be >= 0, got {self.block}")
        _require(self.encoder_dim is None or self.encoder_dim > 0,
                 f"train.repa.encoder_dim must be > 0, got {self.encoder_dim}")

    @property
    def enabled(self) -> bool:
        return self.weight > 0

    def block_of(self, depth: int) -> int:
        """The aligned block of a model `depth` blocks deep."""
        return depth // 3 if self.block is None else self.block


@dataclass
class TrainConfig:
    """Length, batch and seed of the run. World size comes from the launcher, never from here."""

    steps: int = 500_000
    """Optimizer steps to train for (the SD3 scaling runs: 500k)."""
    global_batch: int = 4096
    """Samples per optimizer step over all ranks; gradient accumulation = global / (micro * world)."""
    micro_batch: int = 32
    """Samples per rank per forward/backward pass."""
    seed: int = 0
    """Seed of weights, data order, noise and timesteps; each rank derives its own stream from it."""
    ema_decay: float = 0.99
    """Decay of the weight EMA per EMA update."""
    ema_every: int = 100
    """Optimizer steps between EMA updates (SD3: 0.99 every 100 batches); 0 turns EMA off."""
    init_from: str = ""
    """Checkpoint or exported weights to start the model from (weights only; step and optimizer start
    fresh). `train` rewrites it as the absolute checkpoint (or diffusers) directory it resolved to."""
    init_from_ema: bool = False
    """Start from the source checkpoint's EMA weights instead of its raw ones."""
    init_from_step: Optional[int] = None
    """Filled by `train`: the optimizer step of the checkpoint the weights came from (None: a
    diffusers source, or no init_from), so a fine-tune's config says what it started from."""
    nan_tolerance: int = 10
    """Optimizer steps in a row with a non-finite loss or gradient that are skipped (and counted)
    before the run stops with exit code 65, keeping the last good checkpoint."""
    compile: bool = False
    """Compile the model with torch.compile through DeepSpeed (`engine.compile()`)."""
    routing: Routing = field(default_factory=Routing)
    """TREAD token routing: `{ratio, start_block, end_block}` (blocks 0-based, inclusive; ratio 0:
    off). A random `ratio` of each sample's image tokens skip those blocks in training."""
    repa: Repa = field(default_factory=Repa)
    """REPA: `{weight, block}` (block 0-based; weight 0: off). Block `block`'s image tokens are aligned
    to the shards' frozen vision-encoder features (`prepare --repa-encoder`)."""

    def __post_init__(self) -> None:
        for name in ("steps", "global_batch", "micro_batch"):
            value = getattr(self, name)
            _require(value > 0, f"train.{name} must be > 0, got {value}")
        _require(self.micro_batch <= self.global_batch,
                 f"train.micro_batch ({self.micro_batch}) exceeds train.global_batch ({self.global_batch})")
        _require(0.0 <= self.ema_decay < 1.0, f"train.ema_decay must lie in [0, 1), got {self.ema_decay}")
        _require(self.ema_every >= 0, f"train.ema_every must be >= 0, got {self.ema_every}")
        _require(self.nan_tolerance >= 1, f"train.nan_tolerance must be >= 1, got {self.nan_tolerance}")


@dataclass
class OptimConfig:
    """AdamW and its learning-rate schedule."""

    lr: float = 1e-4
    """Peak learning rate (SD3: 1e-4)."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW (beta1, beta2)."""
    eps: float = 1e-8
    """AdamW epsilon; SD3's bf16 high-resolution finetune used 1e-15 against instability."""
    weight_decay: float = 0.0
    """Decoupled weight decay."""
    warmup_steps: int = 1000
    """Steps of linear warm-up from 0 to lr (SD3: 1000)."""
    schedule: Literal["constant", "cosine", "linear"] = "constant"
    """Shape after warm-up: hold lr, or decay it to min_lr at train.steps."""
    min_lr: float = 0.0
    """Final learning rate of the cosine and linear schedules."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this; 0 turns clipping off."""

    def __post_init__(self) -> None:
        _require(self.lr > 0, f"optim.lr must be > 0, got {self.lr}")
        _require(self.eps > 0, f"optim.eps must be > 0, got {self.eps}")
        _require(all(0.0 <= b < 1.0 for b in self.betas), f"optim.betas must lie in [0, 1), got {self.betas}")
        _require(self.weight_decay >= 0, f"optim.weight_decay must be >= 0, got {self.weight_decay}")
        _require(self.warmup_steps >= 0, f"optim.warmup_steps must be >= 0, got {self.warmup_steps}")
        _require(0 <= self.min_lr <= self.lr, f"optim.min_lr must lie in [0, optim.lr], got {self.min_lr}")
        _require(self.grad_clip >= 0, f"optim.grad_clip must be >= 0, got {self.grad_clip}")


@dataclass
class ParallelConfig:
    """How DeepSpeed shards and computes; the DeepSpeed JSON is generated from this section."""

    zero_stage: Literal[0, 1, 2, 3] = 2
    """ZeRO stage: 1 shards optimizer state, 2 also gradients, 3 also parameters."""
    precision: Literal["bf16", "fp32"] = "bf16"
    """Compute precision; bf16 keeps fp32 master weights in the optimizer."""
    activation_checkpointing: Union[bool, int] = 0
    """Recompute the activations of every k-th block (blocks i with i % k == 0) in backward: 0 none,
    1 every block (least memory, about a third more compute). `false`/`true`, this key's values
    before it took an interval, are read as 0/1 so earlier run dirs load; it is an int afterwards."""

    def __post_init__(self) -> None:
        if isinstance(self.activation_checkpointing, bool):
            self.activation_checkpointing = int(self.activation_checkpointing)
        _require(self.activation_checkpointing >= 0,
                 f"parallel.activation_checkpointing must be >= 0 (0: no block, 1: every block, k: every "
                 f"k-th block), got {self.activation_checkpointing}; 0 turns it off")


@dataclass
class CheckpointConfig:
    """When and where the run saves itself; a restarted run resumes from the newest checkpoint."""

    every: int = 1000
    """Optimizer steps between checkpoints."""
    keep: int = 3
    """Newest checkpoints to keep; older ones are deleted."""
    dir: str = ""
    """Checkpoint directory; empty: `checkpoints/` inside the run directory."""

    def __post_init__(self) -> None:
        _require(self.every > 0, f"checkpoint.every must be > 0, got {self.every}")
        _require(self.keep >= 1, f"checkpoint.keep must be >= 1, got {self.keep}")


@dataclass
class LoggingConfig:
    """Training metrics: loss, learning rate, throughput, MFU."""

    every: int = 10
    """Optimizer steps between metric lines."""
    tensorboard: bool = True
    """Also write TensorBoard event files into the run directory."""
    sample_every: int = 0
    """Optimizer steps between sample grids (RUN_DIR/samples/ and TensorBoard), conditioned on the
    first held-out batch of data.val; 0: none."""
    peak_tflops: float = 0.0
    """Peak dense bf16 TFLOP/s of one device for MFU; 0: looked up from the device name
    (H100/H200 989, A100 312); MFU is not logged for an unknown device such as a CPU."""

    def __post_init__(self) -> None:
        _require(self.every > 0, f"logging.every must be > 0, got {self.every}")
        _require(self.peak_tflops >= 0, f"logging.peak_tflops must be >= 0, got {self.peak_tflops}")
        _require(self.sample_every >= 0, f"logging.sample_every must be >= 0, got {self.sample_every}")


@dataclass
class ImageMetricsConfig:
    """The feature models and reference statistics of the image metrics (docs/metrics.md): local
    paths only, nothing is downloaded."""

    inception: str = ""
    """FID's Inception-v3: a local copy of inception-2015-12-05.pt (TorchScript, NVlabs' FID network)."""
    clip: str = ""
    """CMMD's and CLIP score's CLIP: a directory saved by transformers (CLIPModel, tokenizer, processor)."""
    reference: str = ""
    """Reference statistics (.npz, `eval-images --save-reference` writes them too); empty:
    RUN_DIR/image_reference.npz. Made from the eval.image_prompts samples of data.val when the file
    does not exist, then reused; refused when made with other feature models."""


@dataclass
class EvalConfig:
    """Validation loss on data.val: fixed noise and evenly spaced timesteps, comparable across runs."""

    every: int = 1000
    """Optimizer steps between validation passes; 0 turns validation off."""
    val_batches: int = 4
    """Micro-batches of data.val per validation pass."""
    timesteps: int = 8
    """Equally spaced t values the loss is averaged over (SD3 scaling study: 8)."""
    shifted: bool = False
    """Shift those t values by the training rule for each batch's size (flow.shift x sqrt(bucket
    pixels / data.resolution^2)). Off (the SD3 study's choice): the same unshifted t for every run,
    so runs of different shifts stay comparable."""
    seed: int = 0
    """Seed of the fixed validation noise (and of the image metrics' noise)."""
    image_every: int = 0
    """Optimizer steps between image metrics (FID, CMMD, CLIP score) of images generated from the
    eval.image_prompts held-out prompts, spread over the ranks, and at the last step; 0: none. A multiple of
    eval.every puts them on validation steps, where `scaling-report` pairs them with the loss."""
    image_prompts: int = 64
    """Held-out samples of data.val (the first in its order, whatever the world size): their text
    conditions the generated images, their images make the reference statistics."""
    metrics: ImageMetricsConfig = field(default_factory=ImageMetricsConfig)
    """Where the image metrics' feature models and reference statistics are."""

    def __post_init__(self) -> None:
        _require(self.every >= 0, f"eval.every must be >= 0, got {self.every}")
        _require(self.image_every >= 0, f"eval.image_every must be >= 0, got {self.image_every}")
        _require(self.image_prompts >= 2, f"eval.image_prompts must be >= 2 (FID needs a covariance), "
                 f"got {self.image_prompts}")
        _require(self.val_batches > 0, f"eval.val_batches must be > 0, got {self.val_batches}")
        _require(self.timesteps > 0, f"eval.timesteps must be > 0, got {self.timesteps}")


@dataclass
class RunConfig:
    """Everything a training run needs, as loaded from a recipe: `load_config(path, overrides)`."""

    model: MMDiTConfig = field(default_factory=MMDiTConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        routing = self.train.routing
        _require(not routing.enabled or routing.end_block < self.model.depth,
                 f"train.routing.end_block={routing.end_block} is past the model's last block "
                 f"({self.model.depth - 1}; model.depth={self.model.depth})")
        repa = self.train.repa
        _require(not repa.enabled or repa.block_of(self.model.depth) < self.model.depth,
                 f"train.repa.block={repa.block} is past the model's last block: it must lie in 0..{self.model.depth - 1} "
                 f"(model.depth={self.model.depth})")
