"""conjure_metrics: semantic similarity of text as a text-to-image diffusion model imagines it.

The distance between two prompts is the Jeffreys divergence between the reverse diffusion
processes they induce (Liu & Soatto, "Conjuring Semantic Similarity", ICLR 2026), estimated by
Monte-Carlo over trajectories.
"""

from importlib.metadata import PackageNotFoundError, version

from conjure_metrics.chains import ReverseChain, ddim_chain, ddpm_chain, euler_ancestral_chain
from conjure_metrics.denoisers.callable import CallableDenoiser
from conjure_metrics.denoisers.compiled import CompiledDenoiser
from conjure_metrics.denoisers.loading import load_denoiser
from conjure_metrics.denoisers.protocol import Denoiser
from conjure_metrics.estimator import JeffreysTerms, StepState, jeffreys_terms
from conjure_metrics.explain import Explanation, explain
from conjure_metrics.functional import ConjureResult, conjure_similarity, divergence_to_similarity
from conjure_metrics.metric import ConjureSimilarity
from conjure_metrics.settings import ConjureSettings
from conjure_metrics.trajectory import TrajectorySimilarity, trajectory_similarity

try:  # the version is defined once, in pyproject.toml
    __version__ = version("conjure_metrics")
except PackageNotFoundError:  # a source tree that is not installed
    __version__ = "0+unknown"

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
    "euler_ancestral_chain",
    "explain",
    "jeffreys_terms",
    "load_denoiser",
    "trajectory_similarity",
]


def __getattr__(name: str):
    # diffusers is imported only when its adapter is asked for.
    if name == "DiffusersDenoiser":
        from conjure_metrics.denoisers.diffusers import DiffusersDenoiser

        return DiffusersDenoiser
    raise AttributeError(f"module 'conjure_metrics' has no attribute {name!r}")
