"""The append-only JSONL file that makes a benchmark run resumable.

One line per scored pair, written as soon as its chunk is computed. A record counts for a later run
only if its ``settings`` hash (model and estimator settings) and its ``pair`` fingerprint (the two
texts) match, so one file can hold runs with several settings, and an edited data file is rescored
rather than silently reused. A line cut short by a killed process, or one without finite scores (``"similarity": null``),
is skipped with a warning naming the file and line, and its pair scored again (the next append
starts on a fresh line).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any


def settings_hash(settings: dict[str, Any]) -> str:
    """Short stable hash of everything that changes a pair's score."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def pair_fingerprint(first: str, second: str) -> str:
    return hashlib.sha256(f"{first}\t{second}".encode()).hexdigest()[:16]


def record_key(dataset: str, index: int, settings: str) -> str:
    return f"{dataset}:{index}:{settings}"


# Every record, from conjure sts or conjure drift, carries these as finite numbers; a record without them
# (cut short, edited by hand, "similarity": null) is not a scored pair, whatever its key says.
_SCORES = ("similarity", "divergence")


def _holds_scores(record: dict[str, Any]) -> bool:
    return all(
        isinstance(record.get(name), (int, float))
        and not isinstance(record.get(name), bool)
        and math.isfinite(record[name])
        for name in _SCORES
    )


class ResultsFile:
    """Per-pair results of benchmark runs, one JSON object per line."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def read(
        self, settings: str, complete: Callable[[dict[str, Any]], bool] | None = None
    ) -> dict[str, dict[str, Any]]:
        """Records written under ``settings``, by :func:`record_key` (later lines win). A line that is not
        JSON, lacks finite scores or fails ``complete`` (a reader's own fields) is skipped with a warning
        naming the file and line, so that its pair is scored again."""
        if not self.path.exists():
            return {}
        if not self.path.is_file():
            raise ValueError(f"{self.path}: not a results file (a directory, pipe or device)")
        try:
            text = self.path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as error:
            # Appending to a binary file would corrupt it: it is not ours to touch.
            raise ValueError(
                f"{self.path}: not a results file (not UTF-8 text: {error.reason} at byte {error.start})"
            ) from None
        records, unreadable = {}, []
        for number, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                key = record["key"]
            except (json.JSONDecodeError, KeyError, TypeError):
                unreadable.append(number)
                continue
            if not isinstance(key, str) or not _holds_scores(record) or (complete is not None and not complete(record)):
                unreadable.append(number)
                continue
            if record.get("settings") == settings:
                records[key] = record
        if unreadable:
            warnings.warn(
                f"{self.path}: skipped {len(unreadable)} unreadable line(s) (first: {self.path}:"
                f"{unreadable[0]}); those pairs are scored again",
                stacklevel=2,
            )
        return records

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        """Append ``records`` and push them to disk before returning."""
        lines = "".join(json.dumps(record) + "\n" for record in records)
        if not lines:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+b") as handle:
            if handle.tell() > 0:
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":
                    lines = "\n" + lines
            handle.write(lines.encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
