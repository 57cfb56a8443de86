"""The MM-DiT velocity model of Stable Diffusion 3.

`MMDiTConfig` is importable without torch (the run-config schema uses it); `MMDiT` is loaded on first
access (PEP 562) so that importing the config does not pay for torch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mmdit_scale.model.config import MMDiTConfig

if TYPE_CHECKING:
    from mmdit_scale.model.mmdit import MMDiT

__all__ = ["MMDiT", "MMDiTConfig"]


def __getattr__(name: str) -> Any:
    if name == "MMDiT":
        from mmdit_scale.model.mmdit import MMDiT

        return MMDiT
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
