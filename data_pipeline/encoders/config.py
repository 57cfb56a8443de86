"""The encoders YAML: which autoencoder and text encoders `prepare` loads, from which directories.

Schema (relative paths are resolved against the YAML file's directory):

    autoencoder:
      kind: sd3_vae            # sd3_vae (diffusers AutoencoderKL) | pixel (weightless, lossless)
      path: /models/sd3/vae    # sd3_vae only
      factor: 2                # pixel only: space-to-depth factor
    clip_l:                    # omit or null: encoder absent (recorded in the manifest)
      path: /models/sd3/text_encoder
      tokenizer: /models/sd3/tokenizer     # default: same as path
    clip_g:
      path: /models/sd3/text_encoder_2
      tokenizer: /models/sd3/tokenizer_2
    t5:
      path: /models/sd3/text_encoder_3
      tokenizer: /models/sd3/tokenizer_3
    tokens: 77                 # text sequence length for every text encoder
    dtype: auto                # compute dtype: auto (fp32 on CPU, bf16 on GPU) | fp32 | bf16 | fp16
    batch_size: 16             # images / captions per encoder call

The REPA vision encoder is not a key of this YAML: `prepare --repa-encoder PATH` names it (one way).
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Optional, Union

from data_pipeline.layout import TEXT_ENCODERS, TEXT_TOKENS

AUTOENCODER_KINDS = ("sd3_vae", "pixel")
COMPUTE_DTYPES = ("auto", "fp32", "bf16", "fp16")


class EncodersConfigError(ValueError):
    """The encoders YAML is malformed; the message names the key and the nearest valid one."""


@dataclass(frozen=True)
class AutoencoderSpec:
    kind: str = "pixel"
    path: Optional[str] = None
    factor: int = 2


@dataclass(frozen=True)
class TextEncoderSpec:
    path: str
    tokenizer: Optional[str] = None

    @property
    def tokenizer_dir(self) -> str:
        return self.tokenizer or self.path


@dataclass(frozen=True)
class VisionEncoderSpec:
    """A frozen vision transformer (e.g. DINOv2) whose patch features REPA aligns the model to."""

    path: str


@dataclass(frozen=True)
class EncodersConfig:
    autoencoder: AutoencoderSpec
    clip_l: Optional[TextEncoderSpec] = None
    clip_g: Optional[TextEncoderSpec] = None
    t5: Optional[TextEncoderSpec] = None
    tokens: int = TEXT_TOKENS
    dtype: str = "auto"
    batch_size: int = 16
    repa: Optional[VisionEncoderSpec] = None
    """Set by `prepare --repa-encoder`, never by the YAML."""

    def text_specs(self) -> dict[str, TextEncoderSpec]:
        """Present text encoders, in TEXT_ENCODERS order."""
        return {name: getattr(self, name) for name in TEXT_ENCODERS if getattr(self, name) is not None}


def _check_keys(section: str, data: dict, allowed: tuple[str, ...]) -> None:
    for key in data:
        if key not in allowed:
            near = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else f"; valid keys: {', '.join(allowed)}"
            raise EncodersConfigError(f"unknown key {section}{key!r} in encoders YAML{hint}")


def _resolve(path: Any, base: Path, where: str) -> str:
    if not isinstance(path, str) or not path:
        raise EncodersConfigError(f"{where} must be a directory path, got {path!r}")
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def parse_encoders_config(data: dict, base: Union[str, Path] = ".") -> EncodersConfig:
    """Validate a parsed YAML mapping; paths relative to `base`."""
    base = Path(base)
    if not isinstance(data, dict):
        raise EncodersConfigError(f"encoders YAML must be a mapping, got {type(data).__name__}")
    _check_keys("", data, tuple(f.name for f in fields(EncodersConfig) if f.name != "repa"))
    ae = data.get("autoencoder")
    if not isinstance(ae, dict):
        raise EncodersConfigError("encoders YAML needs an `autoencoder:` mapping with a `kind`")
    _check_keys("autoencoder.", ae, tuple(f.name for f in fields(AutoencoderSpec)))
    kind = ae.get("kind")
    if kind not in AUTOENCODER_KINDS:
        raise EncodersConfigError(f"autoencoder.kind {kind!r} not in {AUTOENCODER_KINDS}")
    if kind == "sd3_vae":
        ae_spec = AutoencoderSpec(kind=kind, path=_resolve(ae.get("path"), base, "autoencoder.path"))
    else:
        factor = ae.get("factor", 2)
        if not isinstance(factor, int) or factor < 1:
            raise EncodersConfigError(f"autoencoder.factor must be a positive int, got {factor!r}")
        ae_spec = AutoencoderSpec(kind=kind, factor=factor)
    text: dict[str, Optional[TextEncoderSpec]] = {}
    for name in TEXT_ENCODERS:
        spec = data.get(name)
        if spec is None:
            text[name] = None
            continue
        if not isinstance(spec, dict):
            raise EncodersConfigError(f"{name} must be a mapping with `path` (or null), got {spec!r}")
        _check_keys(f"{name}.", spec, ("path", "tokenizer"))
        tok = spec.get("tokenizer")
        text[name] = TextEncoderSpec(path=_resolve(spec.get("path"), base, f"{name}.path"),
                                     tokenizer=_resolve(tok, base, f"{name}.tokenizer") if tok else None)
    if not any(text.values()):
        raise EncodersConfigError("encoders YAML names no text encoder (clip_l, clip_g, t5)")
    tokens, dtype, batch = data.get("tokens", TEXT_TOKENS), data.get("dtype", "auto"), data.get("batch_size", 16)
    if not isinstance(tokens, int) or tokens < 1:
        raise EncodersConfigError(f"tokens must be a positive int, got {tokens!r}")
    if dtype not in COMPUTE_DTYPES:
        raise EncodersConfigError(f"dtype {dtype!r} not in {COMPUTE_DTYPES}")
    if not isinstance(batch, int) or batch < 1:
        raise EncodersConfigError(f"batch_size must be a positive int, got {batch!r}")
    return EncodersConfig(autoencoder=ae_spec, tokens=tokens, dtype=dtype, batch_size=batch, **text)


def load_encoders_config(path: Union[str, Path]) -> EncodersConfig:
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise EncodersConfigError(f"cannot read encoders YAML {path}: {err}") from err
    return parse_encoders_config(data, base=path.parent)

