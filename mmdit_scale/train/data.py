"""The trainer's view of the data: training and validation loaders built from the run config.

The loader (`data_pipeline.loader.ShardLoader`) does the work: rank/world split, shuffling,
text-encoder dropout, caption mix, bucketed batches, exact `state_dict` resume. It refuses
shards whose provenance or shapes do not fit the model.
"""
from __future__ import annotations

from data_pipeline.loader import LoaderConfig, ShardLoader
from data_pipeline.locate import null_text_location
from mmdit_scale.config.schema import RunConfig
from mmdit_scale.config.validate import require_train_data


def null_text_path(cfg: RunConfig) -> str | None:
    """The encoded empty string that fills dropped text when data.null_text=empty, else None."""
    return null_text_location(cfg.data.train) if cfg.data.null_text == "empty" else None


def _loader_config(cfg: RunConfig, validation: bool) -> LoaderConfig:
    return LoaderConfig(batch_size=cfg.train.micro_batch, seed=cfg.train.seed, null_text=null_text_path(cfg),
                        text_dropout=cfg.data.text_dropout, synthetic_caption_prob=cfg.data.caption_mix,
                        num_workers=0 if validation else cfg.data.num_workers, verify=cfg.data.verify,
                        repa_features=cfg.train.repa.enabled and not validation)


def train_loader(cfg: RunConfig, rank: int, world_size: int) -> ShardLoader:
    require_train_data(cfg)
    return ShardLoader(cfg.data.train, _loader_config(cfg, False), rank=rank, world_size=world_size, model=cfg.model)


def val_loader(cfg: RunConfig, rank: int, world_size: int, reference) -> ShardLoader | None:
    """Held-out shards (`data.val`), checked against the training data's provenance; None when unset."""
    if not cfg.data.val:
        if cfg.logging.sample_every:
            raise ValueError("logging.sample_every needs held-out shards in data.val to take the grid's text from")
        if cfg.eval.image_every:
            raise ValueError("eval.image_every needs held-out shards in data.val: their text conditions the "
                             "generated images and their images make the reference statistics")
        return None
    return ShardLoader(cfg.data.val, _loader_config(cfg, True), rank=rank, world_size=world_size,
                       validation=True, model=cfg.model, reference=reference)
