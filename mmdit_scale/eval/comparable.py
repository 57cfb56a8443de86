"""Which runs one scaling fit may compare, and why each of the others is left out.

A validation loss is a number about a model *and* what it is measured on: another validation set,
another resolution (other tokens per image) or another flow formulation (another loss) gives
another scale, and a fine-tune (`train.init_from`) spent compute that its FLOPs do not count. So
the fit takes only runs trained from scratch whose `Setting` is equal; among those it takes the
largest group (on a tie, the group of the earliest run given), and names every other run with
the reason it was left out.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Sequence

from mmdit_scale.config import DataSource, RunConfig

if TYPE_CHECKING:
    from mmdit_scale.eval.scaling import Run


def data_text(value: str | tuple[DataSource, ...]) -> str:
    """A data.train / data.val value as config.yaml spells it: a path, or a mixture's paths and weights."""
    if isinstance(value, str):
        return value
    return ", ".join(f"{source.path} (weight {source.weight:g})" for source in value)


@dataclass(frozen=True)
class Setting:
    """What a run's validation loss is measured on, besides the model and the compute."""

    val: str
    """data.val as written in the run's config.yaml."""
    resolution: Optional[int]
    """data.resolution (from the training manifest where the config leaves it unset)."""
    formulation: str
    """flow.formulation."""

    @classmethod
    def of(cls, cfg: RunConfig) -> "Setting":
        return cls(val=data_text(cfg.data.val), resolution=cfg.data.resolution, formulation=cfg.flow.formulation)

    def as_json(self) -> dict:
        return {key: getattr(self, name) for key, name in SETTING_KEYS}

    def differences(self, fitted: "Setting") -> list[str]:
        """One phrase per config key whose value differs from the fitted runs'."""
        return [f"{key}={getattr(self, name)!r}, the fitted runs' is {getattr(fitted, name)!r}"
                for key, name in SETTING_KEYS if getattr(self, name) != getattr(fitted, name)]


SETTING_KEYS = (("data.val", "val"), ("data.resolution", "resolution"), ("flow.formulation", "formulation"))
"""(config key, Setting field) of everything that must be equal for losses to compare."""


@dataclass(frozen=True)
class Exclusion:
    """A run the fit leaves out."""

    run: str
    path: str
    reason: str


@dataclass(frozen=True)
class Selection:
    runs: list["Run"]
    """The fitted runs, in the order given."""
    setting: Optional[Setting]
    """Their shared setting; None when no run is left."""
    excluded: list[Exclusion]
    """Every other run, in the order given."""


class NoComparableRuns(ValueError):
    """Every run was left out; the message names each with its reason."""


def select_comparable(runs: Sequence["Run"], min_steps: int = 1) -> Selection:
    """The largest group of comparable runs that validated at step `min_steps` or later."""
    own = [_own_reason(run, min_steps) for run in runs]
    # most_common lists equal counts in the order first met: a tie goes to the group of the earliest run.
    groups = Counter(run.setting for run, reason in zip(runs, own) if reason is None)
    setting = groups.most_common(1)[0][0] if groups else None
    reasons = [reason if reason is not None or run.setting == setting else "; ".join(run.setting.differences(setting))
               for run, reason in zip(runs, own)]
    return Selection(runs=[run for run, reason in zip(runs, reasons) if reason is None], setting=setting,
                     excluded=[Exclusion(run.name, str(run.path), reason)
                               for run, reason in zip(runs, reasons) if reason is not None])


def _own_reason(run: "Run", min_steps: int) -> Optional[str]:
    """Why `run` is left out whatever the other runs are, or None."""
    if run.init_from:
        return f"a fine-tune (train.init_from={run.init_from})"
    if not run.points:
        return "no validation loss (no metrics.jsonl line with val_loss)"
    last = run.points[-1].step
    if last < min_steps:
        return f"fewer than --min-steps {min_steps} steps (last validation at step {last})"
    return None


def nothing_left(excluded: Sequence[Exclusion]) -> NoComparableRuns:
    return NoComparableRuns("no run left to fit: " + "; ".join(f"{e.path}: {e.reason}" for e in excluded))
