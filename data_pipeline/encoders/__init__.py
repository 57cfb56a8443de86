"""Encoders named by an encoders YAML (or the built-in `demo` set): autoencoder + text encoders, and
REPA's vision encoder named by `prepare --repa-encoder`."""
from __future__ import annotations

from pathlib import Path

from data_pipeline.encoders.config import EncodersConfig, EncodersConfigError, load_encoders_config


def resolve_encoders(name_or_path: str, output: Path) -> EncodersConfig:
    """`demo` builds (or reuses) the demo set under OUTPUT/encoders; anything else is a YAML path."""
    if name_or_path == "demo":
        from data_pipeline.encoders.demo import build_demo_encoders

        return build_demo_encoders(output / "encoders")
    return load_encoders_config(name_or_path)


def resolve_repa_encoder(name_or_path: str, output: Path) -> str:
    """`demo` builds (or reuses) the demo vision encoder under OUTPUT/encoders; anything else is the
    directory of a transformers vision model (e.g. DINOv2), made absolute for the manifest."""
    if name_or_path == "demo":
        from data_pipeline.encoders.demo_vision import build_demo_vision_encoder

        return build_demo_vision_encoder(output / "encoders")
    return str(Path(name_or_path).expanduser().resolve())


__all__ = ["EncodersConfig", "EncodersConfigError", "load_encoders_config", "resolve_encoders", "resolve_repa_encoder"]
