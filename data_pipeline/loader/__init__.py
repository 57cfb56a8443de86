"""The resumable loader over prepared shards (see `loader.ShardLoader`)."""
from data_pipeline.loader.config import LoaderConfig
from data_pipeline.loader.loader import ModelDims, ShardLoader
from data_pipeline.loader.spec import DatasetSpec, parse_datasets

__all__ = ["DatasetSpec", "LoaderConfig", "ModelDims", "ShardLoader", "parse_datasets"]
