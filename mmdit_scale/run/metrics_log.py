"""Reading a run's metrics.jsonl: what `status`, `scaling-report` and the demo know of a run's progress.

Rank 0 appends one JSON object per log line (`mmdit_scale.train.metrics`): `kind` "train" or "val",
`step`, and the numbers. A kill can cut the last line short, and a resumed run logs a step again,
so readers skip lines that are not JSON objects and let a later record of a step win.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mmdit_scale.run.layout import METRICS_FILE


def metrics_path(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / METRICS_FILE


def read_records(path: str | os.PathLike) -> tuple[list[dict[str, Any]], int]:
    """The file's records in order, and the count of lines that are not JSON objects. No file: none."""
    path = Path(path)
    if not path.is_file():
        return [], 0
    records, skipped = [], 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            skipped += 1
            continue
        if isinstance(record, dict):
            records.append(record)
        else:
            skipped += 1
    return records, skipped


def last_of_kind(records: list[dict[str, Any]], kind: str, key: str | None = None) -> dict[str, Any] | None:
    """The newest record of `kind` ("train" or "val"), or of those, the newest whose `key` is set."""
    for record in reversed(records):
        if record.get("kind") == kind and (key is None or record.get(key) is not None):
            return record
    return None
