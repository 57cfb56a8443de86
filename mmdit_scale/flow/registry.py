"""The formulation registry: `get_formulation("rf")`, keyed by the names in `mmdit_scale.flow.names`."""
from __future__ import annotations

from typing import Any

from mmdit_scale.flow.cosine import EpsCosine, VCosine
from mmdit_scale.flow.edm import EDM
from mmdit_scale.flow.eps_linear import EpsLinear
from mmdit_scale.flow.formulation import Formulation
from mmdit_scale.flow.names import lookup
from mmdit_scale.flow.rf import RectifiedFlow

FORMULATION_REGISTRY: dict[str, type[Formulation]] = {
    cls.name: cls for cls in (RectifiedFlow, EpsLinear, VCosine, EpsCosine, EDM)
}


def get_formulation(name: str, **options: Any) -> Formulation:
    """Build a formulation by name; options are its dataclass fields (e.g. `edm`: p_mean, p_std)."""
    return lookup(FORMULATION_REGISTRY, name, "formulation")(**options)
