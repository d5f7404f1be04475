"""The loop reads its loss and accuracy from the device at log intervals, not every step, and evaluation once
after its last batch; both report the same values as a step-by-step reference computation."""

import torch
import torch.nn.functional as F
from training_fixtures import tiny_config

from senet.data.loader import Batch, Normalize
from senet.engine.evaluate import evaluate
from senet.engine.train import Trainer, train
from senet.models import create_model

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
    assert totals[1] == totals[2], str(totals)  # per epoch, never per training step


def test_evaluate_reads_the_device_once_and_matches_per_batch_sums(monkeypatch):
    """evaluate keeps its sums on the device; its numbers equal those of reading every batch (a float64 sum of
    each batch's float32 summed loss, integer hit counts), for batches of any size, empty ones skipped."""
    torch.manual_seed(0)
    model = create_model("se_resnet20", num_classes=10)
    generator = torch.Generator().manual_seed(1)
    batches = [Batch(torch.randint(0, 256, (n, 3, 16, 16), generator=generator, dtype=torch.uint8),
                     torch.randint(0, 10, (n,), generator=generator), []) for n in (7, 16, 5, 4, 4, 4)]
    empty = Batch(torch.empty((0, 0, 0, 0), dtype=torch.uint8), torch.empty((0,), dtype=torch.int64), [])
    normalize = Normalize((0.5,) * 3, (0.25,) * 3)
    reads = []
    for some in (batches[:2], [batches[0], empty, *batches[1:]]):
        counts = count_device_reads(monkeypatch)
        model.train()
        result = evaluate(model, some, normalize)
        monkeypatch.undo()
        reads.append(dict(counts))
        assert model.training  # left as it was
    assert reads[0] == reads[1], str(reads)  # not one more for 5 more batches
    model.eval()
    loss_sum, top1, top5, images = 0.0, 0, 0, 0
    with torch.no_grad():
        for batch in batches:
            logits = model(normalize(batch.images))
            loss_sum += float(F.cross_entropy(logits, batch.labels, reduction="sum"))
            hits = logits.topk(5, dim=1).indices == batch.labels[:, None]
            top1, top5, images = top1 + int(hits[:, 0].sum()), top5 + int(hits.any(1).sum()), images + len(batch.labels)
    assert images == 40 and isinstance(result.images, int)
    assert (result.loss, result.top1_err, result.top5_err, result.images) == (
        loss_sum / images, 100.0 * (1 - top1 / images), 100.0 * (1 - top5 / images), images)


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
