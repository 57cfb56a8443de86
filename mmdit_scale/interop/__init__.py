"""Adapters between our MMDiT and other implementations' weights (diffusers' SD3 transformer)."""
from mmdit_scale.interop.diffusers_sd3 import from_diffusers, read_sd3_transformer, to_diffusers

__all__ = ["from_diffusers", "read_sd3_transformer", "to_diffusers"]
