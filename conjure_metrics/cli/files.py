"""Reading prompt and pair files, writing JSON: the ``conjure`` commands' file handling."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conjure_metrics.sts.formats import check_regular_file, split_lines


def read_text_lines(path: str) -> list[str]:
    """Lines of a UTF-8 text file (a byte-order mark, as editors on Windows write, is dropped)."""
    check_regular_file(path)
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    return split_lines(text)


def read_lines(path: str) -> list[str]:
    lines = [line.strip() for line in read_text_lines(path)]
    return [line for line in lines if line and not line.startswith("#")]


def read_pairs(path: str) -> tuple[list[str], list[str]]:
    a, b = [], []
    for number, line in enumerate(read_text_lines(path), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) != 2:
            raise ValueError(f"{path}:{number}: expected two tab-separated prompts, found {len(fields)} field(s)")
        a.append(fields[0].strip())
        b.append(fields[1].strip())
    return a, b


def write_json(path: str | None, payload: dict[str, Any]) -> None:
    if path:
        Path(path).write_text(json.dumps(payload, indent=2), encoding="utf-8")
        print(f"wrote {path}")
