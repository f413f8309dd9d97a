"""Readers for human-annotated similarity data in the formats people have on disk.

Every reader returns :class:`SimilarityDataset` objects: two lists of texts and the human score of
each pair. :func:`load_datasets` tells the format from the file name and first line (or takes it
from ``format=``); a malformed file raises ``ValueError`` naming the file and the line.

=============  ===================================================================================
format         files
=============  ===================================================================================
``stsb-glue``  STS-B from GLUE: ``train.tsv`` / ``dev.tsv`` (columns ``sentence1``, ``sentence2``,
               ``score``). GLUE's ``test.tsv`` has no scores and is refused.
``stsb-csv``   STS-B as distributed: ``sts-train.csv`` / ``sts-dev.csv`` / ``sts-test.csv``, tab
               separated, no header: genre, file, year, id, score, sentence 1, sentence 2 (extra
               trailing columns ignored).
``sick``       ``SICK.txt`` / ``SICK_test_annotated.txt``: header with ``sentence_A``,
               ``sentence_B``, ``relatedness_score``. ``SICK.txt`` holds all SemEval splits; only its
               ``TEST`` rows are read (the SICK-R benchmark split).
``senteval``   STS12–16 in SentEval layout: ``STS.input.<name>.txt`` (two tab-separated sentences per
               line) with ``STS.gs.<name>.txt`` (one score per line; pairs with a blank score are
               skipped). A directory of them gives one dataset per ``<name>``, grouped by year.
``jsonl``      MTEB-style export: one JSON object per line with ``sentence1``, ``sentence2``, ``score``.
``parquet``    the same columns in Parquet (needs ``pyarrow``).
``wordsim``    WordSim353 TSV: ``Word 1``, ``Word 2``, ``Human (mean)`` (``#`` comment lines allowed).
``simlex``     SimLex-999: header ``word1 word2 POS SimLex999 ...``.
``lee``        the Lee corpus: ``lee.cor`` (50 documents, one per line) and ``similarities0-1.txt``
               (50×50 human similarity matrix); the pairs are its upper triangle (1225 pairs).
=============  ===================================================================================

Example:
    >>> import pathlib, tempfile
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "pairs.jsonl").write_text(
    ...     '{"sentence1": "a cat", "sentence2": "a kitten", "score": 4.5}\\n'
    ...     '{"sentence1": "a cat", "sentence2": "a truck", "score": 0.2}\\n')
    >>> [dataset] = load_datasets(folder / "pairs.jsonl")
    >>> dataset.name, len(dataset), dataset.scores
    ('pairs', 2, (4.5, 0.2))
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

FORMATS: tuple[str, ...] = (
    "stsb-glue",
    "stsb-csv",
    "sick",
    "senteval",
    "jsonl",
    "parquet",
    "wordsim",
    "simlex",
    "lee",
)

_SENTEVAL_INPUT = re.compile(r"^STS\.input\.(?P<name>.+)\.txt$")
_SENTEVAL_GOLD = re.compile(r"^STS\.gs\.(?P<name>.+)\.txt$")
_LEE_DOCUMENTS, _LEE_MATRIX = "lee.cor", "similarities0-1.txt"


@dataclass(frozen=True)
class SimilarityDataset:
    """Text pairs with human similarity scores.

    ``group`` names the column of the results table the dataset belongs to: its own ``name``, except
    for SentEval subsets, which pool into their year (``STS12`` ... ``STS16``) as in SimCSE's "all" setting.
    """

    name: str
    sentences_a: tuple[str, ...]
    sentences_b: tuple[str, ...]
    scores: tuple[float, ...]
    source: str = ""
    group: str = ""

    def __post_init__(self) -> None:
        if not (len(self.sentences_a) == len(self.sentences_b) == len(self.scores)):
            raise ValueError(f"{self.name}: sentences_a, sentences_b and scores differ in length")
        if not self.group:
            object.__setattr__(self, "group", self.name)

    def __len__(self) -> int:
        return len(self.scores)


class _Pairs:
    """Collects pairs while a reader walks a file, and builds the dataset (refusing an empty one)."""

    def __init__(self, path: Path, name: str, group: str = "") -> None:
        self.path, self.name, self.group = path, name, group
        self.a: list[str] = []
        self.b: list[str] = []
        self.scores: list[float] = []

    def add(self, first: str, second: str, score: str, line: int, where: Path | None = None) -> None:
        self.a.append(first.strip())
        self.b.append(second.strip())
        self.scores.append(_score(score, where or self.path, line))

    def dataset(self) -> SimilarityDataset:
        if not self.scores:
            raise ValueError(f"{self.path}: no scored pairs found")
        return SimilarityDataset(
            self.name, tuple(self.a), tuple(self.b), tuple(self.scores), str(self.path), self.group
        )


def _score(text: str, path: Path, line: int) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{path}:{line}: score {text.strip()!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{path}:{line}: score {text.strip()!r} is not finite")
    return value


def _fields(path: Path, line: int, text: str, minimum: int, what: str) -> list[str]:
    fields = text.rstrip("\r\n").split("\t")
    if len(fields) < minimum:
        raise ValueError(
            f"{path}:{line}: expected at least {minimum} tab-separated fields ({what}), found {len(fields)}"
        )
    return fields


def _lines(path: Path) -> list[str]:
    """Lines of a text file; a few old distributions (lee.cor) are Windows-1252 or Latin-1, not UTF-8.

    Only CR, LF and CRLF end a line (:func:`split_lines`): JSON strings may hold U+2028 unescaped,
    and a Windows-1252 ellipsis decodes to U+0085 under Latin-1.
    """
    data = path.read_bytes()
    for encoding in ("utf-8-sig", "cp1252", "latin-1"):
        try:
            text = data.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    return split_lines(text)


def check_regular_file(path: str | os.PathLike, option: str | None = None) -> None:
    """Refuse anything but an existing regular file: reading a FIFO or a terminal device would block
    forever, a directory or ``/dev/null`` would read as nothing."""
    where = f"{option} {os.fspath(path)}" if option else os.fspath(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"{where}: no such file or directory") from None
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(f"{where}: is a directory, not a file")
    if not stat.S_ISREG(mode):
        raise ValueError(f"{where}: not a regular file (a pipe, device or socket); give a text file")


def split_lines(text: str) -> list[str]:
    """Lines ended by CR, LF or CRLF only (``str.splitlines`` also cuts at U+2028, U+0085, form feeds)."""
    lines = re.split(r"\r\n|\r|\n", text)
    return lines[:-1] if lines and lines[-1] == "" else lines


def _header_index(path: Path, header: list[str], wanted: dict[str, str]) -> dict[str, int]:
    missing = [column for column in wanted.values() if column not in header]
    if missing:
        raise ValueError(f"{path}:1: header has no column {missing[0]!r} (columns: {', '.join(header)})")
    return {key: header.index(column) for key, column in wanted.items()}


def read_stsb_glue(path: Path) -> list[SimilarityDataset]:
    lines = _lines(path)
    if not lines:
        raise ValueError(f"{path}: empty file")
    header = lines[0].split("\t")
    if "score" not in header and {"sentence1", "sentence2"} <= set(header):
        raise ValueError(
            f"{path}: this STS-B file has no 'score' column (GLUE's test.tsv withholds the labels); "
            "benchmark on dev.tsv, or on sts-test.csv from the original STS benchmark, which has them"
        )
    columns = _header_index(path, header, {"a": "sentence1", "b": "sentence2", "score": "score"})
    pairs = _Pairs(path, f"STS-B {path.stem}")
    for number, text in enumerate(lines[1:], start=2):
        if not text.strip():
            continue
        fields = _fields(path, number, text, len(header), "the header's columns")
        pairs.add(fields[columns["a"]], fields[columns["b"]], fields[columns["score"]], number)
    return [pairs.dataset()]


def read_stsb_csv(path: Path) -> list[SimilarityDataset]:
    split = path.stem.removeprefix("sts-")
    pairs = _Pairs(path, f"STS-B {split}" if path.stem.startswith("sts-") else path.stem)
    for number, text in enumerate(_lines(path), start=1):
        if not text.strip():
            continue
        fields = _fields(path, number, text, 7, "genre, file, year, id, score, sentence 1, sentence 2")
        pairs.add(fields[5], fields[6], fields[4], number)
    return [pairs.dataset()]


def read_sick(path: Path) -> list[SimilarityDataset]:
    lines = _lines(path)
    if not lines:
        raise ValueError(f"{path}: empty file")
    header = lines[0].split("\t")
    columns = _header_index(path, header, {"a": "sentence_A", "b": "sentence_B", "score": "relatedness_score"})
    split_column = header.index("SemEval_set") if "SemEval_set" in header else None
    pairs = _Pairs(path, "SICK-R")
    for number, text in enumerate(lines[1:], start=2):
        if not text.strip():
            continue
        fields = _fields(path, number, text, len(header), "the header's columns")
        if split_column is not None and fields[split_column].strip().upper() != "TEST":
            continue
        pairs.add(fields[columns["a"]], fields[columns["b"]], fields[columns["score"]], number)
    return [pairs.dataset()]


def _senteval_group(folder: Path) -> str:
    year = re.search(r"STS1[2-6]", folder.name, flags=re.IGNORECASE)
    return year.group(0).upper() if year else folder.name


def _read_senteval_pair(input_path: Path, gold_path: Path, name: str, group: str) -> SimilarityDataset:
    inputs, golds = _lines(input_path), _lines(gold_path)
    # Trailing blank lines are common at the end of files; inner ones are the unscored pairs.
    while golds and not golds[-1].strip() and len(golds) > len(inputs):
        golds.pop()
    if len(inputs) != len(golds):
        raise ValueError(f"{gold_path}: {len(golds)} lines, but {input_path.name} has {len(inputs)}")
    pairs = _Pairs(input_path, f"{group}/{name}" if group else name, group)
    for number, (text, gold) in enumerate(zip(inputs, golds), start=1):
        if not gold.strip():
            continue
        fields = _fields(input_path, number, text, 2, "two sentences")
        pairs.add(fields[0], fields[1], gold, number, where=gold_path)
    return pairs.dataset()


def read_senteval(path: Path) -> list[SimilarityDataset]:
    if path.is_dir():
        names = sorted(m.group("name") for p in path.iterdir() if (m := _SENTEVAL_INPUT.match(p.name)))
        if not names:
            raise ValueError(f"{path}: no STS.input.<name>.txt files in this directory")
        folder, group = path, _senteval_group(path)
    else:
        match = _SENTEVAL_INPUT.match(path.name) or _SENTEVAL_GOLD.match(path.name)
        if not match:
            raise ValueError(f"{path}: SentEval files are named STS.input.<name>.txt and STS.gs.<name>.txt")
        names, folder, group = [match.group("name")], path.parent, _senteval_group(path.parent)
    datasets = []
    for name in names:
        gold = folder / f"STS.gs.{name}.txt"
        if not gold.is_file():
            raise FileNotFoundError(f"{gold}: gold scores missing for {folder / f'STS.input.{name}.txt'}")
        datasets.append(_read_senteval_pair(folder / f"STS.input.{name}.txt", gold, name, group))
    return datasets


def _dataset_from_records(path: Path, records: list[tuple[int, dict]]) -> SimilarityDataset:
    pairs = _Pairs(path, path.stem)
    for number, record in records:
        missing = [key for key in ("sentence1", "sentence2", "score") if key not in record]
        if missing:
            raise ValueError(f"{path}:{number}: record has no {missing[0]!r} field")
        if not isinstance(record["sentence1"], str) or not isinstance(record["sentence2"], str):
            raise ValueError(f"{path}:{number}: 'sentence1' and 'sentence2' must be strings")
        pairs.add(record["sentence1"], record["sentence2"], str(record["score"]), number)
    return pairs.dataset()


def read_jsonl(path: Path) -> list[SimilarityDataset]:
    records = []
    for number, text in enumerate(_lines(path), start=1):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{number}: not valid JSON ({error.msg})") from None
        if not isinstance(record, dict):
            raise ValueError(f"{path}:{number}: expected a JSON object")
        records.append((number, record))
    return [_dataset_from_records(path, records)]


def read_parquet(path: Path) -> list[SimilarityDataset]:
    try:
        import pyarrow.parquet as parquet
    except ImportError:
        raise ImportError(
            f"{path}: reading Parquet needs pyarrow: pip install pyarrow (or conjure_metrics[sts])"
        ) from None
    rows = parquet.read_table(path).to_pylist()
    # Rows are numbered from 1 like lines, so errors read the same as for JSONL.
    return [_dataset_from_records(path, list(enumerate(rows, start=1)))]


def _word_pairs_name(path: Path) -> str:
    stem = path.stem.lower()
    if "simlex" in stem:
        return "SimLex-999"
    if "wordsim" in stem or "ws353" in stem or stem == "combined":
        return "WordSim353"
    return path.stem


def read_wordsim(path: Path) -> list[SimilarityDataset]:
    pairs = _Pairs(path, _word_pairs_name(path))
    for number, text in enumerate(_lines(path), start=1):
        if not text.strip() or text.startswith("#") or text.lower().startswith("word 1"):
            continue
        fields = text.split("\t") if "\t" in text else text.split()
        if len(fields) < 3:
            raise ValueError(f"{path}:{number}: expected word 1, word 2 and a score, found {len(fields)} field(s)")
        pairs.add(fields[0], fields[1], fields[2], number)
    return [pairs.dataset()]


def read_simlex(path: Path) -> list[SimilarityDataset]:
    lines = _lines(path)
    if not lines:
        raise ValueError(f"{path}: empty file")
    header = lines[0].split("\t")
    columns = _header_index(path, header, {"a": "word1", "b": "word2", "score": "SimLex999"})
    pairs = _Pairs(path, _word_pairs_name(path))
    for number, text in enumerate(lines[1:], start=2):
        if not text.strip():
            continue
        fields = _fields(path, number, text, len(header), "the header's columns")
        pairs.add(fields[columns["a"]], fields[columns["b"]], fields[columns["score"]], number)
    return [pairs.dataset()]


def read_lee(path: Path) -> list[SimilarityDataset]:
    folder = path if path.is_dir() else path.parent
    documents_path, matrix_path = folder / _LEE_DOCUMENTS, folder / _LEE_MATRIX
    for needed in (documents_path, matrix_path):
        if not needed.is_file():
            raise FileNotFoundError(f"{needed}: the Lee corpus needs {_LEE_DOCUMENTS} and {_LEE_MATRIX} side by side")
    documents = [line.strip() for line in _lines(documents_path) if line.strip()]
    matrix = []
    for number, text in enumerate(_lines(matrix_path), start=1):
        if not text.strip():
            continue
        row = text.split()
        if len(row) != len(documents):
            raise ValueError(f"{matrix_path}:{number}: {len(row)} values, expected one per document ({len(documents)})")
        matrix.append([_score(value, matrix_path, number) for value in row])
    if len(matrix) != len(documents):
        raise ValueError(
            f"{matrix_path}: {len(matrix)} rows, expected one per document in {documents_path.name} ({len(documents)})"
        )
    pairs = _Pairs(documents_path, "Lee")
    for i in range(len(documents)):
        for j in range(i + 1, len(documents)):
            pairs.a.append(documents[i])
            pairs.b.append(documents[j])
            pairs.scores.append(matrix[i][j])
    return [pairs.dataset()]


_READERS: dict[str, Callable[[Path], list[SimilarityDataset]]] = {
    "stsb-glue": read_stsb_glue,
    "stsb-csv": read_stsb_csv,
    "sick": read_sick,
    "senteval": read_senteval,
    "jsonl": read_jsonl,
    "parquet": read_parquet,
    "wordsim": read_wordsim,
    "simlex": read_simlex,
    "lee": read_lee,
}


def _first_line(path: Path) -> str:
    with open(path, "rb") as handle:
        return handle.readline().decode("utf-8", errors="replace").lstrip("\ufeff").rstrip("\r\n")


def detect_format(path: str | os.PathLike) -> str:
    """The format of ``path`` (one of :data:`FORMATS`), from its name and first line.

    Example:
        >>> import pathlib, tempfile
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "SimLex-999.txt"
        >>> _ = path.write_text("word1\\tword2\\tPOS\\tSimLex999\\nold\\tnew\\tA\\t1.58\\n")
        >>> detect_format(path)
        'simlex'
    """
    path = Path(path)
    if path.is_dir():
        names = {p.name for p in path.iterdir()}
        if any(_SENTEVAL_INPUT.match(name) for name in names):
            return "senteval"
        if {_LEE_DOCUMENTS, _LEE_MATRIX} <= names:
            return "lee"
        raise ValueError(
            f"{path}: a directory must hold SentEval STS.input.*.txt files or {_LEE_DOCUMENTS} + {_LEE_MATRIX}"
        )
    check_regular_file(path)
    name = path.name
    if _SENTEVAL_INPUT.match(name) or _SENTEVAL_GOLD.match(name):
        return "senteval"
    if name in (_LEE_DOCUMENTS, _LEE_MATRIX):
        return "lee"
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        return "jsonl"
    if suffix == ".parquet":
        return "parquet"
    first = _first_line(path)
    header = [field.strip() for field in first.lstrip("#").split("\t")]
    if {"sentence_A", "sentence_B"} <= set(header):
        return "sick"
    if {"sentence1", "sentence2"} <= set(header):
        return "stsb-glue"
    if header[:2] == ["word1", "word2"] and "SimLex999" in header:
        return "simlex"
    if [h.lower() for h in header[:2]] == ["word 1", "word 2"]:
        return "wordsim"
    fields = first.split("\t")
    if re.fullmatch(r"sts-\w+\.csv", name) or (len(fields) >= 7 and _is_number(fields[4])):
        return "stsb-csv"
    if first.startswith("#") or (len(fields) == 3 and _is_number(fields[2])):
        return "wordsim"
    raise ValueError(
        f"{path}: cannot tell the format from its name or first line; pass format= one of {', '.join(FORMATS)}"
    )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def load_datasets(path: str | os.PathLike, format: str = "auto") -> list[SimilarityDataset]:
    """Read the similarity dataset(s) at ``path``: a file, or a SentEval / Lee directory.

    ``format`` is one of :data:`FORMATS`, or ``"auto"`` to detect it (:func:`detect_format`).
    Returns a list because a SentEval directory holds several datasets.
    """
    path = Path(path)
    if format == "auto":
        format = detect_format(path)
    if format not in _READERS:
        raise ValueError(f"format must be 'auto' or one of {', '.join(FORMATS)}, got {format!r}")
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or directory")
    if path.is_dir() and format not in ("senteval", "lee"):
        raise ValueError(f"{path}: is a directory; format {format!r} reads a file")
    if not path.is_dir():
        check_regular_file(path)
    return _READERS[format](path)
