"""Planning a run before it starts: parameters, training FLOPs, memory per GPU by ZeRO stage, time, data.

    plan = make_plan(load_config("recipes/ladder/d24.yaml"), Hardware(gpus=64))
    plan.params.total, plan.flops.training, plan.fits_by_stage

Importing this package does not import torch; counting parameters (on the meta device) does.
`mmdit-scale plan` is the command-line face of it (docs/recipes.md).
"""
from mmdit_scale.plan.flops import Flops, headline_flops, training_flops
from mmdit_scale.plan.memory import Memory, activation_bytes, memory_per_gpu, model_states
from mmdit_scale.plan.params import ParamCount, count_parameters
from mmdit_scale.plan.report import Hardware, Plan, make_plan, to_json
from mmdit_scale.plan.tokens import TokenLayout, Tokens, largest_tokens, sample_tokens, square_tokens, token_layout

__all__ = [
    "Flops",
    "Hardware",
    "Memory",
    "ParamCount",
    "Plan",
    "TokenLayout",
    "Tokens",
    "activation_bytes",
    "count_parameters",
    "headline_flops",
    "largest_tokens",
    "make_plan",
    "memory_per_gpu",
    "model_states",
    "sample_tokens",
    "square_tokens",
    "to_json",
    "token_layout",
    "training_flops",
]
