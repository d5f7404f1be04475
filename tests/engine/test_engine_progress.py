"""The loop reads its loss and accuracy from the device at log intervals, not every step, and logs the
same values as a step-by-step reference computation."""

import torch
from training_fixtures import tiny_config

from senet.engine.train import Trainer, train

READS = ("item", "tolist", "cpu", "__float__", "__int__", "__bool__")


def count_device_reads(monkeypatch) -> dict[str, int]:
    """Count every call that copies a tensor's values to Python (each waits for the device)."""
    counts = dict.fromkeys(READS, 0)
    for name in READS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            counts[_name] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return counts


def test_device_reads_do_not_grow_with_the_steps(tmp_path, monkeypatch):
    totals = []
    for train_images in (32, 32, 96):  # 4 and 12 steps of 8, the same 8 validation images (the first: warm-up)
        config = tiny_config(data__spec=f"synthetic:train={train_images},val=8,size=8,classes=3", train__batch_size=8,
                             train__log_every=100)
        counts = count_device_reads(monkeypatch)
        result = train(config, tmp_path / str(len(totals)), quiet=True)
        monkeypatch.undo()
        assert result.final["step"] == train_images // 8
        totals.append(dict(counts))
    assert totals[1] == totals[2], str(totals)  # per epoch and per evaluation batch, never per training step


class RecordingTrainer(Trainer):
    """Records each micro-batch's loss and correct count as the loss is computed (the reference)."""

    def _build_optimizer(self) -> None:
        super()._build_optimizer()
        self.reference: list[tuple[float, int, int]] = []

        def record(module, inputs, loss):
            logits, labels = inputs
            self.reference.append((float(loss.detach()), int((logits.argmax(1) == labels).sum()), len(labels)))

        self.criterion.register_forward_hook(record)


def test_logged_loss_and_error_match_a_step_by_step_reference(tmp_path):
    config = tiny_config(data__spec="synthetic:train=48,val=8,size=8,classes=3", train__batch_size=4,
                         train__accum_steps=2, train__log_every=4, schedule__epochs=2)
    trainer = RecordingTrainer(config, tmp_path, quiet=True)
    result = trainer.fit()
    steps = 48 // 8
    for epoch, row in enumerate(result.history):
        micro = trainer.reference[2 * steps * epoch: 2 * steps * (epoch + 1)]
        loss_sum = 0.0
        for first, second in zip(micro[::2], micro[1::2]):  # one optimiser step = two micro-batches
            loss_sum += float(torch.tensor(first[0]) + torch.tensor(second[0])) / 2
        correct, images = sum(m[1] for m in micro), sum(m[2] for m in micro)
        assert row["train_loss"] == loss_sum / steps
        assert row["train_top1_err"] == 100.0 * (1 - correct / images)
        assert row["train_images"] == images == 48
