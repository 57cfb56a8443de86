"""Run a rank's streams and interleave their batches in a fixed round-robin order.

Whatever runs the streams (the calling thread, reader threads, or DataLoader processes), batch
n of a rank comes from stream `(first + n) % streams`, so the output order is deterministic and
independent of timing. Each batch travels with its stream's state *after* it; the loader keeps
the state of the last batch it handed out, so prefetched batches never leak into a checkpoint.
"""
from __future__ import annotations

import gc
import queue
import threading
from typing import Callable, Iterator, Optional

import numpy as np
import torch

from data_pipeline.loader.collate import SLOT_KEY
from data_pipeline.loader.shared import SharedRing
from data_pipeline.loader.stream import Stream

Item = tuple[int, dict, dict]
"""(local stream index, batch, stream state after the batch)."""


def _round_robin(sources: list[Callable[[], Optional[tuple[dict, dict]]]], first: int) -> Iterator[Item]:
    """Take one batch from each live source in turn; a finished source drops out of the cycle."""
    live = [(first + i) % len(sources) for i in range(len(sources))]
    while live:
        for w in list(live):
            item = sources[w]()
            if item is None:
                live.remove(w)
                continue
            yield (w,) + item


def run_inline(streams: list[Stream], first: int) -> Iterator[Item]:
    iters = [iter(s) for s in streams]
    return _round_robin([lambda it=it: next(it, None) for it in iters], first)


class _Threaded:
    """One stream in a daemon thread, feeding a bounded queue."""

    _END = object()

    def __init__(self, stream: Stream, prefetch: int):
        self.queue: queue.Queue = queue.Queue(maxsize=prefetch)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self.thread.start()

    def _put(self, item) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, stream: Stream) -> None:
        try:
            for item in stream:
                if not self._put(item):
                    return
            self._put(self._END)
        except BaseException as err:  # noqa: BLE001 -- re-raised in the consumer
            self._put(err)

    def get(self) -> Optional[tuple[dict, dict]]:
        item = self.queue.get()
        if item is self._END:
            return None
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self.stop.set()
        while self.thread.is_alive():
            try:
                self.queue.get(timeout=0.1)
            except queue.Empty:
                pass
        self.thread.join()


def run_threads(streams: list[Stream], first: int, prefetch: int) -> Iterator[Item]:
    workers = [_Threaded(s, prefetch) for s in streams]
    try:
        yield from _round_robin([w.get for w in workers], first)
    finally:
        for w in workers:
            w.close()


class _StreamsDataset(torch.utils.data.IterableDataset):
    """Worker k of the DataLoader runs stream (first + k) % n, so the DataLoader's own
    round-robin from worker 0 yields the streams in our order."""

    def __init__(self, streams: list[Stream], first: int, rings: Optional[list[SharedRing]]):
        self.streams = streams
        self.first = first
        self.rings = rings

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        k = info.id if info is not None else 0
        w = (self.first + k) % len(self.streams)
        stream = self.streams[w]
        if self.rings is not None:
            stream.collate.ring = self.rings[w]
        for batch, state in stream:
            if SLOT_KEY in batch:  # send the slot index, not the tensors
                batch[_LATENT_SHAPE] = tuple(batch.pop("latent").shape[1:])
                del batch["context"], batch["pooled"]
                batch.pop("repa_features", None)
            # Every tensor sent to the main process gets a shared-memory segment of its own,
            # handed over through a socket connection per tensor (about 4 ms each under load);
            # the small per-sample fields travel as numpy arrays, pickled by value.
            for name, v in batch.items():
                if name not in _SLOT_FIELDS and isinstance(v, torch.Tensor):
                    batch[name] = v.numpy()
            yield w, batch, state


_LATENT_SHAPE = "_latent_shape"
_SLOT_FIELDS = ("latent", "context", "pooled", "repa_features")


def _identity(item):
    return item


def _worker_init(_: int) -> None:
    # The forked worker inherits the parent's objects (torch alone makes about 170,000) that it
    # never frees; left to the cyclic GC, each full collection walks them all (0.1-0.3 s here).
    gc.freeze()


def run_processes(streams: list[Stream], first: int, prefetch: int,
                  rings: Optional[list[SharedRing]]) -> Iterator[Item]:
    loader = torch.utils.data.DataLoader(_StreamsDataset(streams, first, rings), batch_size=None,
                                         num_workers=len(streams), prefetch_factor=prefetch,
                                         collate_fn=_identity, worker_init_fn=_worker_init)
    it = iter(loader)
    lent: list[tuple[int, int]] = []  # (stream, slot) whose tensors the consumer may still hold
    try:
        for w, batch, state in it:
            still = []
            for ws, slot in lent:
                if rings[ws].in_use(slot):
                    still.append((ws, slot))
                else:
                    rings[ws].release(slot)
            lent = still
            for k, v in batch.items():
                if isinstance(v, np.ndarray):
                    batch[k] = torch.from_numpy(v)
            slot = batch.pop(SLOT_KEY, None)
            if slot is not None:
                latent_shape = batch.pop(_LATENT_SHAPE)
                latent, context, pooled, features = rings[w].views(slot, len(batch["keys"]), latent_shape)
                batch["latent"], batch["context"], batch["pooled"] = latent, context, pooled
                if features is not None:
                    batch["repa_features"] = features
                lent.append((w, slot))
            yield w, batch, state
    finally:
        del it  # the DataLoader iterator shuts its workers down when released
