"""Sample grids during training, every `logging.sample_every` steps.

No text encoder runs in training: the grid is conditioned on the first held-out batch of
`data.val` (its stored text embeddings; its captions label the grid), the null condition of
classifier-free guidance is all-zero text (what text-encoder dropout shows the model), and the
noise is fixed per sample key, so one run's grids show the same scenes step after step. Euler
steps, CFG and shift are `mmdit-scale sample`'s defaults (`eval.sampling.SampleSettings`).
Every rank samples (ZeRO-3's forward is a collective); rank 0 decodes with the run's autoencoder
(from the shards' provenance) and writes RUN_DIR/samples/step_XXXXXXX.png and .txt.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist

from data_pipeline.encoders.autoencoder import load_autoencoder
from data_pipeline.encoders.config import AutoencoderSpec
from data_pipeline.format import assemble_text
from data_pipeline.loader import ShardLoader
from data_pipeline.manifest import AUTOENCODER, Provenance
from mmdit_scale.eval.sampling import SampleSettings, grid_image, to_uint8
from mmdit_scale.flow import euler_sample
from mmdit_scale.flow.formulation import Formulation
from mmdit_scale.run.layout import SAMPLES_DIR, checkpoint_name
from mmdit_scale.train.heldout import sample_noise

NullCondition = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

GRID_SIZE = 8
"""Images per grid (two rows), or fewer when a rank's part of data.val is smaller."""


def first_samples(loader: ShardLoader, n: int) -> dict:
    """Up to n held-out samples of the first batch's latent shape (a grid is one bucket), in the loader's order."""
    parts: list[dict] = []
    for batch in loader:
        if parts and batch["latent"].shape[1:] != parts[0]["latent"].shape[1:]:
            continue
        parts.append(batch)
        if sum(len(b["keys"]) for b in parts) >= n:
            break
    merged = {k: torch.cat([b[k] for b in parts])[:n] for k in ("latent", "context", "pooled")}
    merged.update({k: sum((b[k] for b in parts), [])[:n] for k in ("keys", "caption")})
    return merged


def null_condition(null_text: str | None, loader: ShardLoader) -> NullCondition:
    """The null condition of guidance for a batch's (context (B, T, D), pooled (B, P)): all-zero text,
    or with `null_text` (the NULL_TEXT_FILE, data.null_text=empty) the encoded empty string,
    assembled as the loader assembles text."""
    if null_text is None:
        return lambda context, pooled: (torch.zeros_like(context), torch.zeros_like(pooled))
    from safetensors.torch import load_file

    ctx, pool = assemble_text(load_file(null_text), "orig", loader.layout)  # (T, D), (P,)
    return lambda context, pooled: (ctx.expand(len(context), *ctx.shape).to(context),
                                    pool.expand(len(pooled), *pool.shape).to(pooled))


def run_autoencoder(provenance: Provenance, device: torch.device):
    """The autoencoder that encoded the run's shards (from their provenance), in fp32, to decode samples."""
    info = provenance.encoders[AUTOENCODER]
    spec = (AutoencoderSpec(kind="pixel", factor=int(info.dims["factor"])) if info.kind == "pixel"
            else AutoencoderSpec(kind=info.kind, path=info.model_dir))
    return load_autoencoder(spec, device, torch.float32)


class GridSampler:
    def __init__(self, loader: ShardLoader, provenance: Provenance, formulation: Formulation,
                 shift_for: Callable[[int, int], float], seed: int, dtype: torch.dtype, device: torch.device,
                 run_dir: Path, null_text: str | None = None):
        """`shift_for(h, w)`: the timestep shift of a latent of h x w (the training rule);
        `null_text`: the NULL_TEXT_FILE that is "no prompt" (data.null_text=empty), else zeros."""
        batch = first_samples(loader, GRID_SIZE)
        self.context = batch["context"].to(device, dtype)  # (n, T, Dc)
        self.pooled = batch["pooled"].to(device, dtype)  # (n, Dp)
        self.captions = batch["caption"]
        self.noise = sample_noise(batch["keys"], tuple(batch["latent"].shape[1:]), seed).to(device)  # (n, C, h, w)
        self.shift = shift_for(*batch["latent"].shape[2:])
        self.formulation, self.device = formulation, device
        self.settings = SampleSettings()
        self.out_dir = run_dir / SAMPLES_DIR
        self.provenance = provenance
        self.autoencoder = None
        self.null_context, self.null_pooled = null_condition(null_text, loader)(self.context, self.pooled)

    def _decoder(self):
        if self.autoencoder is None:
            self.autoencoder = run_autoencoder(self.provenance, self.device)
        return self.autoencoder

    @torch.no_grad()
    def run(self, model_fn: Callable[..., torch.Tensor], step: int) -> np.ndarray | None:
        """A collective: every rank samples. Returns rank 0's grid as (H, W, 3) uint8 (None elsewhere)."""
        z = euler_sample(model_fn, self.noise, self.settings.steps, formulation=self.formulation, shift=self.shift,
                         cfg=self.settings.cfg, cond={"context": self.context, "pooled": self.pooled},
                         uncond={"context": self.null_context, "pooled": self.null_pooled})
        if dist.get_rank() != 0:
            return None
        images = to_uint8(self._decoder().decode(z).cpu())  # (n, H, W, 3)
        grid = grid_image(images, rows=2 if len(images) > 1 else 1)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / checkpoint_name(step)
        grid.save(path.with_suffix(".png"))
        path.with_suffix(".txt").write_text("\n".join(self.captions) + "\n")
        return np.asarray(grid)
