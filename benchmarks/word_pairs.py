"""Both embedded models on real human-annotated word pairs: gensim's WordSim353 and SimLex-999.

ConjureSimilarity (embedded conjure-zoo model) and TrajectorySimilarity (embedded zoo LM) score the
same evenly spaced pairs of each list (words become prompts as they are, e.g. "tiger" / "cat");
Spearman and Pearson × 100 with bootstrap 95 % intervals. Both models know only a small made-up
world, so this measures the harness on real human scores, not the method.

    pip install gensim && python benchmarks/word_pairs.py [--max-pairs 100]
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

from conjure_metrics import conjure_similarity, trajectory_similarity
from conjure_metrics.sts.formats import load_datasets
from conjure_metrics.sts.run import evenly_spaced
from conjure_metrics.sts.stats import bootstrap_replicates, correlations, interval


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-pairs", type=int, default=100)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--scorers", nargs="+", default=["conjure", "trajectory"], choices=["conjure", "trajectory"])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "word_pairs.json"))
    args = parser.parse_args()

    import gensim

    data = Path(gensim.__file__).parent / "test" / "test_data"
    scorers = {
        "conjure": (
            "ConjureSimilarity (conjure-zoo)",
            lambda a, b: conjure_similarity(
                a,
                b,
                None,
                num_steps=args.steps,
                num_samples=args.samples,
                guidance_scale=args.guidance,
                progress_bar=False,
            ),
        ),
        "trajectory": ("TrajectorySimilarity (zoo LM)", lambda a, b: trajectory_similarity(a, b, progress_bar=False)),
    }
    scorers = dict(scorers[key] for key in args.scorers)
    table = {}
    for file in ("wordsim353.tsv", "simlex999.txt"):
        dataset = load_datasets(data / file)[0]
        index = evenly_spaced(len(dataset.scores), args.max_pairs)
        a = [dataset.sentences_a[i] for i in index]
        b = [dataset.sentences_b[i] for i in index]
        gold = [dataset.scores[i] for i in index]
        for name, score in scorers.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # out-of-vocabulary words, expectedly
                predicted = score(a, b).similarity.tolist()
            values = correlations(predicted, gold)
            replicates = bootstrap_replicates(predicted, gold, 1000, 0)
            table.setdefault(name, {})[dataset.name] = {
                key: interval(values[key], replicates[key]).to_dict(scale=100) for key in ("spearman", "pearson")
            }
            print(f"{name} on {dataset.name} ({len(index)} pairs): {table[name][dataset.name]}", flush=True)
    Path(args.out).write_text(json.dumps({"settings": vars(args), "table": table}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
