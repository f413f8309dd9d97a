"""ConceptDrift: the Lightning callback logs drift_report's numbers for the model being trained."""

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from conjure_metrics import DiffusersDenoiser
from conjure_metrics.drift import drift_report
from conjure_metrics.lightning_drift import ConceptDrift

PROMPTS = ["a red cat", "a red dog", "a blue bird", "a green fish"]
GROUPS = ["target", "target", "preserve", "preserve"]
SETTINGS = dict(num_steps=3, num_samples=2, guidance_scale=3.0, seed=0)
QUIET = dict(
    accelerator="cpu",
    devices=1,
    logger=False,
    enable_checkpointing=False,
    enable_progress_bar=False,
    enable_model_summary=False,
    num_sanity_val_steps=0,
    limit_val_batches=1,
)


class Trainee(L.LightningModule):
    """A tiny random SD-style model trained a few SGD steps on noise prediction; ``lora``: only a LoRA
    adapter on its attention is trained."""

    def __init__(self, lora: bool = False, lr: float = 0.5):
        super().__init__()
        from conjure_metrics.tiny import build_tiny_components

        parts = build_tiny_components(seed=0)
        self.unet, self.text_encoder = parts["unet"], parts["text_encoder"]
        self.text_encoder.requires_grad_(False)
        if lora:
            from peft import LoraConfig

            self.unet.requires_grad_(False)
            self.unet.add_adapter(LoraConfig(r=2, lora_alpha=2, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
        self.denoiser = DiffusersDenoiser(self.unet, self.text_encoder, parts["tokenizer"], parts["scheduler"])
        self.lr = lr

    def training_step(self, batch, index):
        generator = torch.Generator().manual_seed(int(index))
        images = torch.randn(2, 3, 8, 8, generator=generator)
        ids = self.denoiser.tokenizer(["a red cat", "a red dog"], padding="max_length", return_tensors="pt").input_ids
        context = self.text_encoder(ids).last_hidden_state
        timesteps = torch.randint(1000, (2,), generator=generator)
        return torch.nn.functional.mse_loss(self.unet(images, timesteps, context).sample, torch.zeros_like(images))

    def validation_step(self, batch, index):
        pass

    def train_dataloader(self):
        return torch.utils.data.DataLoader(range(4), batch_size=2)

    def val_dataloader(self):
        return torch.utils.data.DataLoader(range(1), batch_size=1)

    def configure_optimizers(self):
        return torch.optim.SGD([p for p in self.parameters() if p.requires_grad], lr=self.lr)


def _fit(module, callback, **trainer_kwargs):
    trainer = L.Trainer(callbacks=[callback], **{**QUIET, "max_epochs": 1, **trainer_kwargs})
    trainer.fit(module)
    return trainer


def _reference(start, module):
    return drift_report(start, [module.denoiser], PROMPTS, GROUPS, names=["trained"], progress_bar=False, **SETTINGS)


def _pristine_denoiser():
    return Trainee().denoiser  # the same seed builds the same starting weights


def test_logged_drift_equals_drift_report_of_start_and_trained_model():
    torch.manual_seed(0)
    module = Trainee()
    start = copy.deepcopy(module.denoiser)
    callback = ConceptDrift(PROMPTS, GROUPS, **SETTINGS)
    trainer = _fit(module, callback)
    expected = _reference(start, module)
    means = {g.group: g.mean.value for g in expected.groups}
    assert means["target"] > 0  # the model did move, so equality is not 0 == 0
    logged = trainer.callback_metrics
    assert float(logged["drift/target"]) == pytest.approx(means["target"], rel=1e-6)
    assert float(logged["drift/preserve"]) == pytest.approx(means["preserve"], rel=1e-6)
    assert float(logged["drift/specificity"]) == pytest.approx(expected.specificity["trained"].value, rel=1e-6)
    assert [(r.prompt, r.samples) for r in callback.last_report.rows] == [(r.prompt, r.samples) for r in expected.rows]


def test_logged_drift_equals_conjure_drift_on_the_saved_checkpoint(tmp_path):
    # What a user checks afterwards: the starting model saved as a folder, the trained UNet saved as a
    # training script saves it (checkpoint-N/unet), and `conjure drift` on the two with the same settings.
    from conjure_metrics.cli import main
    from conjure_metrics.tiny import save_tiny_model

    torch.manual_seed(0)
    module = Trainee()
    callback = ConceptDrift(PROMPTS, GROUPS, **SETTINGS)
    logged = _fit(module, callback).callback_metrics
    base = save_tiny_model(tmp_path / "base", seed=0)  # the weights Trainee starts from
    module.unet.save_pretrained(tmp_path / "checkpoint-2" / "unet")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"{group}: {prompt}\n" for prompt, group in zip(PROMPTS, GROUPS)))
    out = tmp_path / "drift.json"
    options = ["--steps", "3", "--samples", "2", "--guidance", "3.0", "--seed", "0"]
    main(
        [
            "drift",
            str(base),
            str(tmp_path / "checkpoint-2"),
            "--prompts",
            str(prompts),
            *options,
            "--json",
            str(out),
            "--quiet",
        ]
    )
    offline = {g["group"]: g["mean_drift"] for g in json.loads(out.read_text())["groups"]}
    assert offline["target"] > 0
    assert float(logged["drift/target"]) == pytest.approx(offline["target"], rel=1e-6)
    assert float(logged["drift/preserve"]) == pytest.approx(offline["preserve"], rel=1e-6)


def test_bf16_true_training_logs_the_drift_of_the_bf16_weights():
    # Lightning casts the module before on_fit_start: the starting point is the pristine weights in bf16.
    torch.manual_seed(0)
    module = Trainee()
    callback = ConceptDrift(PROMPTS, GROUPS, **SETTINGS)
    trainer = _fit(module, callback, precision="bf16-true")
    assert next(module.unet.parameters()).dtype == torch.bfloat16
    start = _pristine_denoiser()
    start.unet.to(torch.bfloat16)
    start.text_encoder.to(torch.bfloat16)
    expected = _reference(start, module)
    means = {g.group: g.mean.value for g in expected.groups}
    assert means["target"] > 0 and all(map(torch.isfinite, map(torch.tensor, means.values())))
    logged = trainer.callback_metrics
    assert float(logged["drift/target"]) == pytest.approx(means["target"], rel=1e-6)
    assert float(logged["drift/preserve"]) == pytest.approx(means["preserve"], rel=1e-6)


def test_lora_module_is_compared_with_its_adapter_switched_off():
    torch.manual_seed(0)
    module = Trainee(lora=True, lr=2.0)
    callback = ConceptDrift(PROMPTS, GROUPS, **SETTINGS)
    trainer = _fit(module, callback)
    expected = _reference(_pristine_denoiser(), module)  # base weights before the adapter was added
    means = {g.group: g.mean.value for g in expected.groups}
    assert means["target"] > 0
    assert float(trainer.callback_metrics["drift/target"]) == pytest.approx(means["target"], rel=1e-6)
    assert float(trainer.callback_metrics["drift/preserve"]) == pytest.approx(means["preserve"], rel=1e-6)


def test_lora_module_gets_no_copy_of_its_weights():
    module = Trainee(lora=True)
    callback = ConceptDrift(PROMPTS, GROUPS, **SETTINGS)
    callback.on_fit_start(None, module)
    start = callback._start
    assert all(a is b for a, b in zip(start.unet.parameters(), module.unet.parameters()))


def test_measuring_leaves_each_adapter_weight_as_trainable_as_it_was():
    module = Trainee(lora=True)
    for name, parameter in module.unet.named_parameters():
        if "lora" in name and name.startswith("up_blocks"):
            parameter.requires_grad_(False)  # an adapter partly frozen by the user stays so
    callback = ConceptDrift(PROMPTS, GROUPS, **SETTINGS)
    callback.on_fit_start(None, module)
    trainable = {n for n, p in module.unet.named_parameters() if p.requires_grad}
    callback.measure(module.denoiser)
    assert {n for n, p in module.unet.named_parameters() if p.requires_grad} == trainable


def test_measuring_leaves_the_adapter_switched_on():
    from peft.tuners.tuners_utils import BaseTunerLayer

    module = Trainee(lora=True)
    callback = ConceptDrift(PROMPTS, GROUPS, **SETTINGS)
    callback.on_fit_start(None, module)
    callback.measure(module.denoiser)
    layers = [m for m in module.unet.modules() if isinstance(m, BaseTunerLayer)]
    assert layers and not any(layer.disable_adapters for layer in layers)


def test_full_copy_shares_frozen_weights_and_copies_trainable_ones():
    module = Trainee()
    callback = ConceptDrift(PROMPTS, GROUPS, **SETTINGS)
    callback.on_fit_start(None, module)
    start = callback._start
    assert all(a is b for a, b in zip(start.text_encoder.parameters(), module.text_encoder.parameters()))
    assert not any(a is b for a, b in zip(start.unet.parameters(), module.unet.parameters()))
    assert not any(p.requires_grad for p in start.unet.parameters())


def test_checkpoint_holds_neither_the_copy_nor_callback_state(tmp_path):
    module = Trainee()
    keys_before = set(module.state_dict())
    callback = ConceptDrift(PROMPTS, GROUPS, **SETTINGS)
    trainer = _fit(module, callback)
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    saved = torch.load(tmp_path / "last.ckpt", weights_only=False)
    assert set(saved["state_dict"]) == keys_before
    assert callback.state_dict() == {}
    assert all(not state for key, state in saved.get("callbacks", {}).items() if "ConceptDrift" in key)


class _Counting(ConceptDrift):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.epochs = []

    def measure(self, trained, rank=0, world_size=1):
        self.epochs.append(self.trainer_epoch)
        return super().measure(trained, rank, world_size)

    def on_validation_epoch_end(self, trainer, pl_module):
        self.trainer_epoch = trainer.current_epoch
        super().on_validation_epoch_end(trainer, pl_module)


def test_measures_every_n_epochs_only():
    callback = _Counting(PROMPTS, GROUPS, every_n_epochs=2, num_steps=3, num_samples=1)
    _fit(Trainee(), callback, max_epochs=3)
    assert callback.epochs == [0, 2]


def test_sanity_check_does_not_measure():
    callback = _Counting(PROMPTS, GROUPS, num_steps=3, num_samples=1)
    _fit(Trainee(), callback, max_epochs=1, num_sanity_val_steps=1)
    assert callback.epochs == [0]


def test_ungrouped_prompts_log_one_group_all_and_no_specificity():
    callback = ConceptDrift(PROMPTS[:2], num_steps=3, num_samples=1)
    logged = _fit(Trainee(), callback).callback_metrics
    assert "drift/all" in logged and "drift/specificity" not in logged


@pytest.mark.parametrize(
    "kwargs,error",
    [
        (dict(every_n_epochs=0), ValueError),
        (dict(num_step=3), TypeError),
        (dict(groups=["target"]), ValueError),
        (dict(denoiser_fn="unet"), TypeError),
    ],
)
def test_bad_arguments_are_refused(kwargs, error):
    with pytest.raises(error):
        ConceptDrift(PROMPTS, **kwargs)


def test_missing_denoiser_attribute_names_denoiser_fn():
    class NoDenoiser(L.LightningModule):
        pass

    with pytest.raises(AttributeError, match="denoiser_fn"):
        ConceptDrift(PROMPTS).on_fit_start(None, NoDenoiser())


_DDP_SCRIPT = """
import json, sys
import lightning as L
import torch
sys.path.insert(0, {root!r})
from tests.test_lightning_drift import GROUPS, PROMPTS, QUIET, SETTINGS, Trainee
from conjure_metrics.lightning_drift import ConceptDrift


def main():
    torch.manual_seed(0)
    module = Trainee()
    callback = ConceptDrift(PROMPTS, GROUPS, **SETTINGS)
    quiet = {{**QUIET, "devices": 2}}
    trainer = L.Trainer(callbacks=[callback], strategy={strategy!r}, max_epochs=1, use_distributed_sampler=False,
                        **quiet)
    trainer.fit(module)
    if trainer.global_rank == 0:  # under ddp_spawn: the main process, which gets rank 0's logged metrics back
        logged = {{k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("drift/")}}
        json.dump(dict(logged=logged, world_size=trainer.world_size), open({out!r}, "w"))


if __name__ == "__main__":  # ddp_spawn's workers import this file again
    main()
"""


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("strategy", ["ddp", "ddp_spawn"])
def test_two_ddp_ranks_log_what_one_process_logs(tmp_path, strategy):
    out = tmp_path / "ddp.json"
    script = tmp_path / "fit_ddp.py"
    root = str(Path(__file__).resolve().parents[1])
    script.write_text(_DDP_SCRIPT.format(root=root, out=str(out), strategy=strategy))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    done = subprocess.run(
        [sys.executable, str(script)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ddp = json.loads(out.read_text())
    assert ddp["world_size"] == 2

    torch.manual_seed(0)
    callback = ConceptDrift(PROMPTS, GROUPS, **SETTINGS)
    single = _fit(Trainee(), callback, use_distributed_sampler=False).callback_metrics
    # DDP averages the two ranks' gradients over their halves of the data, one process the whole batch:
    # each rank's batch holds the same two items here, so the trained weights agree up to round-off.
    assert sorted(ddp["logged"]) == sorted(k for k in single if k.startswith("drift/"))
    for name, value in ddp["logged"].items():
        assert value == pytest.approx(float(single[name]), rel=1e-4), name
