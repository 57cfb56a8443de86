"""Image metrics during training, every `eval.image_every` steps: FID, CMMD and CLIP score of images
generated from a fixed set of held-out prompts (docs/metrics.md).

The prompt set is the first `eval.image_prompts` samples of data.val in a one-rank pass (so it is
the same set whatever the world size): their stored text conditions the images (no text encoder
runs in training), their captions are the CLIP-score prompts, and their decoded latents are the
real images of the reference statistics, made once and kept on disk. Each sample's noise is fixed
by its key (`heldout.sample_noise`), and guidance and steps are `sample`'s defaults, as for grids.

The set is cut into chunks of train.micro_batch, dealt round-robin to the ranks. Every chunk is
sampled with the same batch whatever the world size, and the features are gathered to rank 0 in
set order, so 1 and N ranks give the same numbers. Every rank runs the same number of sampling
rounds (a rank short of chunks samples chunk 0 again and drops it): ZeRO-3's forward is a collective.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist

from data_pipeline.loader import ShardLoader
from data_pipeline.manifest import Provenance
from mmdit_scale.config import RunConfig
from mmdit_scale.eval.image_metrics.extractors import Clip, Inception
from mmdit_scale.eval.image_metrics.reference import Reference
from mmdit_scale.eval.image_metrics.score import score_features
from mmdit_scale.eval.sampling import SampleSettings, grid_image, to_uint8
from mmdit_scale.flow import euler_sample
from mmdit_scale.flow.formulation import Formulation
from mmdit_scale.run.layout import IMAGE_REFERENCE_FILE
from mmdit_scale.train.heldout import sample_noise
from mmdit_scale.train.sample_grids import GRID_SIZE, NullCondition, first_samples, run_autoencoder


def chunks_of(n: int, chunk: int, rank: int, world: int) -> list[range]:
    """This rank's chunks of a set of n: chunk c (samples c*chunk ...) goes to rank c % world."""
    return [range(c * chunk, min(n, (c + 1) * chunk)) for c in range(rank, math.ceil(n / chunk), world)]


def gather_rows(indices: list[int], rows: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
    """A collective: every rank's rows (one per index), on rank 0 in index order; None elsewhere."""
    shares: list = [None] * dist.get_world_size()
    dist.all_gather_object(shares, (list(indices), rows))
    if dist.get_rank() != 0:
        return None
    shares = [(i, r) for i, r in shares if i]  # a rank without a chunk of the set sends no rows
    order = np.argsort(np.concatenate([np.asarray(i, dtype=np.int64) for i, _ in shares]), kind="stable")
    return {k: np.concatenate([r[k] for _, r in shares])[order] for k in rows}


class ImageEvaluator:
    def __init__(self, cfg: RunConfig, loader: ShardLoader, provenance: Provenance, formulation: Formulation,
                 shift_for: Callable[[int, int], float], dtype: torch.dtype, device: torch.device, run_dir: Path,
                 null_condition: NullCondition):
        """`loader`: a one-rank validation loader of data.val (the same samples on every rank);
        `null_condition`: guidance's null text (`sample_grids.null_condition`)."""
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        metrics = cfg.eval.metrics
        self.inception = Inception.load(metrics.inception, where="eval.metrics.inception")
        self.clip = Clip.load(metrics.clip, where="eval.metrics.clip")
        batch = first_samples(loader, cfg.eval.image_prompts)
        self.count = len(batch["keys"])
        if self.count < 2:
            raise ValueError(f"eval.image_every: data.val gave {self.count} sample(s) of one size; FID needs 2 or more")
        self.settings = SampleSettings()
        self.formulation, self.device, self.dtype = formulation, device, dtype
        self.shift = shift_for(*batch["latent"].shape[2:])
        self.autoencoder = run_autoencoder(provenance, device)
        mine = chunks_of(self.count, cfg.train.micro_batch, self.rank, self.world)
        rounds = math.ceil(math.ceil(self.count / cfg.train.micro_batch) / self.world)
        first = range(0, min(self.count, cfg.train.micro_batch))
        # (indices, keep) per round: a rank with fewer chunks samples chunk 0 again and keeps nothing.
        self.rounds = [(c, True) for c in mine] + [(first, False)] * (rounds - len(mine))
        self.noise = sample_noise(batch["keys"], tuple(batch["latent"].shape[1:]), cfg.eval.seed)  # (n, C, h, w)
        self.context, self.pooled = batch["context"], batch["pooled"]  # (n, T, Dc), (n, Dp)
        self.null_condition = null_condition
        self.indices = [i for c in mine for i in c]
        texts = gather_rows(self.indices, {"text": self.clip.texts([batch["caption"][i] for i in self.indices])})
        self.texts = None if texts is None else texts["text"]
        path = Path(metrics.reference) if metrics.reference else run_dir / IMAGE_REFERENCE_FILE
        self.reference = self._reference(path, batch["latent"], str(cfg.data.val))

    def _features(self, images: np.ndarray) -> dict[str, np.ndarray]:
        return {"pool": self.inception(images), "clip": self.clip.images(images)}

    def _reference(self, path: Path, latents: torch.Tensor, source: str) -> Reference | None:
        """A collective: the reference statistics on rank 0 (None elsewhere), made from the set's real
        images when `path` does not exist yet (rank 0 decides, so all ranks agree)."""
        exists = [path.is_file()]
        dist.broadcast_object_list(exists, src=0)
        if exists[0]:
            if self.rank != 0:
                return None
            reference = Reference.load(path)
            reference.check(self.inception, self.clip, path)
            return reference
        features = {}
        if self.indices:
            with torch.no_grad():
                real = to_uint8(self.autoencoder.decode(latents[self.indices].to(self.device, torch.float32)).cpu())
            features = self._features(real)
        rows = gather_rows(self.indices, features)
        if rows is None:
            return None
        reference = Reference.from_features(rows["pool"], rows["clip"], self.inception, self.clip,
                                            source=f"{source} (first {self.count} samples)")
        reference.save(path)
        return reference

    @torch.no_grad()
    def run(self, model_fn: Callable[..., torch.Tensor], step: int) -> tuple[dict | None, np.ndarray | None]:
        """A collective: every rank samples its chunks. Returns rank 0's (record, grid (H, W, 3) uint8)."""
        start = time.perf_counter()
        images, grid = [], None
        for indices, keep in self.rounds:
            idx = list(indices)
            context = self.context[idx].to(self.device, self.dtype)
            pooled = self.pooled[idx].to(self.device, self.dtype)
            null_context, null_pooled = self.null_condition(context, pooled)
            z = euler_sample(model_fn, self.noise[idx].to(self.device), self.settings.steps,
                             formulation=self.formulation, shift=self.shift, cfg=self.settings.cfg,
                             cond={"context": context, "pooled": pooled},
                             uncond={"context": null_context, "pooled": null_pooled})
            if keep:
                images.append(to_uint8(self.autoencoder.decode(z.float()).cpu()))  # (b, H, W, 3)
        local = np.concatenate(images) if images else None
        rows = gather_rows(self.indices, self._features(local) if local is not None else {})
        if rows is None:
            return None, None
        scores = score_features(rows["pool"], rows["clip"], self.reference, self.texts)
        record = {"kind": "images", "step": step, "time": time.time(),
                  **{f"eval/{name}": value for name, value in scores.items()},
                  "images": self.count, "seconds": round(time.perf_counter() - start, 2)}
        shown = images[0][:GRID_SIZE]  # rank 0's first chunk is the set's first: the same grid on any world size
        grid = np.asarray(grid_image(shown, rows=2 if len(shown) > 1 else 1))
        return record, grid
