"""How a drift run reports progress: a tqdm bar on a terminal, one line per stage on stderr otherwise."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from tqdm.auto import tqdm


class Progress:
    """Stages and finished work of a run.

    ``show``: ``None`` picks a bar on a terminal and stage lines otherwise (logs, CI), ``True`` a bar,
    ``False`` nothing. ``total`` counts the units of work (scores and explanations) the bar advances over.
    """

    def __init__(self, show: bool | None, total: int) -> None:
        use_bar = sys.stderr.isatty() if show is None else show
        self.lines = show is None and not use_bar
        self.bar = tqdm(total=total, unit="score", disable=not use_bar or total == 0, leave=False)

    def stage(self, text: str) -> None:
        if self.lines:
            print(f"conjure drift: {text}", file=sys.stderr, flush=True)
        self.bar.set_description_str(text, refresh=False)

    def advance(self, count: int = 1) -> None:
        self.bar.update(count)

    def close(self) -> None:
        self.bar.close()


@contextmanager
def library_bars_off() -> Iterator[None]:
    """Silence transformers' and diffusers' per-load progress bars (our own progress reports loading)."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    enabled = [(module, module.is_progress_bar_enabled()) for module in (transformers_logging, diffusers_logging)]
    for module, _ in enabled:
        module.disable_progress_bar()
    try:
        yield
    finally:
        for module, was_enabled in enabled:
            if was_enabled:
                module.enable_progress_bar()
