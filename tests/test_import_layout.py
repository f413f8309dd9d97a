"""The estimator core is pure torch: importing it pulls in no metrics, model or plotting library."""

import subprocess
import sys

CORE = (
    "conjure_metrics.estimator",
    "conjure_metrics.chains",
    "conjure_metrics.chains_flow",
    "conjure_metrics.noise",
    "conjure_metrics.adaptive",
    "conjure_metrics.weighting",
    "conjure_metrics.conditioning",
    "conjure_metrics.settings",
)
HEAVY = ("torchmetrics", "diffusers", "transformers", "lightning", "matplotlib", "evaluate")


def test_importing_the_core_imports_no_heavy_library():
    code = (
        f"import sys\nfor name in {CORE!r}: __import__(name)\nprint(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == ""


def test_public_names_still_import_from_the_package():
    import conjure_metrics

    for name in conjure_metrics.__all__:
        assert getattr(conjure_metrics, name) is not None
