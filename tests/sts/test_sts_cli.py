"""`conjure sts`: end to end on real human scores with a tiny model, and its user errors."""

import argparse
import json

import pytest

from conjure_metrics.sts.cli import add_sts_command, main

FAST = ["--steps", "3", "--samples", "2", "--quiet"]


@pytest.fixture(scope="module")
def gensim_data():
    from gensim.test.utils import datapath

    return datapath


def test_sts_on_wordsim_simlex_and_lee_prints_the_table_and_writes_json(gensim_data, tiny_pixel_repo, tmp_path, capsys):
    out, results = tmp_path / "table.json", tmp_path / "results.jsonl"
    argv = [
        "--data",
        gensim_data("wordsim353.tsv"),
        "--data",
        gensim_data("simlex999.txt"),
        "--data",
        gensim_data("lee.cor"),
        "--model",
        str(tiny_pixel_repo),
        "--max-pairs",
        "6",
        "--results",
        str(results),
        "--json",
        str(out),
        *FAST,
    ]
    with pytest.warns(UserWarning, match="truncated"):  # Lee's documents are longer than the tiny tokenizer's 32 tokens
        assert main(argv) == 0
    printed = capsys.readouterr().out
    header = printed.splitlines()[1].split()
    assert header == ["WordSim353", "SimLex-999", "Lee", "Avg."] and "Spearman ρ×100" in printed
    payload = json.loads(out.read_text())
    assert [c["pairs"] for c in payload["columns"]] == [6, 6, 6] and payload["computed_pairs"] == 18
    assert all(-100 <= c["spearman_x100"]["value"] <= 100 for c in payload["columns"])
    records = [json.loads(line) for line in results.read_text().splitlines()]
    wordsim = [r for r in records if r["dataset"] == "WordSim353"]
    assert [r["index"] for r in wordsim] == [0, 58, 117, 176, 235, 294]
    assert wordsim[0]["gold"] == 6.77 and all(0 < r["similarity"] <= 1 for r in records)

    assert main(argv) == 0  # everything is in the results file: nothing to score, same table
    assert json.loads(out.read_text())["reused_pairs"] == 18
    assert json.loads(out.read_text())["columns"] == payload["columns"]


def test_estimator_options_reach_the_benchmark(tiny_pixel_repo, tmp_path):
    from conjure_metrics.sts import load_datasets, run_benchmark

    data = tmp_path / "pairs.jsonl"
    data.write_text(
        "\n".join(
            json.dumps({"sentence1": a, "sentence2": b, "score": s})
            for a, b, s in [("a red fox", "a blue fox", 4.0), ("a cat", "a truck", 0.5), ("a dog", "a hound", 4.5)]
        )
        + "\n"
    )
    options = dict(num_steps=3, num_samples=2, guidance_scale=4.0, weighting="girsanov", seed=3, min_timestep=300)
    results = tmp_path / "results.jsonl"
    assert (
        main(
            [
                "--data",
                str(data),
                "--model",
                str(tiny_pixel_repo),
                "--steps",
                "3",
                "--samples",
                "2",
                "--guidance",
                "4",
                "--weighting",
                "girsanov",
                "--seed",
                "3",
                "--min-timestep",
                "300",
                "--dtype",
                "float32",
                "--results",
                str(results),
                "--quiet",
            ]
        )
        == 0
    )
    import torch

    expected = run_benchmark(
        load_datasets(data),
        tiny_pixel_repo,
        results_path=tmp_path / "again.jsonl",
        progress_bar=False,
        torch_dtype=torch.float32,
        **options,
    )
    by_cli = [json.loads(line) for line in results.read_text().splitlines()]
    by_api = [json.loads(line) for line in (tmp_path / "again.jsonl").read_text().splitlines()]
    assert [r["divergence"] for r in by_cli] == pytest.approx([r["divergence"] for r in by_api], rel=1e-9)
    assert by_cli[0]["settings"] == by_api[0]["settings"]  # same key: same model name, options and dtype
    assert expected.computed_pairs == 3


def test_add_sts_command_registers_sts_on_a_parent_parser(tiny_pixel_repo, tmp_path):
    parser = argparse.ArgumentParser(prog="conjure")
    add_sts_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(
        ["sts", "--data", "a.tsv", "--data", "b.tsv", "--max-pairs", "5", "--weighting", "girsanov"]
    )
    assert args.data == ["a.tsv", "b.tsv"] and args.max_pairs == 5 and args.weighting == "girsanov"
    assert (args.num_steps, args.num_samples, args.guidance_scale, args.format) == (10, 3, 7.5, "auto")
    assert callable(args.run)


@pytest.mark.parametrize(
    "files,extra,message",
    [
        ({"test.tsv": "index\tsentence1\tsentence2\n0\ta\tb\n"}, [], "no 'score' column"),
        (
            {"sts-dev.csv": "g\tf\t2012\t1\t4.0\ta\tb\ng\tf\t2012\t2\tfour\ta\tb\n"},
            [],
            "sts-dev.csv:2: score 'four' is not a number",
        ),
        ({"notes.txt": "hello\n"}, [], "cannot tell the format"),
        ({"a.jsonl": '{"sentence1": "a", "sentence2": "b", "score": 1}\n'}, ["--steps", "0"], "num_steps"),
        ({"a.jsonl": '{"sentence1": "a", "sentence2": "b", "score": 1}\n'}, ["--max-pairs", "0"], "max_pairs"),
    ],
)
def test_user_errors_print_one_line_and_exit_2(files, extra, message, tmp_path, capsys, tiny_pixel_repo):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    argv = ["--data", str(tmp_path / name), "--model", str(tiny_pixel_repo), "--quiet", *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err
