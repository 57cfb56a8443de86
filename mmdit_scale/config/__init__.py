"""Typed run configuration: the schema, and the one loader that turns recipes into it.

    cfg = load_config("recipes/tiny.yaml", ["optim.lr=3e-4"])   # -> RunConfig
    to_yaml(cfg)                                               # loads back equal

Nothing outside this package sees OmegaConf, and importing it does not import torch.
"""
from mmdit_scale.config.errors import ConfigError
from mmdit_scale.config.load import load_config, to_dict, to_yaml
from mmdit_scale.config.schema import (
    CheckpointConfig,
    DataConfig,
    DataSource,
    EvalConfig,
    FlowConfig,
    LoggingConfig,
    OptimConfig,
    ParallelConfig,
    RunConfig,
    TrainConfig,
)
from mmdit_scale.model.config import MMDiTConfig

__all__ = [
    "CheckpointConfig",
    "ConfigError",
    "DataConfig",
    "DataSource",
    "EvalConfig",
    "FlowConfig",
    "LoggingConfig",
    "MMDiTConfig",
    "OptimConfig",
    "ParallelConfig",
    "RunConfig",
    "TrainConfig",
    "load_config",
    "to_dict",
    "to_yaml",
]
