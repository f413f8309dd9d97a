"""Every bad input is one clear line naming what is wrong (issue #15): a ValueError / TypeError from the
Python API, ``conjure: error: ...`` and exit status 2 from the CLI, no traceback, no metric state changed."""

from __future__ import annotations

import errno
import io
import json
import os
import threading
import time
import warnings

import pytest
import torch

from conjure_metrics import ConjureSimilarity, conjure_similarity
from conjure_metrics.chains import ddpm_chain, leading_timesteps, linear_betas
from conjure_metrics.cli import main
from conjure_metrics.cli.running import Stages
from conjure_metrics.denoisers.callable import CallableDenoiser
from conjure_metrics.denoisers.diffusers import DiffusersDenoiser
from conjure_metrics.denoisers.flux import FluxDenoiser
from conjure_metrics.denoisers.registry import check_loading_options, pipeline_class_name
from conjure_metrics.functional import check_chain_settings
from conjure_metrics.settings import MAX_NUM_STEPS, ConjureSettings
from conjure_metrics.sts.formats import load_datasets
from conjure_metrics.sts.results import ResultsFile
from conjure_metrics.validation import check_progress_bar, check_prompts
from tests.helpers import assert_same_state, gaussian_model, snapshot_state

FAST = dict(num_steps=4, num_samples=2, guidance_scale=1.0)


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("conjure: error: ")
    return err


@pytest.fixture
def model():
    return gaussian_model(dim=4)


@pytest.fixture
def metric(model):
    metric = ConjureSimilarity(model, **FAST)
    metric.update(["tiger"], ["zebra"])
    return metric


# 1. num_steps -------------------------------------------------------------------------------------


def test_num_steps_above_the_training_schedule_is_refused_naming_num_steps(model):
    with pytest.raises(ValueError, match="num_steps .*1000 training timesteps, got 1001"):
        conjure_similarity(["tiger"], ["zebra"], model, num_steps=1001, num_samples=1, guidance_scale=1.0)


def test_num_steps_equal_to_the_training_schedule_gives_every_timestep_once(model):
    assert sorted(model.reverse_chain(1000).timesteps.tolist()) == list(range(1000))


def test_a_metric_with_num_steps_above_the_training_schedule_is_refused_at_construction(model):
    with pytest.raises(ValueError, match="num_steps"):
        ConjureSimilarity(model, num_steps=1001, num_samples=1)


@pytest.mark.parametrize("num_steps", [MAX_NUM_STEPS + 1, 10**6, 2**63])
def test_num_steps_beyond_the_settings_bound_is_refused_before_any_chain_is_built(num_steps, model, monkeypatch):
    def no_chain(_):
        raise AssertionError("a chain was built")

    monkeypatch.setattr(model, "reverse_chain", no_chain)
    with pytest.raises(ValueError, match=f"num_steps must be at most {MAX_NUM_STEPS}, got {num_steps}"):
        conjure_similarity(["tiger"], ["zebra"], model, num_steps=num_steps, num_samples=1)


def test_leading_timesteps_refuses_more_steps_than_the_schedule_has():
    with pytest.raises(ValueError, match="num_steps"):
        leading_timesteps(11, num_train_timesteps=10)


def test_a_chain_that_repeats_timesteps_is_refused_naming_num_steps(model):
    abar = torch.cumprod(1 - linear_betas(), 0)
    collapsing = CallableDenoiser(
        encode_prompts=model.encode_prompts,
        predict_noise=model.predict_noise,
        reverse_chain=lambda n: ddpm_chain(abar, torch.zeros(n, dtype=torch.long)),
        sample_shape=(4,),
    )
    with pytest.raises(ValueError, match="num_steps=3 is more steps than this model's schedule resolves"):
        check_chain_settings(collapsing, ConjureSettings(num_steps=3).for_mode("prompts"))


# 2. misspelt settings -----------------------------------------------------------------------------


@pytest.mark.parametrize("keyword", ["num_step", "guidance", "samples"])
def test_a_misspelt_setting_with_a_model_object_is_a_type_error_naming_it(keyword, model):
    with pytest.raises(TypeError, match=f"'{keyword}' \\(did you mean"):
        conjure_similarity(["tiger"], ["zebra"], model, **{keyword: 3})


@pytest.mark.parametrize(
    ("keyword", "closest"), [("num_step", "num_steps"), ("guidance", "guidance_scale"), ("samples", "num_samples")]
)
def test_loading_options_name_a_misspelt_setting_and_the_closest_setting(keyword, closest):
    with pytest.raises(
        TypeError, match=f"unknown keyword argument '{keyword}' \\(did you mean the setting '{closest}'"
    ):
        check_loading_options(DiffusersDenoiser, {keyword: 3})


def test_loading_options_accept_what_the_adapter_loads_or_builds_with():
    check_loading_options(
        DiffusersDenoiser,
        {
            "torch_dtype": torch.float32,
            "device": "cpu",
            "eta": 0.5,
            "sample_size": 8,
            "load_vae": False,
            "local_files_only": True,
        },
    )
    check_loading_options(FluxDenoiser, {"guidance": "embedded", "components": {}})


def test_a_misspelt_setting_with_a_model_path_is_refused_before_any_weights_load(tiny_pixel_repo, monkeypatch):
    def no_loading(*args, **kwargs):
        raise AssertionError("weights were loaded")

    monkeypatch.setattr(DiffusersDenoiser, "from_pretrained", classmethod(no_loading))
    with pytest.raises(TypeError, match="'num_step' \\(did you mean the setting 'num_steps'"):
        conjure_similarity(["a"], ["b"], tiny_pixel_repo, num_step=3)


# 3. CLI files and outputs -------------------------------------------------------------------------


def _open_writer_when_read(fifo, deadline: float) -> None:
    """Open the FIFO's write end (and close it at once) as soon as someone reads it: a blocked reader
    then sees an empty file instead of hanging the test run."""
    while time.monotonic() < deadline:
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            return
        except OSError as error:
            if error.errno != errno.ENXIO:  # ENXIO: no reader yet
                return
            time.sleep(0.05)


def test_pairs_on_a_fifo_is_refused_without_reading_it(tmp_path, capsys):
    fifo = tmp_path / "pairs.fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=_open_writer_when_read, args=(fifo, time.monotonic() + 20), daemon=True)
    writer.start()
    assert main(["similarity", "--pairs", str(fifo), "--model", "/no/such/model", "--quiet"]) == 2
    assert (
        _one_error_line(capsys)
        == f"conjure: error: --pairs {fifo}: not a regular file (a pipe, device or socket); give a text file"
    )


def test_drift_prompts_on_a_fifo_is_refused_without_reading_it(tmp_path):
    from conjure_metrics.drift.prompts import read_prompts

    fifo = tmp_path / "prompts.fifo"
    os.mkfifo(fifo)
    threading.Thread(target=_open_writer_when_read, args=(fifo, time.monotonic() + 20), daemon=True).start()
    with pytest.raises(ValueError, match="prompts.fifo: not a regular file"):
        read_prompts(fifo)


def test_two_prompts_and_pairs_together_are_refused(tmp_path, capsys):
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("a cat\ta dog\n")
    assert main(["similarity", "a fox", "a wolf", "--pairs", str(pairs), "--quiet"]) == 2
    assert "give either two prompts or --pairs FILE, not both" in _one_error_line(capsys)


@pytest.mark.parametrize("out", ["", "DIR"])
def test_explain_out_that_is_empty_or_a_directory_is_refused_before_any_work(out, tmp_path, capsys):
    out = str(tmp_path) if out == "DIR" else out
    assert main(["explain", "a", "b", "--out", out, "--model", "/no/such/model", "--quiet"]) == 2
    err = _one_error_line(capsys)
    assert err.startswith("conjure: error: --out") and ("is a directory" in err or "empty" in err)
    assert not (tmp_path.parent / f"{tmp_path.name}.png").exists()


@pytest.mark.parametrize("out", [".png", "figures/.PDF"])
def test_explain_out_that_is_only_a_suffix_is_refused_before_any_work(out, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "figures").mkdir()
    assert main(["explain", "a", "b", "--out", out, "--model", "/no/such/model", "--quiet"]) == 2
    assert _one_error_line(capsys).startswith(f"conjure: error: --out {out}: give a file name")
    assert not list(tmp_path.rglob("*.*"))


@pytest.mark.parametrize("command", ["similarity", "compare", "explain", "sts", "drift"])
def test_json_naming_a_directory_is_refused_before_any_work(command, tmp_path, capsys):
    # A missing model (or data file) would be the error if --json were checked only after the work starts.
    argv = {
        "similarity": ["similarity", "a", "b", "--model", "/no/such/model"],
        "compare": ["compare", "/no/such/base", "/no/such/other", "--prompt", "a"],
        "explain": ["explain", "a", "b", "--model", "/no/such/model", "--out", str(tmp_path / "x.png")],
        "sts": ["sts", "--data", "/no/such/data.tsv"],
        "drift": ["drift", "/no/such/base", "/no/such/checkpoint", "--prompts", "/no/such/prompts.txt"],
    }[command]
    assert main([*argv, "--json", str(tmp_path), "--quiet"]) == 2
    assert _one_error_line(capsys) == f"conjure: error: --json {tmp_path}: is a directory; give a file name"


def test_results_naming_a_directory_is_refused_before_any_work(tmp_path, capsys):
    assert main(["sts", "--data", "/no/such/data.tsv", "--results", str(tmp_path), "--quiet"]) == 2
    assert _one_error_line(capsys) == f"conjure: error: --results {tmp_path}: is a directory; give a file name"


@pytest.mark.parametrize("option", ["--plot", "--report"])
def test_drift_output_naming_a_directory_is_refused_before_any_work(option, tmp_path, capsys):
    argv = ["drift", "/no/such/base", "/no/such/checkpoint", "--prompts", "/no/such/prompts.txt"]
    assert main([*argv, option, str(tmp_path), "--quiet"]) == 2
    assert _one_error_line(capsys) == f"conjure: error: {option} {tmp_path}: is a directory; give a file name"


def _record(key: str, **fields) -> str:
    return json.dumps({"key": key, "settings": "S", "pair": "P", "similarity": 0.5, "divergence": 1.0, **fields})


@pytest.mark.parametrize("similarity", [None, "abc", float("nan"), True, "missing"])
def test_a_results_record_without_a_finite_similarity_is_not_a_scored_pair(similarity, tmp_path):
    path = tmp_path / "results.jsonl"
    bad = json.loads(_record("d:1:S"))
    if similarity == "missing":
        del bad["similarity"]
    else:
        bad["similarity"] = similarity
    path.write_text(_record("d:0:S") + "\n" + json.dumps(bad) + "\n")
    with pytest.warns(UserWarning, match=f"first: {path}:2\\)"):
        records = ResultsFile(path).read("S")
    assert list(records) == ["d:0:S"]


def test_a_results_file_of_sound_records_reads_without_warnings(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text(_record("d:0:S") + "\n" + _record("d:1:S", similarity=1) + "\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert list(ResultsFile(path).read("S")) == ["d:0:S", "d:1:S"]


def test_a_binary_results_file_is_refused_naming_it(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    with pytest.raises(ValueError, match=f"{path}: not a results file \\(not UTF-8 text"):
        ResultsFile(path).read("S")


# 4. unclear errors --------------------------------------------------------------------------------


def test_an_empty_model_string_says_what_was_expected():
    with pytest.raises(ValueError, match="model is an empty string: give a diffusers folder, a hub id"):
        pipeline_class_name("")


@pytest.mark.parametrize("path", ["/no/such/model", "./typo", "../models/sd/v1", "~/models/x"])
def test_a_missing_model_path_is_no_such_folder(path):
    with pytest.raises(FileNotFoundError, match=f"model: no such folder '{path}' \\(expected a diffusers folder"):
        pipeline_class_name(path)


def test_a_hub_id_missing_from_the_offline_cache_says_so():
    with pytest.raises(FileNotFoundError, match="no hub model of that name is in the cache \\(offline"):
        pipeline_class_name("nobody/no-such-model")


def test_a_file_given_as_the_model_says_a_folder_was_expected(tmp_path):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"")
    with pytest.raises(ValueError, match="is a file, not a diffusers folder"):
        pipeline_class_name(weights)


def test_an_empty_folder_given_as_the_model_says_model_index_json_was_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match="is a folder without model_index.json"):
        pipeline_class_name(tmp_path)


@pytest.mark.parametrize(
    ("device", "message"), [("meta", "meta tensors hold no values"), ("xla", "not available on this machine")]
)
def test_a_device_that_cannot_compute_is_one_line(device, message, capsys):
    assert main(["similarity", "a", "b", "--device", device, "--quiet"]) == 2
    assert _one_error_line(capsys).startswith(f"conjure: error: --device {device}: {message}")


@pytest.mark.parametrize("sample_index", [1.5, None, "0"])
def test_a_sample_index_that_is_not_an_int_is_a_type_error_and_leaves_the_state(sample_index, metric):
    before = snapshot_state(metric)
    with pytest.raises(TypeError, match="sample_index must be an int"):
        metric.explain("tiger", "zebra", sample_index=sample_index)
    assert_same_state(before, snapshot_state(metric))


def test_a_lone_surrogate_in_a_prompt_is_a_value_error_naming_its_index():
    with pytest.raises(
        ValueError, match="prompts_a\\[1\\] is not valid text: lone surrogate '\\\\ud800' at character 2"
    ):
        check_prompts(["tiger", "a \ud800 cat"], ["zebra", "fox"])


def test_a_lone_surrogate_leaves_the_metric_state_untouched(metric):
    before = snapshot_state(metric)
    with pytest.raises(ValueError, match="prompts_b\\[0\\]"):
        metric.update(["tiger"], ["\ud800"])
    assert_same_state(before, snapshot_state(metric))


def test_sts_data_from_dev_null_is_not_a_regular_file(capsys):
    assert main(["sts", "--data", os.devnull, "--quiet"]) == 2
    assert (
        _one_error_line(capsys)
        == f"conjure: error: {os.devnull}: not a regular file (a pipe, device or socket); give a text file"
    )


def test_sts_data_from_dev_null_with_a_format_is_not_a_regular_file():
    with pytest.raises(ValueError, match="not a regular file"):
        load_datasets(os.devnull, "jsonl")


# 5. guidance 0 and progress_bar -------------------------------------------------------------------


def test_guidance_scale_zero_makes_two_prompts_under_one_model_identical(model):
    # Documented in ConjureSettings: w = 0 is the unconditional model, the same for both prompts.
    result = conjure_similarity(["tiger"], ["zebra"], model, num_steps=4, num_samples=1, guidance_scale=0.0)
    assert result.similarity.tolist() == [1.0]


@pytest.mark.parametrize("progress_bar", ["no", 0, 1.0])
def test_progress_bar_that_is_not_a_bool_or_none_is_a_type_error(progress_bar):
    with pytest.raises(TypeError, match=f"progress_bar must be a bool or None, got {type(progress_bar).__name__}"):
        check_progress_bar(progress_bar)


def test_conjure_similarity_refuses_a_progress_bar_string(model):
    with pytest.raises(TypeError, match="progress_bar must be a bool or None"):
        conjure_similarity(["tiger"], ["zebra"], model, progress_bar="no", **FAST)


# 6. progress on the command line ------------------------------------------------------------------


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def gaussian_cli(monkeypatch):
    """The CLI's loading replaced by the Gaussian model (prompts tiger, zebra, ...), noting whether the
    libraries' loading bars were on while it loaded."""
    from transformers.utils import logging as transformers_logging

    bars_on_while_loading = []

    def load(model, model_b, sampler, load_kwargs):
        bars_on_while_loading.append(transformers_logging.is_progress_bar_enabled())
        return gaussian_model(dim=4), None

    monkeypatch.setattr("conjure_metrics.cli.commands.load_pair", load)
    return bars_on_while_loading


def test_similarity_reports_one_line_per_stage_on_stderr_when_not_a_terminal(gaussian_cli, capsys):
    assert main(["similarity", "tiger", "zebra", "--model", "gauss", "--steps", "4", "--samples", "2"]) == 0
    assert capsys.readouterr().err.splitlines() == [
        "conjure: loading gauss",
        "conjure: scoring 1 pair(s): 4 steps x 2 sample(s) (no bar: not a terminal)",
    ]


def test_quiet_similarity_writes_nothing_to_stderr(gaussian_cli, capsys):
    assert main(["similarity", "tiger", "zebra", "--steps", "4", "--samples", "2", "--quiet"]) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("quiet", [False, True])
def test_library_loading_bars_are_off_while_the_cli_loads_a_model(quiet, gaussian_cli, capsys):
    assert (
        main(["similarity", "tiger", "zebra", "--steps", "4", "--samples", "2", *(["--quiet"] if quiet else [])]) == 0
    )
    assert gaussian_cli == [False]


@pytest.mark.parametrize(
    ("stream", "quiet", "bar"), [(_Terminal(), False, True), (_Terminal(), True, False), (io.StringIO(), False, False)]
)
def test_the_estimators_bar_shows_on_a_terminal_unless_quiet(stream, quiet, bar):
    assert Stages(quiet, stream).bar is bar
