"""Loader settings. Rank and world size are not here: the trainer passes them to the loader."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from data_pipeline.layout import CAPTION_VARIANTS

WORKER_TYPES = ("thread", "process")


VERIFY_MODES = ("sha256", "size", "none")


@dataclass
class LoaderConfig:
    batch_size: int
    """Samples per batch on this rank (the micro batch); every batch holds one latent shape."""
    seed: int = 0
    """Seeds shard order, the shuffle buffer, dataset mixing, dropout and caption choice."""
    shuffle_buffer: int = 256
    """Samples held for shuffling per stream. From local shards a held sample costs about 1 KB
    (its tensors stay in the file until collated); from streamed ones (`pipe:`, URLs) it holds
    its kept tensors (about 0.55 MB at 256 px with T5), so size it to RAM. 0 or 1 disables
    shuffling."""
    text_dropout: float = 0.464
    """Probability that each text encoder (CLIP-L, CLIP-G, T5) is dropped, independently (zeros)."""
    synthetic_caption_prob: float = 0.5
    """Probability of the synthetic caption where a sample has one (else the original)."""
    num_workers: int = 0
    """Parallel readers per rank; 0 reads in the calling thread. Part of the data order: an
    exact resume needs the same value (another value resumes without repeating shards)."""
    worker_type: str = "process"
    """`process`: DataLoader worker processes collating into shared batch slots made once
    (scales with cores: 8 workers gave 12,800 samples/s of SD3 256 px samples on 16 cores).
    `thread`: reader threads (file reads and copies release the GIL, but the rest holds it:
    no gain past 2 threads); useful where forking is not wanted."""
    prefetch: int = 2
    """Batches each worker prepares ahead."""
    val_caption: str = "orig"
    """Caption variant validation reads (falls back to `orig` where a sample lacks it)."""
    null_text: Optional[str] = None
    """Path of a NULL_TEXT_FILE (the encoded empty string): a dropped text encoder's part gets its
    encoding of "" instead of zeros (recipes: data.null_text=empty). None: zeros."""
    verify: str = "sha256"
    """How a local shard is checked against its manifest entry when a process first opens it:
    `sha256` (size and content hash: one extra read of the shard per process and run), `size`
    (truncation and growth only), or `none`. A shard that fails is skipped whole, with a warning
    naming it and what differs, and counted as corrupt. Streamed shards (`pipe:`, URLs) are not
    checked: their bytes are read once, as they arrive (docs/loader.md)."""

    repa_features: bool = False
    """Also read each sample's REPA features into `batch["repa_features"]` (B, grid^2, hidden); the
    manifest must name the encoder (`encoders.repa`). Off: their bytes are skipped (train.repa off)."""

    def __post_init__(self) -> None:
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"LoaderConfig.batch_size must be a positive int, got {self.batch_size!r}")
        if self.shuffle_buffer < 0:
            raise ValueError(f"LoaderConfig.shuffle_buffer must be >= 0, got {self.shuffle_buffer}")
        for name in ("text_dropout", "synthetic_caption_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"LoaderConfig.{name} must be in [0, 1], got {value}")
        if self.num_workers < 0:
            raise ValueError(f"LoaderConfig.num_workers must be >= 0, got {self.num_workers}")
        if self.verify not in VERIFY_MODES:
            raise ValueError(f"LoaderConfig.verify {self.verify!r} not in {VERIFY_MODES}")
        if self.worker_type not in WORKER_TYPES:
            raise ValueError(f"LoaderConfig.worker_type {self.worker_type!r} not in {WORKER_TYPES}")
        if self.prefetch < 1:
            raise ValueError(f"LoaderConfig.prefetch must be >= 1, got {self.prefetch}")
        if self.val_caption not in CAPTION_VARIANTS:
            raise ValueError(f"LoaderConfig.val_caption {self.val_caption!r} not in {CAPTION_VARIANTS}")

    @property
    def streams_per_rank(self) -> int:
        return max(1, self.num_workers)
