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
    """Refuse, before minutes of computation, an output path that is empty, names a directory, or lies
    in a directory that does not exist."""
    if path is None:
        return
    if not os.fspath(path).strip():
        raise ValueError(f"{option} needs a file name, got an empty string")
    if Path(path).is_dir() or os.fspath(path).endswith(("/", os.sep)):
        raise IsADirectoryError(f"{option} {os.fspath(path)}: is a directory; give a file name")
    if not Path(path).resolve().parent.is_dir():
        raise FileNotFoundError(f"{option} {os.fspath(path)}: directory {Path(path).resolve().parent} does not exist")
