"""Make ``evaluate.load("conjure")`` work offline, from any directory, after one command.

``evaluate.load`` with a bare name tries ``./conjure/conjure.py``, then the Hub (``evaluate-metric/conjure``),
then its own module cache. ``install`` places the module shipped in this package into that cache,
where evaluate finds it with the Hub unreachable or ``HF_EVALUATE_OFFLINE=1``::

    python -m conjure_metrics.evaluate_support install

Without installing, load it by path: ``evaluate.load(conjure_metrics.evaluate_support.module_path())``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

MODULE_NAME = "conjure"


def module_path() -> str:
    """Path of the ``conjure.py`` evaluate module shipped inside the package."""
    return str(Path(__file__).parent / "evaluate_space" / f"{MODULE_NAME}.py")


def _require_evaluate():
    try:
        import evaluate.loading
    except ImportError as error:
        raise ImportError(
            "the evaluate integration needs the 'evaluate' extra: pip install 'conjure_metrics[evaluate]'"
        ) from error
    return evaluate.loading


def install() -> Path:
    """Copy the module into evaluate's module cache as the canonical ``conjure`` metric; returns its path."""
    loading = _require_evaluate()
    source = Path(module_path())
    code = source.read_bytes()
    metric_dir = Path(loading.init_dynamic_modules()) / "metrics" / f"evaluate-metric--{MODULE_NAME}"
    target_dir = metric_dir / hashlib.sha256(code).hexdigest()
    target_dir.mkdir(parents=True, exist_ok=True)
    for package in (metric_dir.parent, metric_dir, target_dir):
        (package / "__init__.py").touch()
    target = target_dir / f"{MODULE_NAME}.py"
    shutil.copyfile(source, target)
    (target_dir / f"{MODULE_NAME}.json").write_text(
        json.dumps({"original file path": str(source), "local file path": str(target)})
    )
    return target


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args != ["install"]:
        print("usage: python -m conjure_metrics.evaluate_support install", file=sys.stderr)
        return 2
    print(f"installed evaluate module 'conjure' at {install()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
