"""`ShardLoader`: the resumable training (and validation) loader over prepared shards.

    loader = ShardLoader(cfg.data.train, LoaderConfig(batch_size=32, num_workers=4),
                         rank=rank, world_size=world, model=model_cfg)
    for batch in loader:               # infinite in training
        ...                            # batch["latent"] (B, C, h, w), ["context"] (B, 154, 4096), ...
    state = loader.state_dict()        # save EVERY rank's state in the checkpoint
    loader.load_state_dict(states)     # all ranks' states (or this rank's): exact on the same layout

The loader never touches torch.distributed: the trainer passes rank and world size, and gathers
the states. It refuses datasets of different provenance and data that does not fit the model.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Iterator, Optional, Union

from data_pipeline.format import TENSOR_DTYPES
from data_pipeline.loader.collate import load_null_text
from data_pipeline.loader.config import LoaderConfig
from data_pipeline.loader.interleave import run_inline, run_processes, run_threads
from data_pipeline.loader.pool import shared_memory_reuse_available
from data_pipeline.loader.sample_reader import ST_NAMES, Counters, probe_shard
from data_pipeline.loader.shared import SharedRing
from data_pipeline.loader.spec import DatasetSpec, parse_datasets
from data_pipeline.loader.state import (EXACT_KEYS, STATE_VERSION, fingerprint, plan_from_list, plan_reshard,
                                        plan_to_list)
from data_pipeline.loader.stream import Source, Stream, StreamSpec, StreamState
from data_pipeline.locate import check_same_provenance
from data_pipeline.manifest import Manifest, check_against_model


@dataclass(frozen=True)
class ModelDims:
    """The model inputs the shards must fit (the fields of the model config with these names)."""

    in_channels: int
    context_dim: int
    pooled_dim: int
    patch_size: int = 2

    @classmethod
    def of(cls, model: Any) -> "ModelDims":
        if isinstance(model, cls):
            return model
        return cls(**{k: int(getattr(model, k)) for k in ("in_channels", "context_dim", "pooled_dim", "patch_size")})


class ShardLoader:
    """Batches of one latent shape from the shards of `data` (see `spec.parse_datasets`)."""

    def __init__(self, data: Union[Any, list[DatasetSpec]], cfg: LoaderConfig, *, rank: int = 0,
                 world_size: int = 1, validation: bool = False, model: Any = None,
                 reference: Optional[Manifest] = None):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.cfg, self.rank, self.world_size, self.validation = cfg, rank, world_size, validation
        self.datasets = data if isinstance(data, list) and data and isinstance(data[0], DatasetSpec) \
            else parse_datasets(data)
        check_same_provenance([(d.name, d.manifest) for d in self.datasets],
                              None if reference is None else ("the training data", reference))
        self.manifest = self.datasets[0].manifest
        prov = self.manifest.provenance
        self.model = ModelDims.of(model) if model is not None else None
        if self.model is not None:
            problems = check_against_model(prov, **asdict(self.model))
            if problems:
                raise ValueError(f"dataset {self.datasets[0].name!r} does not fit the model: " + "; ".join(problems))
        self.repa: Optional[tuple[int, int]] = None
        """(tokens, width) of each sample's REPA features when cfg.repa_features, else None."""
        if cfg.repa_features:
            grid_width = prov.repa_features()
            if grid_width is None:
                raise ValueError(f"dataset {self.datasets[0].name!r} holds no REPA features (its manifest names no "
                                 "`encoders.repa`): prepare it with --repa-encoder")
            self.repa = (grid_width[0] ** 2, grid_width[1])
        self.layout = prov.text_layout(context_dim=self.model.context_dim if self.model else None)
        self.dtype = ST_NAMES[TENSOR_DTYPES[prov.tensor_dtype]]
        self.layout.placements()  # a context_dim that cannot hold the encoders fails here, not in a worker
        if cfg.null_text is not None:  # so does a null text of other encoders or widths
            load_null_text(cfg.null_text, self.layout.placements(), TENSOR_DTYPES[prov.tensor_dtype])
        for d in self.datasets:
            problem = probe_shard(d.urls[0], self.layout, TENSOR_DTYPES[prov.tensor_dtype],
                                  d.manifest.provenance.latent.channels, self.repa)
            if problem:
                raise ValueError(f"dataset {d.name!r}: its shards do not hold what its manifest says: the first "
                                 f"sample of {d.urls[0]} has {problem}")
        self.sources = [Source(urls=d.urls, samples=d.samples, weight=d.weight, checks=d.checks)
                        for d in self.datasets]
        self.fingerprint = fingerprint(self.sources, [d.shard_names for d in self.datasets])
        self._plan: dict = {}
        self._start_epochs: Optional[list[int]] = None
        self._generation = 0
        self._reset_streams()

    @property
    def n_streams(self) -> int:
        return self.world_size * self.cfg.streams_per_rank

    def _spec(self, w: int) -> StreamSpec:
        return StreamSpec(sources=self.sources, cfg=self.cfg, layout=self.layout, dtype=self.dtype,
                          channels=self.manifest.provenance.latent.channels,
                          stream=self.rank * self.cfg.streams_per_rank + w, n_streams=self.n_streams,
                          validation=self.validation, generation=self._generation, plan=self._plan,
                          start_epochs=self._start_epochs, repa=self.repa)

    def _reset_streams(self) -> None:
        self._states = [StreamState.initial(self._spec(w)).to_dict() for w in range(self.cfg.streams_per_rank)]
        self._next = 0

    def __iter__(self) -> Iterator[dict]:
        """Training: continues from the last batch handed out (or the loaded state), forever.
        Validation: one deterministic pass over every sample, each time from the start."""
        if self.validation:
            self._reset_streams()
        streams = [Stream(self._spec(w), StreamState.from_dict(copy.deepcopy(st)))
                   for w, st in enumerate(self._states)]
        if self.cfg.num_workers == 0:
            items = run_inline(streams, self._next)
        elif self.cfg.worker_type == "thread":
            items = run_threads(streams, self._next, self.cfg.prefetch)
        else:
            items = run_processes(streams, self._next, self.cfg.prefetch, self._rings())
        for w, batch, state in items:
            self._states[w] = state
            self._next = (w + 1) % len(streams)
            yield batch

    def _rings(self) -> Optional[list[SharedRing]]:
        """Shared batch slots for DataLoader workers: enough for the batches in flight."""
        if not shared_memory_reuse_available():
            return None
        numel = 0
        for d in self.datasets:
            prov = d.manifest.provenance
            f = prov.latent.factor
            sizes = prov.buckets or [[prov.resolution, prov.resolution]]
            numel = max(numel, max(prov.latent.channels * (h // f) * (w // f) for h, w in sizes))
        dtype = TENSOR_DTYPES[self.manifest.provenance.tensor_dtype]
        return [SharedRing(self.cfg.prefetch + 3, self.cfg.batch_size, self.layout.seq_len, self.layout.width,
                           self.layout.pooled_dim, numel, dtype, self.repa)
                for _ in range(self.cfg.streams_per_rank)]

    @property
    def stats(self) -> dict[str, int]:
        """Samples delivered and corrupt samples/shards skipped by this rank's streams so far."""
        total = Counters()
        for st in self._states:
            for k, v in st["counters"].items():
                setattr(total, k, getattr(total, k) + v)
        return asdict(total)

    def state_dict(self) -> dict:
        """JSON-serialisable position after the last batch handed out."""
        return {"version": STATE_VERSION, "fingerprint": self.fingerprint, "seed": self.cfg.seed,
                "rank": self.rank, "world_size": self.world_size,
                "streams_per_rank": self.cfg.streams_per_rank, "batch_size": self.cfg.batch_size,
                "shuffle_buffer": self.cfg.shuffle_buffer, "generation": self._generation,
                "plan": plan_to_list(self._plan), "start_epochs": self._start_epochs,
                "next_stream": self._next, "streams": copy.deepcopy(self._states)}

    def load_state_dict(self, state: Union[Mapping, list[Mapping]]) -> None:
        """Resume from this rank's state or from the list of all ranks' states.

        Exact when world size, workers, batch size, shuffle buffer, seed and datasets are those
        of the saved run; otherwise (all ranks' states needed) the remaining work is re-dealt so
        that no finished shard and no delivered sample is read again in its epoch."""
        if self.validation:
            raise ValueError("a validation loader has no state: every pass reads the whole set")
        states = [state] if isinstance(state, Mapping) else list(state)
        if not states:
            raise ValueError("load_state_dict got no state")
        for s in states:
            if s.get("version") != STATE_VERSION:
                raise ValueError(f"loader state version {s.get('version')!r}; this loader reads {STATE_VERSION}")
            if s["fingerprint"] != self.fingerprint:
                raise ValueError("loader state is for other datasets (shard lists, sample counts or weights "
                                 "differ); refusing to resume on different data")
        mine = self.state_dict()
        own = next((s for s in states if int(s["rank"]) == self.rank), None)
        if own is not None and all(own[k] == mine[k] for k in EXACT_KEYS):
            self._plan = plan_from_list(own["plan"])
            self._start_epochs = own["start_epochs"]
            self._generation = int(own["generation"])
            self._states = copy.deepcopy(list(own["streams"]))
            self._next = int(own["next_stream"])
            return
        changed = {k: (states[0][k], mine[k]) for k in EXACT_KEYS if states[0][k] != mine[k]}
        try:
            resharded = plan_reshard(states, self.sources)
        except ValueError as err:
            raise ValueError(f"loader layout changed ({changed}): {err}") from None
        self._plan = resharded.plan
        self._start_epochs = resharded.start_epochs
        self._generation = resharded.generation
        self._reset_streams()
