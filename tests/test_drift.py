"""`conjure drift` and `drift_report`: which prompts a fine-tune moved, per checkpoint and group."""

import base64
import contextlib
import io
import json
import math
import os
import shutil
from html.parser import HTMLParser

import pytest
import torch

import conjure_metrics.drift.run as drift_run
from conjure_metrics import conjure_similarity
from conjure_metrics.cli import main
from conjure_metrics.drift import drift_report, read_prompts
from conjure_metrics.drift.checkpoints import order_checkpoints, parse_step
from conjure_metrics.functional import score_pairs
from conjure_metrics.settings import ConjureSettings
from conjure_metrics.tiny import build_tiny_components, save_tiny_model

TARGET = ["a photo of sks dog", "a sks dog on the beach"]
PRESERVE = ["a red fox", "a sign that says: open"]
PROMPTS = TARGET + PRESERVE
SETTINGS = dict(num_steps=3, num_samples=2)
FAST = ["--steps", "3", "--samples", "2"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _save_perturbed(path, scale):
    """A 'fine-tuned' copy of the tiny base: its UNet weights moved by ``scale`` times Gaussian noise."""
    components = build_tiny_components()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in components["unet"].parameters():
            parameter.add_(scale * torch.randn(parameter.shape, generator=generator))
    save_tiny_model(path)  # model_index.json and the unchanged parts
    components["unet"].save_pretrained(path / "unet")
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """base, checkpoint-0 (a copy of the base), checkpoint-100 and checkpoint-200 (moved further)."""
    folder = tmp_path_factory.mktemp("drift_models")
    base = save_tiny_model(folder / "base")
    same = folder / "checkpoint-0"
    shutil.copytree(base, same)
    return {
        "base": base,
        "checkpoint-0": same,
        "checkpoint-100": _save_perturbed(folder / "checkpoint-100", 0.01),
        "checkpoint-200": _save_perturbed(folder / "checkpoint-200", 0.03),
    }


def _prompts_file(folder, lines):
    path = folder / "prompts.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def full_run(models, tmp_path_factory):
    """One `conjure drift` run with every output, checkpoints given out of training order."""
    folder = tmp_path_factory.mktemp("drift_run")
    prompts = _prompts_file(
        folder,
        [
            "# what the fine-tune should change",
            *(f"target: {p}" for p in TARGET),
            "",
            *(f"preserve: {p}" for p in PRESERVE),
        ],
    )
    out = {name: folder / name for name in ("report.json", "drift.png", "report.html", "results.jsonl")}
    argv = [
        "drift",
        str(models["base"]),
        str(models["checkpoint-200"]),
        str(models["checkpoint-0"]),
        str(models["checkpoint-100"]),
        "--prompts",
        str(prompts),
        "--groups",
        "target,preserve",
        *FAST,
        "--json",
        str(out["report.json"]),
        "--plot",
        str(out["drift.png"]),
        "--report",
        str(out["report.html"]),
        "--results",
        str(out["results.jsonl"]),
        "--explain-top",
        "2",
        "--quiet",
    ]
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(argv) == 0
    return {
        "json": json.loads(out["report.json"].read_text(encoding="utf-8")),
        "stdout": stdout.getvalue(),
        "folder": folder,
        **out,
    }


# --- numbers -------------------------------------------------------------------------------------


def test_rows_are_sorted_by_drift_largest_first(full_run):
    drifts = [row["drift"] for row in full_run["json"]["rows"]]
    assert len(drifts) == 3 * len(PROMPTS)
    assert drifts == sorted(drifts, reverse=True)
    assert drifts[0] > 0


def test_each_row_is_what_conjure_similarity_with_model_b_reports(full_run, models):
    rows = full_run["json"]["rows"]
    for name in ("checkpoint-100", "checkpoint-200"):
        expected = conjure_similarity(PROMPTS, PROMPTS, str(models["base"]), model_b=str(models[name]), **SETTINGS)
        by_prompt = {r["prompt"]: r for r in rows if os.path.basename(r["checkpoint"]) == name}
        for i, prompt in enumerate(PROMPTS):
            assert by_prompt[prompt]["drift"] == pytest.approx(float(expected.divergence[i]), rel=1e-6)
            assert by_prompt[prompt]["stderr"] == pytest.approx(float(expected.stderr[i]), rel=1e-6)
            assert by_prompt[prompt]["similarity"] == pytest.approx(float(expected.similarity[i]), rel=1e-6)


def test_a_checkpoint_identical_to_the_base_drifts_exactly_zero(full_run):
    same = [r for r in full_run["json"]["rows"] if os.path.basename(r["checkpoint"]) == "checkpoint-0"]
    assert len(same) == len(PROMPTS)
    assert all(r["drift"] == 0 and r["similarity"] == 1 for r in same)
    assert all(r["drift"] > 0 for r in full_run["json"]["rows"] if r not in same)


def test_group_means_have_standard_errors_over_the_shared_samples(full_run, models):
    groups = full_run["json"]["groups"]
    name = "checkpoint-200"
    expected = conjure_similarity(PROMPTS, PROMPTS, str(models["base"]), model_b=str(models[name]), **SETTINGS)
    samples = expected.terms.samples("simple")  # (prompts, samples)
    for group, members in (("target", [0, 1]), ("preserve", [2, 3])):
        row = next(g for g in groups if g["group"] == group and os.path.basename(g["checkpoint"]) == name)
        per_sample = samples[members].mean(dim=0)
        assert row["prompts"] == 2
        assert row["mean_drift"] == pytest.approx(float(expected.divergence[members].mean()), rel=1e-6)
        assert row["stderr"] == pytest.approx(float(per_sample.std() / math.sqrt(len(per_sample))), rel=1e-6)


def test_specificity_is_target_mean_drift_over_preserve_mean_drift(full_run):
    report = full_run["json"]
    for entry in report["specificity"]:
        means = {g["group"]: g["mean_drift"] for g in report["groups"] if g["checkpoint"] == entry["checkpoint"]}
        if means["preserve"] == 0:
            assert entry["value"] is None  # checkpoint-0: nothing moved, no ratio
        else:
            assert entry["value"] == pytest.approx(means["target"] / means["preserve"], rel=1e-9)
            assert entry["stderr"] is not None and entry["stderr"] >= 0
    assert sum(entry["value"] is not None for entry in report["specificity"]) == 2


def test_onset_is_the_first_checkpoint_reaching_half_the_largest_group_drift(full_run):
    report = full_run["json"]
    for group, onset in report["onset"].items():
        means = [g["mean_drift"] for g in report["groups"] if g["group"] == group]  # in training order
        first = next(i for i, m in enumerate(means) if m >= max(means) / 2)
        assert onset == report["checkpoints"][first]["name"]


def test_checkpoints_are_ordered_by_the_step_in_their_names(full_run):
    checkpoints = full_run["json"]["checkpoints"]
    assert [c["step"] for c in checkpoints] == [0, 100, 200]
    assert [os.path.basename(c["name"]) for c in checkpoints] == ["checkpoint-0", "checkpoint-100", "checkpoint-200"]


def test_names_without_distinct_steps_keep_the_order_given():
    assert parse_step("out/checkpoint-500/") == 500 and parse_step("lora-000300.safetensors") == 300
    assert parse_step("sd-v2") is None and parse_step("final") is None
    assert [info.name for _, info in order_checkpoints(["step-20", "step-10"])] == ["step-10", "step-20"]
    assert [(info.name, info.step) for _, info in order_checkpoints(["step-20", "final", "step-10"])] == [
        ("step-20", None),
        ("final", None),
        ("step-10", None),
    ]
    assert [info.step for _, info in order_checkpoints(["a/checkpoint-5", "b/checkpoint-5"])] == [None, None]


# --- outputs -------------------------------------------------------------------------------------


def test_json_holds_settings_prompts_rows_groups_and_explanations(full_run):
    report = full_run["json"]
    models_mode = ConjureSettings(**SETTINGS).for_mode("models")
    assert report["settings"]["num_steps"] == 3 and report["settings"]["num_samples"] == 2
    assert report["settings"]["min_noise"] == models_mode.min_noise
    assert report["settings"]["weighting"] == models_mode.weighting
    assert report["prompts"] == [{"prompt": p, "group": "target" if p in TARGET else "preserve"} for p in PROMPTS]
    assert all(len(r["samples"]) == 2 and r["drift"] == pytest.approx(sum(r["samples"]) / 2) for r in report["rows"])
    assert {g["group"] for g in report["groups"]} == {"target", "preserve"} and len(report["groups"]) == 6
    explained = report["explained"]
    top = report["rows"][0]
    assert len(explained) == 2 and len({e["prompt"] for e in explained}) == 2
    assert (explained[0]["prompt"], explained[0]["checkpoint"]) == (top["prompt"], top["checkpoint"])
    for entry in explained:  # the picture comes from the very estimate in the table
        row = next(
            r for r in report["rows"] if (r["prompt"], r["checkpoint"]) == (entry["prompt"], entry["checkpoint"])
        )
        assert entry["divergence_by_weighting"]["simple"] == pytest.approx(row["drift"], rel=1e-6)
    assert report["computed"] == 3 * len(PROMPTS) and report["reused"] == 0


def test_stdout_has_the_group_summary_and_every_row(full_run):
    lines = full_run["stdout"].splitlines()
    assert any(line.startswith("specificity (target / preserve)") for line in lines)
    for row in full_run["json"]["rows"]:
        assert sum(line.startswith(row["checkpoint"]) and row["prompt"] in line for line in lines) == 1


def test_plot_is_a_png(full_run):
    from PIL import Image

    data = full_run["drift.png"].read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    with Image.open(io.BytesIO(data)) as image:
        assert image.width > 300 and image.height > 200


class _Page(HTMLParser):
    """Every attribute and every table row (as cell texts) of an HTML page."""

    def __init__(self):
        super().__init__()
        self.tags, self.attributes, self.rows, self._row, self._cell = [], [], [], None, None

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attributes += [(tag, name, value or "") for name, value in attrs]
        if tag == "tr":
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = ""

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append(self._cell)
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None


def test_html_report_is_self_contained(full_run):
    text = full_run["report.html"].read_text(encoding="utf-8")
    page = _Page()
    page.feed(text)
    assert not {"script", "link", "iframe", "object"} & set(page.tags)
    assert "url(" not in text and "@import" not in text
    for tag, name, value in page.attributes:
        assert not (name in ("src", "href") and "http" in value), (tag, name, value[:80])
    images = [value for tag, name, value in page.attributes if tag == "img" and name == "src"]
    assert len(images) == 1 + 2  # the plot and two explanations
    for source in images:
        assert source.startswith("data:image/png;base64,")
        assert base64.b64decode(source.split(",", 1)[1]).startswith(PNG_SIGNATURE)


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def test_html_report_holds_every_row_and_the_settings(full_run):
    page = _Page()
    page.feed(full_run["report.html"].read_text(encoding="utf-8"))
    for row in full_run["json"]["rows"]:
        matching = [cells for cells in page.rows if row["checkpoint"] in cells and row["prompt"] in cells]
        assert len(matching) == 1, row
        numbers = [float(c) for c in matching[0] if _is_number(c)]
        assert any(n == pytest.approx(row["drift"], rel=1e-3, abs=1e-12) for n in numbers)
    settings = {cells[0]: cells[1] for cells in page.rows if len(cells) == 2}
    assert settings["num_steps"] == "3" and settings["min_noise"] == repr(full_run["json"]["settings"]["min_noise"])
    assert any(cells[0].startswith("specificity") for cells in page.rows)


def test_outputs_are_written_whole_with_no_temporary_files_left(full_run):
    names = sorted(os.listdir(full_run["folder"]))
    assert names == ["drift.png", "prompts.txt", "report.html", "report.json", "results.jsonl"]


# --- resuming ------------------------------------------------------------------------------------


class _Killed(Exception):
    """What a killed process would leave behind: the chunks scored so far."""


class _CountingScorer:
    """Stands in for score_pairs: counts the chunks scored and raises after ``fail_after`` of them."""

    def __init__(self, fail_after=None):
        self.calls, self.fail_after = 0, fail_after

    def __call__(self, *args, **kwargs):
        if self.fail_after is not None and self.calls == self.fail_after:
            raise _Killed(f"killed after {self.calls} chunks")
        self.calls += 1
        return score_pairs(*args, **kwargs)


def _run_api(models, monkeypatch, scorer, checkpoints=("checkpoint-100", "checkpoint-200"), **options):
    monkeypatch.setattr(drift_run, "score_pairs", scorer)
    return drift_report(
        str(models["base"]),
        [str(models[name]) for name in checkpoints],
        PROMPTS,
        ["target"] * 2 + ["preserve"] * 2,
        chunk_size=2,
        progress_bar=False,
        **SETTINGS,
        **options,
    )


def _numbers(report):
    return {k: v for k, v in report.to_dict().items() if k not in ("computed", "reused")}


def test_a_killed_run_resumes_where_it_stopped(models, tmp_path, monkeypatch):
    uninterrupted = _CountingScorer()
    reference = _run_api(models, monkeypatch, uninterrupted)
    assert uninterrupted.calls == 4  # 2 checkpoints x 2 chunks of 2 prompts

    results = tmp_path / "results.jsonl"
    with pytest.raises(_Killed):
        _run_api(models, monkeypatch, _CountingScorer(fail_after=3), results_path=results)
    assert len(results.read_text().splitlines()) == 3 * 2  # three chunks were saved

    resumed_scorer = _CountingScorer()
    resumed = _run_api(models, monkeypatch, resumed_scorer, results_path=results)
    assert resumed_scorer.calls == 1
    assert (resumed.computed, resumed.reused) == (2, 6)
    assert _numbers(resumed) == _numbers(reference)


def test_a_finished_run_loads_no_model_when_run_again(models, tmp_path, monkeypatch):
    results = tmp_path / "results.jsonl"
    first = _run_api(models, monkeypatch, _CountingScorer(), results_path=results)
    loads = []
    monkeypatch.setattr(drift_run, "load_denoiser", lambda *a, **k: loads.append(a) or pytest.fail("loaded a model"))
    again = _run_api(models, monkeypatch, _CountingScorer(fail_after=0), results_path=results)
    assert loads == [] and _numbers(again) == _numbers(first) and again.reused == 8


@pytest.mark.parametrize(
    "damage", [{"samples": None}, {"samples": [0.1]}, {"samples": ["abc", 0.2]}, {"stderr": "n/a"}], ids=str
)
def test_a_results_record_without_usable_samples_is_scored_again(models, tmp_path, monkeypatch, damage):
    results = tmp_path / "results.jsonl"
    first = _run_api(models, monkeypatch, _CountingScorer(), results_path=results)
    lines = results.read_text().splitlines()
    record = json.loads(lines[0])
    for name, value in damage.items():
        if value is None:
            del record[name]
        else:
            record[name] = value
    results.write_text("\n".join([json.dumps(record), *lines[1:]]) + "\n")
    scorer = _CountingScorer()
    with pytest.warns(UserWarning, match=r"results.jsonl:1\b"):
        again = _run_api(models, monkeypatch, scorer, results_path=results)
    assert scorer.calls == 1 and (again.computed, again.reused) == (1, 7)
    assert _numbers(again) == _numbers(first)


def test_results_of_other_settings_or_a_resaved_checkpoint_are_not_reused(models, tmp_path, monkeypatch):
    copy = shutil.copytree(models["checkpoint-100"], tmp_path / "checkpoint-100")
    models = dict(models, copy=copy)
    results = tmp_path / "results.jsonl"
    runs = {}
    for name, options in (("first", {}), ("other seed", dict(seed=1)), ("unchanged", {}), ("resaved", {})):
        if name == "resaved":  # as a training script saving the same checkpoint again would
            weights = copy / "unet" / "diffusion_pytorch_model.safetensors"
            os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
        runs[name] = _CountingScorer()
        _run_api(models, monkeypatch, runs[name], checkpoints=["copy"], results_path=results, **options)
    assert {name: scorer.calls for name, scorer in runs.items()} == {
        "first": 2,
        "other seed": 2,
        "unchanged": 0,
        "resaved": 2,
    }


# --- progress ------------------------------------------------------------------------------------


def test_progress_is_one_line_per_stage_on_stderr_and_quiet_silences_it(models, tmp_path, capsys):
    prompts = _prompts_file(tmp_path, ["a red fox"])
    argv = ["drift", str(models["base"]), str(models["checkpoint-100"]), "--prompts", str(prompts), *FAST]
    assert main(argv) == 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines and all(line.startswith("conjure drift: ") for line in lines)
    assert any("checkpoint-100" in line and "scoring 1 prompt" in line for line in lines)
    assert main(argv + ["--quiet"]) == 0
    assert capsys.readouterr().err == ""


# --- bad input -----------------------------------------------------------------------------------


@pytest.fixture
def no_loading(monkeypatch):
    """Fail the test if a model loads: bad input must be refused before any work."""
    monkeypatch.setattr(drift_run, "load_denoiser", lambda *a, **k: pytest.fail("a model was loaded"))


@pytest.mark.parametrize(
    "lines,groups,message",
    [
        (["target: a dog", "taget: a cat"], "target,preserve", "prompts.txt:2: unknown group 'taget'"),
        (["target: a dog", "a cat"], "target,preserve", "prompts.txt:2: no group label"),
        (["target: a dog", "target: a puppy"], "target,preserve", "group 'preserve' has no prompts"),
        (["target: a dog", "preserve: a dog"], None, "prompts.txt:2: prompt 'a dog' already given at"),
        (["target:", "preserve: a cat"], None, "prompts.txt:1: group label 'target' with no prompt"),
        (["# only a comment"], None, "no prompts"),
    ],
)
def test_bad_prompt_files_are_one_line_errors(lines, groups, message, models, tmp_path, capsys, no_loading):
    prompts = _prompts_file(tmp_path, lines)
    argv = ["drift", str(models["base"]), str(models["checkpoint-100"]), "--prompts", str(prompts), *FAST, "--quiet"]
    assert main(argv + (["--groups", groups] if groups else [])) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err


@pytest.mark.parametrize("option", ["--report", "--json", "--plot"])
def test_an_output_in_a_missing_directory_is_refused_before_any_work(option, models, tmp_path, capsys, no_loading):
    prompts = _prompts_file(tmp_path, ["a red fox"])
    missing = tmp_path / "no" / "such" / "out.file"
    argv = [
        "drift",
        str(models["base"]),
        str(models["checkpoint-100"]),
        "--prompts",
        str(prompts),
        option,
        str(missing),
        *FAST,
        "--quiet",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{option} {missing}" in err and "does not exist" in err
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize("role", ["checkpoint", "base"])
def test_a_missing_model_path_is_refused_before_any_work(role, models, tmp_path, capsys, no_loading):
    prompts = _prompts_file(tmp_path, ["a red fox"])
    missing = tmp_path / "checkpoint-300"
    paths = (
        [str(missing), str(models["checkpoint-100"])]
        if role == "base"
        else [str(models["base"]), str(models["checkpoint-100"]), str(missing)]
    )
    report = tmp_path / "report.json"
    assert main(["drift", *paths, "--prompts", str(prompts), "--json", str(report), *FAST, "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"conjure: error: {role} {missing}: no such file or directory"
    assert not report.exists()


def test_a_mistyped_relative_path_is_not_taken_for_a_hub_id(models, tmp_path, capsys, monkeypatch, no_loading):
    (tmp_path / "output").mkdir()
    monkeypatch.chdir(tmp_path)
    prompts = _prompts_file(tmp_path, ["a red fox"])
    assert main(["drift", str(models["base"]), "output/checkpoint-50", "--prompts", str(prompts), "--quiet"]) == 2
    assert (
        capsys.readouterr().err.strip() == "conjure: error: checkpoint output/checkpoint-50: no such file or directory"
    )


def test_the_same_checkpoint_twice_is_refused(models, tmp_path, capsys, no_loading):
    prompts = _prompts_file(tmp_path, ["a red fox"])
    checkpoint = str(models["checkpoint-100"])
    assert main(["drift", str(models["base"]), checkpoint, checkpoint, "--prompts", str(prompts), "--quiet"]) == 2
    assert "given twice" in capsys.readouterr().err


def test_a_failure_after_computing_writes_no_output(models, tmp_path, monkeypatch):
    from conjure_metrics.drift.report import DriftReport

    def broken(self):
        raise RuntimeError("rendering failed")

    monkeypatch.setattr(DriftReport, "html", broken)
    prompts = _prompts_file(tmp_path, ["a red fox"])
    argv = [
        "drift",
        str(models["base"]),
        str(models["checkpoint-100"]),
        "--prompts",
        str(prompts),
        *FAST,
        "--json",
        str(tmp_path / "r.json"),
        "--plot",
        str(tmp_path / "r.png"),
        "--report",
        str(tmp_path / "r.html"),
        "--explain-top",
        "0",
        "--quiet",
    ]
    with pytest.raises(RuntimeError, match="rendering failed"):
        main(argv)
    assert sorted(os.listdir(tmp_path)) == ["prompts.txt"]


# --- prompt files --------------------------------------------------------------------------------


def test_prompt_file_grammar(tmp_path):
    path = _prompts_file(
        tmp_path,
        [
            "# a comment",
            "",
            "Target: a photo of sks dog",
            "preserve:\ta sign that says: open",
            "a sign that says: closed",
            "\\note: it is raining",
            "\\# of cats",
            "https://example.org/a-photo.png",
            "target: note: keep the colon",
        ],
    )
    grouped = read_prompts(path)
    assert list(zip(grouped.prompts, grouped.groups)) == [
        ("a photo of sks dog", "target"),
        ("a sign that says: open", "preserve"),
        ("a sign that says: closed", "ungrouped"),
        ("note: it is raining", "ungrouped"),
        ("# of cats", "ungrouped"),
        ("https://example.org/a-photo.png", "ungrouped"),
        ("note: keep the colon", "target"),
    ]


def test_a_file_without_labels_is_one_group_named_all(tmp_path):
    grouped = read_prompts(_prompts_file(tmp_path, ["a dog", "a cat"]))
    assert grouped.groups == ("all", "all") and grouped.group_names == ("all",)


def test_tsv_prompt_files_have_a_group_column(tmp_path):
    path = tmp_path / "prompts.tsv"
    path.write_text("group\tprompt\tnote\ntarget\ta dog: sitting\tx\npreserve\ta cat\t\n\ta fox\t\n", encoding="utf-8")
    grouped = read_prompts(path)
    assert list(zip(grouped.prompts, grouped.groups)) == [
        ("a dog: sitting", "target"),
        ("a cat", "preserve"),
        ("a fox", "ungrouped"),
    ]
    with pytest.raises(ValueError, match=r"prompts.tsv:4: no group label; expected one of target, preserve"):
        read_prompts(path, expected_groups=["target", "preserve"])
    bad = tmp_path / "bad.tsv"
    bad.write_text("text\tgroup\na dog\ttarget\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.tsv:1: header has no 'prompt' column"):
        read_prompts(bad)
