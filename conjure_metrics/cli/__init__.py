"""The ``conjure`` command line (see :mod:`conjure_metrics.cli.app` for the commands).

Modules: ``app`` (the parser and the ``main`` entry point), ``commands`` (similarity, compare, explain),
``options`` (the estimator's options, derived from :class:`~conjure_metrics.ConjureSettings`),
``files`` (prompt and pair files, JSON output) and ``running`` (one-line user errors, exit status 2).
``conjure sts`` and ``conjure drift`` live with their packages and use only ``options`` and
``running``, so nothing here imports them until the parser is built.
"""

from typing import Any

from conjure_metrics.cli.running import USER_ERRORS, check_device, one_line, run_command

__all__ = ["USER_ERRORS", "build_parser", "check_device", "main", "one_line", "run_command"]


def __getattr__(name: str) -> Any:
    if name in ("main", "build_parser"):  # the parser imports every command's package
        import importlib

        return getattr(importlib.import_module("conjure_metrics.cli.app"), name)
    raise AttributeError(f"module 'conjure_metrics.cli' has no attribute {name!r}")
