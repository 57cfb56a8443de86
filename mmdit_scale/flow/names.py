"""Registry names of the flow package, importable without torch.

The run-config schema builds its `Literal` choices from these tuples, so adding a formulation or a
sampler is one edit in this package. `tests/unit/test_flow_formulations.py` checks that they equal
the registries' keys.
"""
import difflib
import math
from typing import Mapping, TypeVar

T = TypeVar("T")

FORMULATIONS = ("rf", "eps_linear", "v_cos", "eps_cos", "edm")
TIMESTEP_SAMPLERS = ("uniform", "lognorm", "mode", "cosmap")

# The `mode(s)` map t = 1 - u - s (cos^2(pi u / 2) - 1 + u) is monotonic on [0, 1] only for s in
# [MODE_S_MIN, MODE_S_MAX] (the SD3 paper's bound); the sampler and the config validator share it.
MODE_S_MIN = -1.0
MODE_S_MAX = 2.0 / (math.pi - 2.0)


def lookup(registry: Mapping[str, T], name: str, kind: str) -> T:
    """registry[name], or a ValueError naming the closest registered name and all choices."""
    if name not in registry:
        near = difflib.get_close_matches(name, registry, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise ValueError(f"unknown {kind} {name!r}{hint}; choose one of {sorted(registry)}")
    return registry[name]
