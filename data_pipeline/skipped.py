"""The inputs `prepare` skipped, each named with its reason, for the user to find and fix.

Planning skips inputs whose caption, header, size or content is refused (shard_plan.py); encoding
skips images that do not decode (encode_shard.py, which keeps its shard's list in the shard's
completion record, so a rerun that reuses the shard still lists them). `prepare` writes them all,
one JSON object a line, to `skipped.jsonl` in the output dir, or with `--part I/N` to that part's
`skipped.part-IIIII-of-NNNNN.jsonl`: each part owns its file, so parts on many machines never
write one file, and a rerun of a part rewrites its whole file.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

from data_pipeline.atomic import write_atomic


@dataclass(frozen=True)
class SkippedInput:
    key: str
    """The sample key the input would have had."""
    path: str
    """The file its image is read from: the image itself, or the tar holding it."""
    reason: str
    """The report's skip category (docs/data.md lists them)."""


def reasons(items: Iterable[SkippedInput]) -> Counter:
    """Skipped inputs counted by reason."""
    return Counter(item.reason for item in items)


def write_skipped(path: Path, items: Iterable[SkippedInput]) -> None:
    """The whole list, replacing any earlier one (an empty file when nothing was skipped). ASCII JSON:
    a file name that is not UTF-8 (Python keeps its bytes as surrogates) is escaped, not an error."""
    write_atomic(path, "".join(json.dumps(asdict(item)) + "\n" for item in items))
