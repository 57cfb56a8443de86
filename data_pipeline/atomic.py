"""The project's one way to write a file that other processes read: whole or not at all.

The bytes go to a hidden temporary name beside the target (`.NAME.tmp-PID`: unique per writing
process, so two writers never share one), are fsynced, and the temporary is renamed over the
target; then the directory is fsynced so the rename itself survives a power cut. A reader, or a
process restarted after a kill at any moment, sees the old content or the new, never a mix.

Everything another process may read goes through here: manifests and shard records (prepare),
and every file of a run directory (`mmdit_scale.run`: the resolved config, `latest`, checkpoint
files, the DeepSpeed JSON, rank exit reports, summaries). It sits at the bottom of the import
graph, in the torch-free half of data_pipeline, so that both can use it. The shard writer streams
its tar to `temp_name(path)` and calls `commit` itself: it records the shard's size and hash
between the two.
"""
from __future__ import annotations

import os
from pathlib import Path

TEMP_MARK = ".tmp-"


def temp_name(path: str | os.PathLike) -> Path:
    """The temporary name this process writes `path` under."""
    path = Path(path)
    return path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}")


def remove_stale_temps(path: str | os.PathLike) -> None:
    """Delete temporaries of `path` left by killed writers (they never replaced it)."""
    path = Path(path)
    for stale in path.parent.glob(f".{path.name}{TEMP_MARK}*"):
        stale.unlink(missing_ok=True)


def fsync_dir(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Rename a complete, fsynced temporary over `path`, and make the rename durable."""
    os.replace(tmp, path)
    fsync_dir(Path(path).parent)


def write_atomic(path: str | os.PathLike, data: bytes | str) -> None:
    """Write `data` (text is UTF-8) to `path` so that no reader ever sees part of it."""
    path = Path(path)
    tmp = temp_name(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        commit(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
