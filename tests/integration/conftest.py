"""Fixtures shared by the integration tests."""
from __future__ import annotations

import pytest

from data_pipeline.encoders.demo import build_demo_encoders


@pytest.fixture(scope="session")
def demo_encoders(tmp_path_factory) -> str:
    """The demo encoders YAML (tiny random CLIP-L/G and T5 saved and reloaded through
    `from_pretrained`, plus the pixel autoencoder), built once per session."""
    root = tmp_path_factory.getbasetemp() / "demo-encoders"
    build_demo_encoders(root)
    return str(root / "demo" / "encoders.yaml")
