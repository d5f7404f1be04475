"""`senet demo`: SE-ResNet-20 against its plain twin ResNet-20 on the built-in digits, on a CPU.

Both networks train with the `demo` recipe and the same seed. On a machine with two or more cores they
train side by side, one process and an equal share of the cores each, which is both faster and fairer
than taking turns: neither run's timing is disturbed by the other's thread pool. Afterwards the SE
network's excitations on the validation images are averaged per class and block (paper Sec. 7.2).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from senet.analysis.complexity import complexity
from senet.analysis.excitation import excitation_study
from senet.analysis.plots import plot_training_curves
from senet.data import open_data
from senet.engine.pool import threads_per_job, train_one, worker_pool
from senet.engine.train import METRICS_FILE, prepare_config
from senet.errors import ConfigError
from senet.interop.load import load_for_evaluation
from senet.weights.checkpoint import atomic_write
from senet.weights.lock import FolderLock

MODELS = ("se_resnet20", "resnet20")


@dataclass
class DemoRun:
    model: str
    history: list[dict[str, Any]]
    train_seconds: float
    train_images: int

    @property
    def images_per_s(self) -> float:
        return self.train_images / self.train_seconds if self.train_seconds else 0.0


def run_demo(
    output: str | Path = "runs/demo",
    *,
    epochs: int | None = None,
    seed: int = 0,
    jobs: int | None = None,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train both networks, print the comparison table, write curves.png and the SE network's excitation
    study (`senet analyze excitation` over every validation image: excitation.json, .png, _spread.png) to `output`.

    An earlier demo's runs in `output` are kept unless `overwrite`, as `senet train` does: a finished one's
    table is printed again (and returned), an unfinished one is a ConfigError.
    """

    output = Path(output)
    with FolderLock(output, fix="wait for it to finish, or give another --output"):
        earlier = [output / name for name in MODELS if (output / name).exists()]
        again = "senet demo --overwrite (make demo DEMO_ARGS=--overwrite) to train again, or --output another folder"
        if earlier and not overwrite:
            try:
                summary = json.loads((output / "summary.json").read_text())
                rows = summary["rows"]
            except (OSError, ValueError, KeyError):
                raise ConfigError(f"{output} already holds an unfinished earlier demo "
                                  f"({', '.join(str(p) for p in earlier)}); {again}") from None
            log(f"senet demo: {output} holds the results of an earlier demo (figures: {summary.get('curves')}, "
                f"{summary.get('excitation')}); {again}")
            _log_table(rows, summary.get("val_images"), summary.get("wall_seconds", 0.0), log)
            return summary
        digits = open_data("digits")  # fails early, with the install hint, when scikit-learn is missing
        cores = os.cpu_count() or 1
        jobs = jobs or (2 if cores >= 2 else 1)
        threads = threads_per_job(jobs)
        overrides: dict[str, Any] = {"train.seed": seed}
        if epochs is not None:
            overrides["schedule.epochs"] = epochs
        configs = {name: prepare_config("demo", overrides | {"model.name": name})[0] for name in MODELS}
        output.mkdir(parents=True, exist_ok=True)
        for path in earlier:  # asked to overwrite: the demo's own folders from an earlier demo
            shutil.rmtree(path, ignore_errors=True)
        total_epochs = configs[MODELS[0]].schedule.epochs
        log(
            f"senet demo: {' vs '.join(MODELS)} on scikit-learn's digits ({len(digits.train)} train / {len(digits.val)} val images, 8x8 upsampled "
            f"to {configs[MODELS[0]].data.input_size}x{configs[MODELS[0]].data.input_size}), {total_epochs} epochs, "
            f"seed {seed}, {jobs} process(es) x {threads} thread(s)"
        )

        start = time.perf_counter()
        summaries: dict[str, dict[str, Any]] = {}
        if jobs >= 2:
            with worker_pool(len(MODELS)) as pool:
                futures = {
                    name: pool.submit(train_one, configs[name].to_dict(), str(output / name), threads) for name in MODELS
                }
                _follow(futures, output, total_epochs, log)
                summaries = {name: future.result() for name, future in futures.items()}
        else:
            for name in MODELS:
                summaries[name] = train_one(configs[name].to_dict(), str(output / name), threads)
                _report_epochs(name, summaries[name]["history"], 0, total_epochs, log)
        wall = time.perf_counter() - start
        runs = {name: DemoRun(name, **summary) for name, summary in summaries.items()}

        # The comparison table: final validation errors, size, cost, speed.
        models = {}
        rows = []
        for name in MODELS:
            models[name], record, _ = load_for_evaluation(output / name / "model.safetensors")
            size = record.input_size
            stats = complexity(models[name], (record.channels, size, size))
            final = runs[name].history[-1]
            rows.append(
                {
                    "model": name,
                    "top1_err": final["val_top1_err"],
                    "top5_err": final["val_top5_err"],
                    "params": stats.params,
                    "macs": stats.macs,
                    "train_seconds": runs[name].train_seconds,
                    "images_per_s": runs[name].images_per_s,
                }
            )
        _log_table(rows, len(digits.val), wall, log)

        # Figures: curves of both runs; per-class excitation of the SE network on the validation images.
        curves = plot_training_curves({name: runs[name].history for name in MODELS}, output / "curves.png")
        se_name = MODELS[0]
        excitation = excitation_study(output / se_name, output=output, images_per_class=None, overwrite=True, device="cpu",
                                      progress=False, title=f"{se_name} on digits")
        excitation_png = excitation.figures[0]
        log(excitation.summary())
        log(f"figures: {curves} (training curves), {excitation_png} and {excitation.figures[1]} (excitation per SE block, "
            f"Figs. 6-7; the numbers: {excitation.json_path})")
        log(f"runs: {output / MODELS[0]}, {output / MODELS[1]} (config.yaml, metrics.jsonl, model.safetensors)")
        summary = {"rows": rows, "wall_seconds": wall, "curves": str(curves), "excitation": str(excitation_png),
                   "val_images": len(digits.val)}
        text = json.dumps(summary, indent=1)
        atomic_write(output / "summary.json", lambda temp: temp.write_text(text))
        return summary


def _log_table(rows: list[dict[str, Any]], val_images: int | None, wall: float, log: Callable[[str], None]) -> None:
    """The comparison table: final validation errors, size, cost, speed."""
    log("")
    log(f"{'model':12s} {'top-1 err':>9s} {'top-5 err':>9s} {'params':>8s} {'MMACs':>7s} {'train time':>10s} {'images/s':>9s}")
    for row in rows:
        log(
            f"{row['model']:12s} {row['top1_err']:8.2f}% {row['top5_err']:8.2f}% {row['params'] / 1e6:7.3f}M "
            f"{row['macs'] / 1e6:7.2f} {row['train_seconds']:9.1f}s {row['images_per_s']:9.0f}"
        )
    if val_images:
        log(f"(validation: {val_images} images, one image is {100 / val_images:.2f}%; wall time {wall:.0f} s)")


def _report_epochs(name: str, rows: list[dict[str, Any]], done: int, total: int, log: Callable[[str], None]) -> int:
    for row in rows[done:]:
        log(
            f"  {name:12s} epoch {row['epoch']:2d}/{total}  train loss {row['train_loss']:.4f}  "
            f"val top-1 err {row['val_top1_err']:5.2f}%  {row['images_per_s'] or 0:5.0f} img/s"
        )
    return len(rows)


def _follow(futures: dict[str, Future], output: Path, total: int, log: Callable[[str], None]) -> None:
    """Print each run's epochs as its metrics.jsonl grows, until both runs finish."""
    done = dict.fromkeys(futures, 0)
    while True:
        finished = all(future.done() for future in futures.values())
        for name in futures:
            path = output / name / METRICS_FILE
            if path.is_file():
                rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
                done[name] = _report_epochs(name, rows, done[name], total, log)
        if finished:
            return
        time.sleep(0.5)
