"""How every ``conjure`` command runs: user errors become one line and exit status 2, no traceback."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TextIO

USER_ERRORS = (ValueError, TypeError, OSError, ImportError)  # bad input or environment, not a bug


def one_line(error: BaseException) -> str:
    """The first line of an error's message (its type when it has none): what a user error prints."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def run_command(args: argparse.Namespace) -> int:
    """Run a parsed command: user errors become one line on stderr and exit status 2, no traceback."""
    try:
        check_device(getattr(args, "device", None))
        for option, dest in (("--json", "json_path"), ("--results", "results")):
            check_output(option, getattr(args, dest, None))
        args.run(args)
    except USER_ERRORS as error:
        print(f"conjure: error: {one_line(error)}", file=sys.stderr)
        return 2
    return 0


def check_device(device: str | None) -> None:
    """Refuse a ``--device`` torch cannot parse or this machine does not have, before any model loads."""
    if device is None:
        return
    import torch

    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise ValueError(f"--device {device!r} is not a device (e.g. cpu, cuda, cuda:1, mps)") from None
    if parsed.type == "meta":
        raise ValueError(
            f"--device {device}: meta tensors hold no values, so nothing can be computed on them "
            "(e.g. cpu, cuda, cuda:1, mps)"
        )
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available on this machine")
    if parsed.type == "cuda" and parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise ValueError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {device}: MPS is not available on this machine")
    try:  # any other backend (xla, xpu, privateuse1): can it hold a tensor at all?
        torch.empty(0, device=parsed)
    except (RuntimeError, AssertionError, ImportError):
        raise ValueError(
            f"--device {device}: not available on this machine (this torch build cannot place a tensor there)"
        ) from None


def check_output(option: str, path: str | None) -> None:
    """Fail before minutes of computation, not after, when an output file cannot be written: an empty
    name, a directory, or a file in a directory that does not exist."""
    if path is None:
        return
    if not path.strip():
        raise ValueError(f"{option} needs a file name, got an empty string")
    if Path(path).is_dir() or path.endswith(("/", os.sep)):
        raise ValueError(f"{option} {path}: is a directory; give a file name")
    if not Path(path).resolve().parent.is_dir():
        raise ValueError(f"{option} {path}: directory {Path(path).resolve().parent} does not exist")


class Stages:
    """What a command tells the user while it works: one line per stage on stderr (``conjure: loading
    ...``), plus the estimator's bar over the steps on a terminal; nothing with ``--quiet``.

    Library loading bars (transformers' "Loading weights") are off either way: the stage line says
    what is loading, and in a log a bar is only noise.

    Example:
        >>> import io
        >>> stages = Stages(quiet=False, stream=io.StringIO())
        >>> stages.stage("loading conjure-zoo")
        >>> stages.stream.getvalue(), stages.bar
        ('conjure: loading conjure-zoo\\n', False)
    """

    def __init__(self, quiet: bool, stream: TextIO | None = None) -> None:
        self.quiet = quiet
        self.stream = sys.stderr if stream is None else stream

    @property
    def bar(self) -> bool:
        """Whether the estimator shows its tqdm bar (on a terminal, unless quiet)."""
        return not self.quiet and self.stream.isatty()

    def stage(self, text: str) -> None:
        if not self.quiet:
            print(f"conjure: {text}", file=self.stream, flush=True)
