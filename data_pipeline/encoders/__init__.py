"""Encoders named by an encoders YAML (or the built-in `demo` set): autoencoder + text encoders."""
from __future__ import annotations

from pathlib import Path

from data_pipeline.encoders.config import EncodersConfig, EncodersConfigError, load_encoders_config


def resolve_encoders(name_or_path: str, output: Path) -> EncodersConfig:
    """`demo` builds (or reuses) the demo set under OUTPUT/encoders; anything else is a YAML path."""
    if name_or_path == "demo":
        from data_pipeline.encoders.demo import build_demo_encoders

        return build_demo_encoders(output / "encoders")
    return load_encoders_config(name_or_path)


__all__ = ["EncodersConfig", "EncodersConfigError", "load_encoders_config", "resolve_encoders"]
