"""Writing report files so that a reader never sees half of one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomically(path: str | os.PathLike, data: bytes | str) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it over ``path`` in one step: an
    interrupted run leaves the old file (or none), never a truncated one.

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "report.json"
        >>> write_atomically(target, '{"ok": true}')
        >>> target.read_text()
        '{"ok": true}'
    """
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        # mkstemp makes the file private (0600); give it the mode a plain open() would have.
        os.chmod(temporary, 0o666 & ~_umask())
        with os.fdopen(handle, "wb") as file:
            file.write(payload)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_output_directory(option: str, path: str | os.PathLike | None) -> None:
    """Refuse an output path whose directory does not exist, before minutes of computation."""
    if path and not Path(path).resolve().parent.is_dir():
        raise FileNotFoundError(f"{option} {os.fspath(path)}: directory {Path(path).resolve().parent} does not exist")
