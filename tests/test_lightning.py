"""Lightning: the example's validation loop under real CPU DDP / ddp_spawn / bf16-true, and checkpoints."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from conjure_metrics import ConjureSimilarity, DiffusersDenoiser, conjure_similarity
from tests.helpers import gaussian_model

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "lightning_conjure.py"
SETTINGS = dict(num_steps=3, num_samples=2, guidance_scale=3.0, seed=0)


def _example():
    spec = importlib.util.spec_from_file_location("lightning_conjure", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny32(tmp_path_factory):
    from conjure_metrics.tiny import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny32"), sample_size=32)


def _reference(model_path, unet_path, dtype, pairs):
    from diffusers import UNet2DConditionModel

    denoiser = DiffusersDenoiser.from_pretrained(model_path)
    denoiser.unet = UNet2DConditionModel.from_pretrained(unet_path, torch_dtype=dtype)
    denoiser.text_encoder.to(dtype)
    return conjure_similarity([a for a, _ in pairs], [b for _, b in pairs], denoiser, **SETTINGS)


@pytest.mark.distributed
@pytest.mark.parametrize("strategy,precision", [("ddp", "32-true"), ("ddp_spawn", "32-true"), ("ddp", "bf16-true")])
def test_logged_value_under_two_cpu_ranks_equals_single_process(strategy, precision, tiny32, tmp_path):
    out = tmp_path / "result.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    done = subprocess.run(
        [
            sys.executable,
            str(EXAMPLE),
            "--model",
            str(tiny32),
            "--devices",
            "2",
            "--strategy",
            strategy,
            "--precision",
            precision,
            "--max-steps",
            "2",
            "--conjure-steps",
            "3",
            "--conjure-samples",
            "2",
            "--out",
            str(out),
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    logged = json.loads(out.read_text())
    assert logged["world_size"] == 2
    pairs = _example().VALIDATION_PAIRS
    assert logged["metrics"]["val/pairs_counted"] == len(pairs)  # no pair counted twice or lost
    dtype = torch.bfloat16 if precision == "bf16-true" else torch.float32
    expected = _reference(tiny32, out.with_suffix(".unet"), dtype, pairs)
    # Two ranks batch the pairs differently from one process: round-off only, larger in bf16
    # (2.2e-6 relative measured here on unchanged code at 0f2ff96, over the 1e-6 it was held to).
    tolerance = 1e-5 if precision == "bf16-true" else 1e-6
    assert logged["metrics"]["val/conjure"] == pytest.approx(float(expected.mean_similarity), rel=tolerance)


def _fit_and_save(module, path):
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    trainer.fit(module)
    if module.val_similarity is not None:
        module.val_similarity.update(["a red fox", "a zebra"], ["a blue fox", "a zebra"])
    trainer.save_checkpoint(path)
    return path.stat().st_size


def test_checkpoint_has_no_extra_weights_and_resumes_the_metric_state_exactly_when_persistent(tiny32, tmp_path):
    example = _example()
    torch.manual_seed(0)
    with_metric = example.ConjureFineTuner(str(tiny32), track_drift=True, **SETTINGS)
    with_metric.val_similarity.persistent(True)
    torch.manual_seed(0)
    without = example.ConjureFineTuner(str(tiny32), with_metric=False, **SETTINGS)
    size_with = _fit_and_save(with_metric, tmp_path / "with.ckpt")
    size_without = _fit_and_save(without, tmp_path / "without.ckpt")
    unet_bytes = sum(p.numel() * p.element_size() for p in with_metric.unet.parameters())
    assert size_with - size_without < 0.05 * unet_bytes  # a few accumulators, no UNet copy (base or trained)

    restored = example.ConjureFineTuner.load_from_checkpoint(tmp_path / "with.ckpt")
    for name, value in with_metric.val_similarity.metric_state.items():
        restored_value = restored.val_similarity.metric_state[name]
        if isinstance(value, list):
            assert len(value) == len(restored_value) and all(torch.equal(a, b) for a, b in zip(value, restored_value))
        else:
            assert torch.equal(value, restored_value)
    assert restored.val_similarity.num_pairs == 2


class _Validating(L.LightningModule):
    """Trains a scalar, validates two pairs per validation with the metric logged the usual way."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.metric = ConjureSimilarity(gaussian_model(), num_steps=3, num_samples=2, guidance_scale=1.0)
        self.pairs_per_validation = []

    def training_step(self, batch, index):
        return (self.weight - 1).pow(2).sum()

    def validation_step(self, batch, index):
        self.metric.update(*batch)
        self.log("val/sim", self.metric, batch_size=len(batch[0]))

    def on_validation_epoch_end(self):
        self.pairs_per_validation.append(int(self.metric.num_pairs))

    def train_dataloader(self):
        return torch.utils.data.DataLoader(range(2), batch_size=1)

    def val_dataloader(self):
        pairs = [("tiger", "leopard"), ("zebra", "fox")]
        return torch.utils.data.DataLoader(
            pairs, batch_size=1, collate_fn=lambda b: ([x for x, _ in b], [y for _, y in b])
        )

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_a_resumed_run_counts_each_validations_pairs_once(tmp_path):
    # Lightning saves checkpoints after validation, before it resets logged metrics: a metric
    # whose accumulators entered the checkpoint would count that validation's pairs again.
    from lightning.pytorch.callbacks import ModelCheckpoint

    quiet = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        val_check_interval=0.5,
        default_root_dir=tmp_path,
    )
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True, monitor="val/sim", mode="max")
    first = _Validating()
    L.Trainer(max_epochs=1, callbacks=[checkpoint], **quiet).fit(first)
    assert first.pairs_per_validation == [2, 2]
    resumed = _Validating()
    L.Trainer(max_epochs=2, **quiet).fit(resumed, ckpt_path=tmp_path / "last.ckpt")
    assert resumed.pairs_per_validation and set(resumed.pairs_per_validation) == {2}
