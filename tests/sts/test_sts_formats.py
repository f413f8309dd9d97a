"""Readers of human-annotated similarity data: detection, parsing, skipped gold, errors naming file and line."""

import json
import sys

import pytest

from conjure_metrics.sts import detect_format, load_datasets

GLUE_HEADER = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2"
SICK_HEADER = "pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment"
SIMLEX_HEADER = "word1\tword2\tPOS\tSimLex999\tconc(w1)\tconc(w2)\tconcQ\tAssoc(USF)\tSimAssoc333\tSD(SimLex)"


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def _only(path, format="auto"):
    [dataset] = load_datasets(path, format)
    return dataset


def test_glue_stsb_dev_reads_sentences_and_scores_by_header(tmp_path):
    path = _write(
        tmp_path / "dev.tsv",
        GLUE_HEADER + "\tscore\n"
        "0\tmain-captions\tMSRvid\t2012test\t0000\tnone\tnone\tA man with a hard hat is dancing.\t"
        "A man wearing a hard hat is dancing.\t5.000\n"
        "1\tmain-captions\tMSRvid\t2012test\t0002\tnone\tnone\tA young child is riding a horse.\t"
        "A child is riding a horse.\t4.750\n",
    )
    assert detect_format(path) == "stsb-glue"
    dataset = _only(path)
    assert dataset.name == "STS-B dev" and dataset.group == "STS-B dev"
    assert dataset.sentences_a == ("A man with a hard hat is dancing.", "A young child is riding a horse.")
    assert dataset.sentences_b[1] == "A child is riding a horse." and dataset.scores == (5.0, 4.75)


def test_glue_test_split_without_scores_is_refused_with_the_reason(tmp_path):
    path = _write(tmp_path / "test.tsv", GLUE_HEADER + "\n0\tmain-captions\tMSRvid\t2012test\t0024\tnone\tnone\ta\tb\n")
    with pytest.raises(ValueError, match=r"test\.tsv: .*no 'score' column.*withholds the labels.*sts-test\.csv"):
        load_datasets(path)


def test_original_stsb_csv_uses_columns_five_to_seven_and_ignores_extra_columns(tmp_path):
    path = _write(
        tmp_path / "sts-test.csv",
        "main-captions\tMSRvid\t2012test\t0001\t5.000\tA girl is styling her hair.\tA girl is brushing her hair.\n"
        "main-news\theadlines\t2013\t0042\t0.600\tSnowden in Moscow\tObama visits Asia\tsource-a\tsource-b\n",
    )
    assert detect_format(path) == "stsb-csv"
    dataset = _only(path)
    assert dataset.name == "STS-B test"
    assert dataset.sentences_b == ("A girl is brushing her hair.", "Obama visits Asia") and dataset.scores == (5.0, 0.6)


def test_sick_full_file_keeps_only_its_test_rows(tmp_path):
    path = _write(
        tmp_path / "SICK.txt",
        SICK_HEADER + "\tSemEval_set\n"
        "1\tA dog runs\tA dog is running\t4.9\tENTAILMENT\tTRAIN\n"
        "2\tA man cooks\tA woman sings\t1.2\tNEUTRAL\tTEST\n"
        "3\tKids play\tChildren are playing\t4.5\tENTAILMENT\tTRIAL\n",
    )
    assert detect_format(path) == "sick"
    dataset = _only(path)
    assert dataset.name == "SICK-R" and dataset.sentences_a == ("A man cooks",) and dataset.scores == (1.2,)


def test_sick_test_annotated_reads_every_row(tmp_path):
    path = _write(
        tmp_path / "SICK_test_annotated.txt", SICK_HEADER + "\n6\tA b\tC d\t3.3\tNEUTRAL\n7\tE f\tG h\t2.0\tNEUTRAL\n"
    )
    assert _only(path).scores == (3.3, 2.0)


def _senteval(folder, name, inputs, golds):
    folder.mkdir(exist_ok=True)
    _write(folder / f"STS.input.{name}.txt", "".join(f"{a}\t{b}\n" for a, b in inputs))
    _write(folder / f"STS.gs.{name}.txt", "".join(f"{g}\n" for g in golds))


def test_senteval_skips_pairs_with_blank_gold_and_numbers_lines_from_the_file(tmp_path):
    folder = tmp_path / "STS13-en-test"
    _senteval(folder, "FNWN", [("a b", "c d"), ("unscored", "pair"), ("e f", "g h")], ["3.2", "", "0.4"])
    dataset = _only(folder / "STS.input.FNWN.txt")
    assert dataset.name == "STS13/FNWN" and dataset.group == "STS13"
    assert dataset.sentences_a == ("a b", "e f") and dataset.scores == (3.2, 0.4)


def test_senteval_directory_loads_one_dataset_per_subset_grouped_by_year(tmp_path):
    folder = tmp_path / "STS12-en-test"
    _senteval(folder, "MSRpar", [("a", "b"), ("c", "d")], ["4.0", "1.0"])
    _senteval(folder, "OnWN", [("e", "f")], ["2.5"])
    assert detect_format(folder) == "senteval"
    datasets = load_datasets(folder)
    assert [d.name for d in datasets] == ["STS12/MSRpar", "STS12/OnWN"]
    assert {d.group for d in datasets} == {"STS12"} and [len(d) for d in datasets] == [2, 1]


def test_senteval_gold_and_input_of_different_lengths_is_an_error(tmp_path):
    folder = tmp_path / "STS14-en-test"
    _senteval(folder, "images", [("a", "b"), ("c", "d")], ["4.0"])
    with pytest.raises(ValueError, match=r"STS\.gs\.images\.txt: 1 lines, but STS\.input\.images\.txt has 2"):
        load_datasets(folder)


def test_senteval_bad_gold_names_the_gold_file_and_line(tmp_path):
    folder = tmp_path / "STS15-en-test"
    _senteval(folder, "forums", [("a", "b"), ("c", "d")], ["4.0", "high"])
    with pytest.raises(ValueError, match=r"STS\.gs\.forums\.txt:2: score 'high' is not a number"):
        load_datasets(folder)


def test_jsonl_export_and_its_malformed_line(tmp_path):
    good = _write(
        tmp_path / "stsb_test.jsonl",
        "\n".join(
            json.dumps(r)
            for r in [
                {"sentence1": "a cat", "sentence2": "a kitten", "score": 4.5, "split": "test"},
                {"sentence1": "a cat", "sentence2": "a truck", "score": 0.5},
            ]
        )
        + "\n",
    )
    dataset = _only(good)
    assert (
        dataset.name == "stsb_test" and dataset.sentences_b == ("a kitten", "a truck") and dataset.scores == (4.5, 0.5)
    )
    bad = _write(
        tmp_path / "bad.jsonl", '{"sentence1": "a", "sentence2": "b", "score": 1}\n{"sentence1": "a", "score": 2}\n'
    )
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: record has no 'sentence2' field"):
        load_datasets(bad)


def test_only_cr_and_lf_end_lines_not_unicode_separators_inside_a_sentence(tmp_path):
    # json.dumps(..., ensure_ascii=False) leaves U+2028 unescaped, as JSON allows.
    record = {"sentence1": "first line\u2028second line", "sentence2": "a form\x0cfeed", "score": 3.0}
    path = tmp_path / "separators.jsonl"
    path.write_text(json.dumps(record, ensure_ascii=False) + "\r\n", encoding="utf-8")
    dataset = _only(path)
    assert dataset.sentences_a == ("first line\u2028second line",) and dataset.sentences_b == ("a form\x0cfeed",)


def test_windows_1252_file_keeps_its_ellipsis_inside_the_line(tmp_path):
    path = tmp_path / "sts-dev.csv"
    line = "main-news\theadlines\t2015\t0001\t2.500\tWait\u2026 what?\tWhat now?\n"
    path.write_bytes(line.encode("cp1252"))  # the ellipsis is byte 0x85, U+0085 (a line break) in Latin-1
    dataset = _only(path)
    assert dataset.sentences_a == ("Wait\u2026 what?",) and dataset.scores == (2.5,)


def test_parquet_export_reads_the_same_columns(tmp_path):
    import pyarrow
    import pyarrow.parquet as parquet

    path = tmp_path / "sickr.parquet"
    parquet.write_table(pyarrow.table({"sentence1": ["a", "b"], "sentence2": ["c", "d"], "score": [1.0, 2.5]}), path)
    assert detect_format(path) == "parquet"
    assert _only(path).scores == (1.0, 2.5)


def test_parquet_without_pyarrow_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    path = _write(tmp_path / "x.parquet", "")
    with pytest.raises(ImportError, match=r"pyarrow.*conjure_metrics\[sts\]"):
        load_datasets(path)


def test_wordsim_tsv_with_comment_header(tmp_path):
    path = _write(
        tmp_path / "wordsim353.tsv", "# WordSim353\n# Word 1\tWord 2\tHuman (mean)\nlove\tsex\t6.77\ntiger\tcat\t7.35\n"
    )
    assert detect_format(path) == "wordsim"
    dataset = _only(path)
    assert dataset.name == "WordSim353" and dataset.sentences_a == ("love", "tiger") and dataset.scores == (6.77, 7.35)


def test_original_simlex_header_selects_the_simlex999_column(tmp_path):
    path = _write(tmp_path / "SimLex-999.txt", SIMLEX_HEADER + "\nold\tnew\tA\t1.58\t2.72\t2.81\t2\t7.25\t1\t0.41\n")
    assert detect_format(path) == "simlex"
    dataset = _only(path)
    assert dataset.name == "SimLex-999" and (dataset.sentences_a, dataset.sentences_b, dataset.scores) == (
        ("old",),
        ("new",),
        (1.58,),
    )


def test_simlex_short_line_names_file_and_line(tmp_path):
    path = _write(
        tmp_path / "SimLex-999.txt",
        SIMLEX_HEADER + "\nold\tnew\tA\t1.58\t2.72\t2.81\t2\t7.25\t1\t0.41\nsmart\tintelligent\n",
    )
    with pytest.raises(ValueError, match=r"SimLex-999\.txt:3: expected at least 10 tab-separated fields"):
        load_datasets(path)


@pytest.mark.parametrize(
    "name,text,line",
    [
        ("sts-dev.csv", "g\tf\t2012\t1\t4.0\ta\tb\ng\tf\t2012\t2\t4.0\tonly six fields\n", 2),
        ("dev.tsv", GLUE_HEADER + "\tscore\n0\tg\tf\ty\t0\tn\tn\ta\tb\tfive\n", 2),
        ("wordsim353.tsv", "# Word 1\tWord 2\tHuman (mean)\nlove\tsex\t6.77\nlonely\n", 3),
    ],
)
def test_malformed_line_error_names_file_and_line(tmp_path, name, text, line):
    path = _write(tmp_path / name, text)
    with pytest.raises(ValueError, match=rf"{name.replace('.', '[.]')}:{line}: "):
        load_datasets(path)


def test_format_can_be_forced_when_detection_cannot_tell(tmp_path):
    path = _write(tmp_path / "pairs.txt", "tiger\tcat\t7.35\n")
    assert _only(path, format="wordsim").scores == (7.35,)
    unknown = _write(tmp_path / "notes.txt", "just some text\n")
    with pytest.raises(ValueError, match=r"notes\.txt: cannot tell the format.*format="):
        load_datasets(unknown)
    with pytest.raises(ValueError, match="format must be 'auto' or one of"):
        load_datasets(path, format="csv")


def test_lee_matrix_of_the_wrong_size_is_an_error(tmp_path):
    _write(tmp_path / "lee.cor", "doc one\ndoc two\ndoc three\n")
    _write(tmp_path / "similarities0-1.txt", "1 0.5 0.2\n0 1 0.3\n0 0\n")
    with pytest.raises(ValueError, match=r"similarities0-1\.txt:3: 2 values, expected one per document \(3\)"):
        load_datasets(tmp_path)


def test_lee_pairs_are_the_upper_triangle(tmp_path):
    _write(tmp_path / "lee.cor", "doc one\ndoc two\ndoc three")
    _write(tmp_path / "similarities0-1.txt", "1 0.5 0.2\n0 1 0.3\n0 0 1\n")
    dataset = _only(tmp_path / "lee.cor")
    assert list(zip(dataset.sentences_a, dataset.sentences_b, dataset.scores)) == [
        ("doc one", "doc two", 0.5),
        ("doc one", "doc three", 0.2),
        ("doc two", "doc three", 0.3),
    ]


# Real human judgements, as shipped in gensim's test data.


@pytest.fixture(scope="module")
def gensim_data():
    from gensim.test.utils import datapath

    return datapath


def test_gensim_wordsim353_has_353_human_scored_word_pairs(gensim_data):
    dataset = _only(gensim_data("wordsim353.tsv"))
    assert dataset.name == "WordSim353" and len(dataset) == 353
    assert (dataset.sentences_a[1], dataset.sentences_b[1], dataset.scores[1]) == ("tiger", "cat", 7.35)
    assert min(dataset.scores) >= 0 and max(dataset.scores) == 10.0


def test_gensim_simlex999_has_999_pairs_on_a_0_to_10_scale(gensim_data):
    dataset = _only(gensim_data("simlex999.txt"))
    assert dataset.name == "SimLex-999" and len(dataset) == 999
    assert (dataset.sentences_a[0], dataset.sentences_b[0], dataset.scores[0]) == ("old", "new", 1.58)
    assert 0 <= min(dataset.scores) and max(dataset.scores) <= 10


def test_gensim_lee_corpus_gives_1225_document_pairs_from_either_file(gensim_data):
    from_documents = _only(gensim_data("lee.cor"))
    from_matrix = _only(gensim_data("similarities0-1.txt"))
    assert len(from_documents) == 50 * 49 // 2 and from_documents == from_matrix
    assert from_documents.sentences_a[0].startswith("The national executive of the strife-torn Democrats")
    assert from_documents.scores[:3] == (0.3, 0.24, 0.2)
