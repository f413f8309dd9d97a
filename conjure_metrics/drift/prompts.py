"""Prompt files for ``conjure drift``: one prompt per line, optionally grouped.

Text files (any suffix but ``.tsv``), read line by line:

- blank lines and lines starting with ``#`` are skipped;
- ``LABEL: prompt`` puts ``prompt`` in group ``LABEL``: a label is one word (a letter, then letters,
  digits, ``_`` or ``-``) at the very start of the line, followed by a colon and at least one space
  (so ``https://...`` is no label); a label with nothing after it is an error.
  Labels are case-insensitive (``Target:`` is ``target``). ``target`` and ``preserve`` are the two
  groups the report's specificity compares; any other label is reported as a group of its own;
- any other line is an ungrouped prompt. A colon elsewhere stays part of the prompt
  (``a sign that says: open``, ``target: a sign that says: open``); only the first label is taken;
- a leading backslash makes the rest of the line a prompt taken as written, never a label or a
  comment (``\\note: it is raining``, ``\\# of cats``).

TSV files (suffix ``.tsv``): a header row naming a ``prompt`` and a ``group`` column (any order, other
columns ignored), then one prompt per row; an empty group cell leaves the prompt ungrouped.

Ungrouped prompts form the group ``all`` when no prompt has a label, ``ungrouped`` otherwise. A prompt
may appear only once (its drift is measured once).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from conjure_metrics.sts.formats import check_regular_file, split_lines

TARGET, PRESERVE = "target", "preserve"
_LABEL = re.compile(r"([A-Za-z][A-Za-z0-9_-]*):(?:[ \t]+(.*))?")
_ESCAPE = "\\"


@dataclass(frozen=True)
class GroupedPrompts:
    """Prompts and the group of each (parallel tuples)."""

    prompts: tuple[str, ...]
    groups: tuple[str, ...]

    @property
    def group_names(self) -> tuple[str, ...]:
        """Group names in order of first appearance."""
        return tuple(dict.fromkeys(self.groups))


def read_prompts(path: str | Path, expected_groups: Sequence[str] | None = None) -> GroupedPrompts:
    """The prompts of a text or TSV prompt file (grammar in this module's docstring).

    ``expected_groups`` (e.g. ``("target", "preserve")``): every prompt must carry one of these labels
    and each of them must have at least one prompt; a typo in a label is then an error, not a new group.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "prompts.txt"
        >>> _ = path.write_text("target: a photo of sks dog\\npreserve: a cat\\npreserve: a sign that says: open\\n")
        >>> grouped = read_prompts(path, expected_groups=("target", "preserve"))
        >>> grouped.groups
        ('target', 'preserve', 'preserve')
        >>> grouped.prompts[2]
        'a sign that says: open'
    """
    path = Path(path)
    check_regular_file(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    lines = split_lines(text)
    parsed = _parse_tsv(path, lines) if path.suffix.lower() == ".tsv" else _parse_text(path, lines)
    return group_prompts(
        [p for p, _, _ in parsed],
        [g for _, g, _ in parsed],
        expected_groups,
        sources=[s for _, _, s in parsed],
        origin=str(path),
    )


def group_prompts(
    prompts: Sequence[str],
    groups: Sequence[str | None] | None = None,
    expected_groups: Sequence[str] | None = None,
    *,
    sources: Sequence[str] | None = None,
    origin: str = "prompts",
) -> GroupedPrompts:
    """Check prompts and their group labels (``None`` or ``""``: ungrouped) and name the ungrouped ones."""
    if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
        raise TypeError("prompts must be a list of str")
    if not prompts:
        raise ValueError(f"{origin}: no prompts")
    groups = [None] * len(prompts) if groups is None else [g or None for g in groups]
    if len(groups) != len(prompts):
        raise ValueError(f"groups must have one label per prompt: {len(groups)} labels for {len(prompts)} prompts")
    sources = list(sources) if sources is not None else [f"prompt {i + 1}" for i in range(len(prompts))]
    seen: dict[str, str] = {}
    for prompt, source in zip(prompts, sources):
        if not prompt.strip():
            raise ValueError(f"{source}: empty prompt")
        if prompt in seen:
            raise ValueError(f"{source}: prompt {prompt!r} already given at {seen[prompt]}")
        seen[prompt] = source
    labels = [None if g is None else g.lower() for g in groups]
    if expected_groups is not None:
        expected = [g.lower() for g in expected_groups]
        for label, source in zip(labels, sources):
            if label not in expected:
                found = "no group label" if label is None else f"unknown group {label!r}"
                raise ValueError(f"{source}: {found}; expected one of {', '.join(expected)}")
        empty = [g for g in expected if g not in labels]
        if empty:
            raise ValueError(f"{origin}: group {empty[0]!r} has no prompts")
    unlabelled = "all" if all(label is None for label in labels) else "ungrouped"
    return GroupedPrompts(tuple(prompts), tuple(label or unlabelled for label in labels))


def _parse_text(path: Path, lines: list[str]) -> list[tuple[str, str | None, str]]:
    parsed: list[tuple[str, str | None, str]] = []
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        source = f"{path}:{number}"
        if line.startswith(_ESCAPE):
            parsed.append((line[1:].strip(), None, source))
            continue
        labelled = _LABEL.fullmatch(line)
        if labelled and not labelled.group(2):
            raise ValueError(
                f"{source}: group label {labelled.group(1)!r} with no prompt after it "
                "(write 'LABEL: prompt' on one line)"
            )
        if labelled:
            parsed.append((labelled.group(2).strip(), labelled.group(1), source))
        else:
            parsed.append((line, None, source))
    return parsed


def _parse_tsv(path: Path, lines: list[str]) -> list[tuple[str, str | None, str]]:
    rows = [(number, line.split("\t")) for number, line in enumerate(lines, start=1) if line.strip()]
    if not rows:
        return []
    header = [cell.strip().lower() for cell in rows[0][1]]
    missing = [column for column in ("prompt", "group") if column not in header]
    if missing:
        raise ValueError(
            f"{path}:{rows[0][0]}: header has no {missing[0]!r} column (a .tsv prompt file starts "
            "with a header naming its 'prompt' and 'group' columns)"
        )
    prompt_column, group_column = header.index("prompt"), header.index("group")
    parsed = []
    for number, cells in rows[1:]:
        if len(cells) != len(header):
            raise ValueError(f"{path}:{number}: expected {len(header)} tab-separated fields, found {len(cells)}")
        parsed.append((cells[prompt_column].strip(), cells[group_column].strip() or None, f"{path}:{number}"))
    return parsed
