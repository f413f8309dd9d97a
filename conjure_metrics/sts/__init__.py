"""Benchmark harness: Spearman / Pearson correlation with human similarity judgements.

Reads local copies of STS-B, STS12–16 (SentEval layout), SICK-R, MTEB-style exports, WordSim353,
SimLex-999 and the Lee corpus (:mod:`.formats`), scores every pair with the conjure estimator,
resumably and across ``torchrun`` ranks (:mod:`.run`), and prints the paper's table. See ``docs/sts.md``.
"""

from conjure_metrics.sts.formats import FORMATS, SimilarityDataset, detect_format, load_datasets
from conjure_metrics.sts.run import BenchmarkReport, ColumnScore, run_benchmark
from conjure_metrics.sts.stats import Correlation

__all__ = [
    "FORMATS",
    "BenchmarkReport",
    "ColumnScore",
    "Correlation",
    "SimilarityDataset",
    "detect_format",
    "load_datasets",
    "run_benchmark",
]
