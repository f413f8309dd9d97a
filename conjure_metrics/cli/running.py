"""How every ``conjure`` command runs: user errors become one line and exit status 2, no traceback."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

USER_ERRORS = (ValueError, TypeError, OSError, ImportError)  # bad input or environment, not a bug


def one_line(error: BaseException) -> str:
    """The first line of an error's message (its type when it has none): what a user error prints."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def run_command(args: argparse.Namespace) -> int:
    """Run a parsed command: user errors become one line on stderr and exit status 2, no traceback."""
    try:
        check_device(getattr(args, "device", None))
        check_output("--json", getattr(args, "json_path", None))
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
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available on this machine")
    if parsed.type == "cuda" and parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise ValueError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {device}: MPS is not available on this machine")


def check_output(option: str, path: str | None) -> None:
    """Fail before minutes of computation, not after, when an output file cannot be written."""
    if path and not Path(path).resolve().parent.is_dir():
        raise ValueError(f"{option} {path}: directory {Path(path).resolve().parent} does not exist")
