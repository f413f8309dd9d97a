"""conjure_metrics: semantic similarity of text as a text-to-image diffusion model imagines it.

The distance between two prompts is the Jeffreys divergence between the reverse diffusion
processes they induce (Liu & Soatto, "Conjuring Semantic Similarity", ICLR 2026), estimated by
Monte-Carlo over trajectories.

Public names are imported on first use, so that the pure-torch core (``conjure_metrics.estimator``,
``.chains``, ``.chains_flow``, ``.noise``, ``.adaptive``) imports neither torchmetrics nor diffusers.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:  # the version is defined once, in pyproject.toml
    __version__ = version("conjure_metrics")
except PackageNotFoundError:  # a source tree that is not installed
    __version__ = "0+unknown"

# public name -> module that defines it
_PUBLIC: dict[str, str] = {
    "ReverseChain": "conjure_metrics.chains",
    "ddim_chain": "conjure_metrics.chains",
    "ddpm_chain": "conjure_metrics.chains",
    "euler_ancestral_chain": "conjure_metrics.chains",
    "CallableDenoiser": "conjure_metrics.denoisers.callable",
    "CompiledDenoiser": "conjure_metrics.denoisers.compiled",
    "DiffusersDenoiser": "conjure_metrics.denoisers.diffusers",
    "load_denoiser": "conjure_metrics.denoisers.loading",
    "Denoiser": "conjure_metrics.denoisers.protocol",
    "JeffreysTerms": "conjure_metrics.estimator",
    "StepState": "conjure_metrics.estimator",
    "jeffreys_terms": "conjure_metrics.estimator",
    "Explanation": "conjure_metrics.explain",
    "explain": "conjure_metrics.explain",
    "ConjureResult": "conjure_metrics.functional",
    "conjure_similarity": "conjure_metrics.functional",
    "divergence_to_similarity": "conjure_metrics.functional",
    "ConjureSimilarity": "conjure_metrics.metric",
    "ConjureSettings": "conjure_metrics.settings",
    "drift_report": "conjure_metrics.drift",
    # Needs the [lightning] extra; not in __all__, so that a star import does not require it.
    "ConceptDrift": "conjure_metrics.lightning_drift",
    "TrajectorySimilarity": "conjure_metrics.trajectory",
    "trajectory_similarity": "conjure_metrics.trajectory",
}

__all__ = [
    "CallableDenoiser",
    "CompiledDenoiser",
    "ConjureResult",
    "ConjureSettings",
    "ConjureSimilarity",
    "Denoiser",
    "DiffusersDenoiser",
    "Explanation",
    "JeffreysTerms",
    "ReverseChain",
    "StepState",
    "TrajectorySimilarity",
    "conjure_similarity",
    "ddim_chain",
    "ddpm_chain",
    "divergence_to_similarity",
    "drift_report",
    "euler_ancestral_chain",
    "explain",
    "jeffreys_terms",
    "load_denoiser",
    "trajectory_similarity",
]


# ``explain`` is also a submodule's name: importing the submodule (as the CLI does) would bind the
# package attribute to the module, so the function is bound here (explain imports no heavy library).
from conjure_metrics.explain import Explanation, explain  # noqa: E402


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'conjure_metrics' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))


if TYPE_CHECKING:
    from conjure_metrics.chains import ReverseChain, ddim_chain, ddpm_chain, euler_ancestral_chain
    from conjure_metrics.denoisers.callable import CallableDenoiser
    from conjure_metrics.denoisers.compiled import CompiledDenoiser
    from conjure_metrics.denoisers.diffusers import DiffusersDenoiser
    from conjure_metrics.denoisers.loading import load_denoiser
    from conjure_metrics.denoisers.protocol import Denoiser
    from conjure_metrics.drift import drift_report
    from conjure_metrics.estimator import JeffreysTerms, StepState, jeffreys_terms
    from conjure_metrics.functional import ConjureResult, conjure_similarity, divergence_to_similarity
    from conjure_metrics.lightning_drift import ConceptDrift  # noqa: F401  (lazy, needs the [lightning] extra)
    from conjure_metrics.metric import ConjureSimilarity
    from conjure_metrics.settings import ConjureSettings
    from conjure_metrics.trajectory import TrajectorySimilarity, trajectory_similarity
