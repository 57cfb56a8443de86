"""The formulation registry: `get_formulation("rf")`, keyed by the names in `mmdit_scale.flow.names`."""
from __future__ import annotations

import difflib
from typing import Any

from mmdit_scale.flow.cosine import EpsCosine, VCosine
from mmdit_scale.flow.edm import EDM
from mmdit_scale.flow.eps_linear import EpsLinear
from mmdit_scale.flow.formulation import Formulation
from mmdit_scale.flow.rf import RectifiedFlow

FORMULATION_REGISTRY: dict[str, type[Formulation]] = {
    cls.name: cls for cls in (RectifiedFlow, EpsLinear, VCosine, EpsCosine, EDM)
}


def get_formulation(name: str, **options: Any) -> Formulation:
    """Build a formulation by name; options are its dataclass fields (e.g. `edm`: p_mean, p_std)."""
    if name not in FORMULATION_REGISTRY:
        near = difflib.get_close_matches(name, FORMULATION_REGISTRY, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise ValueError(f"unknown formulation {name!r}{hint}; choose one of {sorted(FORMULATION_REGISTRY)}")
    return FORMULATION_REGISTRY[name](**options)
