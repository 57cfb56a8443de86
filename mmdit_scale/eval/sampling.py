"""Images from a checkpoint: the run's own encoders and autoencoder, Euler + CFG, a PNG grid.

The run's encoders are found through the provenance of its training shards (`data.train`'s
manifest): the directories the text encoders and the autoencoder were loaded from when the shards
were written. Their tokenizer and weight hashes are checked against the manifest, so prompts are
never encoded by a model other than the one the training text came from. The null condition for
classifier-free guidance is what training's text-encoder dropout shows the model when every
encoder is dropped: all-zero text, or the encoded empty string with data.null_text=empty.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from data_pipeline.encoders.config import AutoencoderSpec, EncodersConfig, TextEncoderSpec
from data_pipeline.encoders.encoder_set import EncoderSet
from data_pipeline.encoders.files import tokenizer_sha256, weights_sha256
from data_pipeline.format import assemble_text, text_key
from data_pipeline.layout import CLIP_ENCODERS
from data_pipeline.locate import first_manifest
from data_pipeline.manifest import AUTOENCODER, EncoderInfo, Provenance
from mmdit_scale.flow import euler_sample, get_formulation, shift_for_size
from mmdit_scale.run import checkpoints

SD3_TOKENIZER_DIRS = {"text_encoder": "tokenizer", "text_encoder_2": "tokenizer_2", "text_encoder_3": "tokenizer_3"}
"""A diffusers SD3 pipeline keeps each tokenizer beside (not inside) its text encoder."""


@dataclass(frozen=True)
class SampleSettings:
    steps: int = 28
    """Euler steps from t = 1 to t = 0."""
    cfg: float = 3.0
    """Classifier-free guidance scale; 1 turns guidance off."""
    shift: float | None = None
    """Timestep shift of the sampling grid; None: the training rule for the image's size (the run's
    flow.shift at data.resolution^2, times sqrt(pixels / data.resolution^2)): SD3 samples as it trains."""
    seed: int = 0
    """Seed of the initial noise: same seed, prompts and checkpoint, same images."""
    ema: bool = False
    """Use the checkpoint's EMA weights instead of the raw ones."""
    per_prompt: int = 1
    """Images per prompt (the grid's columns)."""
    height: int | None = None
    """Image height in pixels; None: the training data's resolution."""
    width: int | None = None
    """Image width in pixels; None: the training data's resolution."""

    def __post_init__(self) -> None:
        if self.steps < 1 or self.per_prompt < 1:
            raise ValueError(f"steps and images per prompt must be >= 1, got {self.steps} and {self.per_prompt}")


class SamplingError(Exception):
    """The checkpoint's data or encoders cannot be found, or differ from what the run trained on."""


def _tokenizer_dir(name: str, info: EncoderInfo) -> str:
    model_dir = Path(info.model_dir)
    for candidate in (model_dir, model_dir.parent / SD3_TOKENIZER_DIRS.get(model_dir.name, model_dir.name)):
        if candidate.is_dir() and tokenizer_sha256(str(candidate)) == info.tokenizer_sha256:
            return str(candidate)
    raise SamplingError(f"{name}: no tokenizer matching the training data's (sha256 {info.tokenizer_sha256}) "
                        f"in {model_dir} or beside it")


def encoders_from_provenance(prov: Provenance) -> EncodersConfig:
    """The encoders that wrote a dataset, rebuilt from its provenance and checked by hash."""
    text: dict[str, TextEncoderSpec] = {}
    for name in prov.text_encoders():
        info = prov.encoders[name]
        if not info.model_dir or not Path(info.model_dir).is_dir():
            raise SamplingError(f"{name}: the training data was encoded with {info.model_dir}, which is not here")
        if weights_sha256(info.model_dir) != info.weights_sha256:
            raise SamplingError(f"{name}: the weights in {info.model_dir} differ from those that encoded the data")
        text[name] = TextEncoderSpec(path=info.model_dir, tokenizer=_tokenizer_dir(name, info))
    ae = prov.encoders[AUTOENCODER]
    if ae.kind == "pixel":
        autoencoder = AutoencoderSpec(kind="pixel", factor=int(ae.dims["factor"]))
    else:
        if not ae.model_dir or weights_sha256(ae.model_dir) != ae.weights_sha256:
            raise SamplingError(f"autoencoder: {ae.model_dir} is missing or differs from the one that encoded the data")
        autoencoder = AutoencoderSpec(kind=ae.kind, path=ae.model_dir)
    tokens = {int(prov.encoders[n].tokens) for n in text}
    return EncodersConfig(autoencoder=autoencoder, tokens=tokens.pop(), dtype="auto", **text)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8, the inverse of prepare's pixel scaling."""
    return ((images.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def grid_image(images: np.ndarray, rows: int, min_cell: int = 96):
    """A PIL grid of (rows * cols, H, W, 3) images, row-major, each upscaled (nearest) by the smallest
    integer factor that makes it at least `min_cell` pixels wide, with a 2-pixel white gutter."""
    from PIL import Image

    n, height, width, _ = images.shape
    cols = -(-n // rows)
    factor = max(1, -(-min_cell // width))
    h, w, gap = height * factor, width * factor, 2
    grid = Image.new("RGB", (cols * w + (cols + 1) * gap, rows * h + (rows + 1) * gap), (255, 255, 255))
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        tile = Image.fromarray(img).resize((w, h), Image.NEAREST)
        grid.paste(tile, (gap + c * (w + gap), gap + r * (h + gap)))
    return grid


class RunSampler:
    """A checkpoint's model with the run's text encoders and autoencoder, ready to sample."""

    def __init__(self, path: str | os.PathLike, ema: bool = False, device: str = "cpu"):
        self.checkpoint = checkpoints.resolve(path)
        self.config = checkpoints.load_run_config(self.checkpoint)
        try:
            _, manifest = first_manifest(self.config.data.train)
        except ValueError as err:
            raise SamplingError(f"the run's training data (data.train={self.config.data.train!r}): {err}; sampling "
                                "needs its manifest's provenance to find the run's encoders") from None
        self.provenance = manifest.provenance
        self.device = torch.device(device)
        self.model = checkpoints.build_model(self.checkpoint, ema=ema, device=device)
        self.encoders = EncoderSet.load(encoders_from_provenance(self.provenance), self.device)
        self.layout = self.provenance.text_layout(context_dim=self.config.model.context_dim)
        self.formulation = get_formulation(self.config.flow.formulation)

    def null_condition(self, n: int, context: torch.Tensor, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The null condition of guidance for n images: what text-encoder dropout trained the model
        to read as no prompt (data.null_text): zeros, or the encoded empty string."""
        if self.config.data.null_text == "empty":
            return self.encode_prompts([""] * n)
        return torch.zeros_like(context), torch.zeros_like(pooled)

    def truncations(self, prompts: list[str]) -> dict[str, dict[str, str]]:
        """{prompt: {encoder: text it encodes}} for the prompts longer than an encoder's token limit;
        warns once (on stderr) when there are any."""
        cut = {p: t for p in dict.fromkeys(prompts) if (t := self.encoders.truncations(p))}
        if cut:
            limit = min(enc.tokens for enc in self.encoders.text.values())
            print(f"warning: {len(cut)} prompt(s) exceed the text encoders' {limit}-token limit and are cut short; "
                  "the grid's JSON records the text each encoder actually encoded", file=sys.stderr)
        return cut

    def encode_prompts(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(context (B, T, D), pooled (B, P)) exactly as the loader assembles stored text."""
        encoded = self.encoders.encode_captions(prompts)
        tensors = {}
        for enc, out in encoded.items():
            tensors[text_key("orig", enc)] = out["hidden"]
            if enc in CLIP_ENCODERS:
                tensors[text_key("orig", enc, pooled=True)] = out["pooled"]
        # Stored text is rounded to the shards' dtype; round the prompts the same way.
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[self.provenance.tensor_dtype]
        tensors = {k: v.to(dtype).float() for k, v in tensors.items()}
        return assemble_text(tensors, "orig", self.layout)

    def latent_shape(self, settings: SampleSettings) -> tuple[int, int, int]:
        """(C, h, w) of the latent of one image of `settings`' resolved size."""
        lat = self.provenance.latent
        return lat.channels, settings.height // lat.factor, settings.width // lat.factor

    def resolved(self, settings: SampleSettings) -> SampleSettings:
        """`settings` with the size (default: the data's resolution) and the shift (default: the
        training rule for that size) that sampling uses filled in: what the grid's JSON records.
        SamplingError for a size the model cannot draw."""
        side = self.provenance.resolution
        height, width = settings.height or side, settings.width or side
        unit = self.provenance.latent.factor * self.config.model.patch_size
        if height % unit or width % unit:
            raise SamplingError(f"{height}x{width} px: sides must be multiples of {unit} px (autoencoder factor "
                                f"{self.provenance.latent.factor} x patch size {self.config.model.patch_size})")
        table = self.config.model.pos_embed_max_size
        if max(height, width) // unit > table:
            raise SamplingError(f"{height}x{width} px is a {height // unit}x{width // unit} token grid, beyond the "
                                f"model's position table ({table} per side): at most {table * unit} px per side")
        shift = settings.shift if settings.shift is not None else shift_for_size(
            self.config.flow.shift, (height, width), self.config.data.resolution)
        return replace(settings, height=height, width=width, shift=shift)

    @torch.no_grad()
    def sample(self, prompts: list[str], settings: SampleSettings) -> np.ndarray:
        """(len(prompts) * per_prompt, H, W, 3) uint8 images, prompt-major."""
        check_prompts(prompts)
        settings = self.resolved(settings)
        expanded = [p for p in prompts for _ in range(settings.per_prompt)]
        context, pooled = self.encode_prompts(expanded)
        generator = torch.Generator().manual_seed(settings.seed)
        noise = torch.randn((len(expanded),) + self.latent_shape(settings), generator=generator)
        null_context, null_pooled = self.null_condition(len(expanded), context, pooled)
        z = euler_sample(self.model, noise.to(self.device), settings.steps, formulation=self.formulation,
                         shift=settings.shift, cfg=settings.cfg,
                         cond={"context": context.to(self.device), "pooled": pooled.to(self.device)},
                         uncond={"context": null_context.to(self.device), "pooled": null_pooled.to(self.device)})
        return to_uint8(self.encoders.autoencoder.decode(z).cpu())


def check_prompts(prompts: list[str]) -> None:
    """SamplingError naming a prompt that is not text (bytes that are not UTF-8 reach argv as
    surrogates, which no tokenizer can take)."""
    for i, prompt in enumerate(prompts, 1):
        try:
            prompt.encode("utf-8")
        except UnicodeEncodeError:
            shown = prompt.encode("utf-8", "backslashreplace").decode()
            raise SamplingError(f'prompt {i} ("{shown}") is not valid UTF-8 text') from None


def write_grid(images: np.ndarray, prompts: list[str], settings: SampleSettings, out: Path,
               checkpoint: Path, encoded: dict[str, dict[str, str]] | None = None) -> Path:
    """The grid PNG (a row per prompt) and, beside it, a JSON with the prompts and settings, and
    for each prompt an encoder's token limit cut short, the text that encoder actually encoded."""
    out.parent.mkdir(parents=True, exist_ok=True)
    grid_image(images, rows=len(prompts)).save(out)
    record = {"checkpoint": str(checkpoint), "prompts": prompts, **asdict(settings),
              "encoded": encoded or {}}
    out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    return out
