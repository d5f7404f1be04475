"""Time and memory of a model against a baseline, measured in one process (`senet bench`).

The paper reports SE's cost in time as well as FLOPs (Sec. 4): a ResNet-50 training batch took 190 ms and
an SE-ResNet-50 one 209 ms on GPU, CPU inference 164 vs 167 ms. This module measures the same ratios for
any two models (or one model under the fused and the straightforward SE implementations).

Timing discipline (shared machines are noisy): both subjects are built, warmed up (which also compiles
them under `compile=True`), then timed alternately, one step each per round with the order flipped every
round, so that load from other processes hits both alike. Reported: median and min time per step,
images/s, and the ratio model/baseline as the median of the per-round ratios (plus the ratios of the
medians and of the minima). The process's CPU time per step (all threads) is recorded too: a step that
loses its cores to another process for a while takes longer, but uses little more CPU time, so the CPU-
time ratio is a second, contention-robust view of the same cost.

Training peak memory: on CUDA, the rise of `torch.cuda.max_memory_allocated` over one step above what
was allocated before it, plus the subject's weights, optimizer state and batch. On CPU there is no
allocator statistic, so the profiler's allocation events of one step are replayed to find the peak of
live tensor bytes, to which the bytes alive before the step (weights, optimizer state, batch) are added.
The bytes of the tensors autograd keeps for the backward pass (activations) are counted separately, with
saved-tensor hooks (`saved_storages`). Only public PyTorch APIs: the profiler's events and memory records,
`torch.autograd.graph.saved_tensors_hooks`, the CUDA allocator's statistics.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import gc
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from senet import allocator
from senet.errors import ConfigError, SenetError, check_choice
from senet.layers import SE_IMPLS, se_path, set_se_impl

from senet.options import BENCH_DEVICES as DEVICES
from senet.options import BENCH_MODES as MODES
# Model keywords that describe the network rather than its SE blocks: a plain baseline shares them.
SHARED_KWARGS = ("layout", "num_classes", "in_chans")


@dataclass(frozen=True)
class BenchConfig:
    """What to measure. `baseline=None` measures the model alone (its plain twin is a common choice)."""

    model: str
    baseline: str | None = None
    mode: str = "infer"
    batch: int = 8
    input_size: int | None = None
    device: str = "cpu"
    compile: bool = False
    channels_last: bool = False
    amp: bool = False
    threads: int | None = None
    repeats: int = 10
    warmup: int = 2
    se_impl: str = "fused"
    baseline_se_impl: str | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    memory: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        check_choice("mode", self.mode, MODES)
        check_choice("device", self.device, DEVICES)
        check_choice("se implementation", self.se_impl, SE_IMPLS)
        if self.baseline_se_impl is not None:
            check_choice("baseline se implementation", self.baseline_se_impl, SE_IMPLS)
        for name in ("batch", "repeats"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup < 0:
            raise ConfigError(f"warmup must be >= 0, got {self.warmup}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be >= 1, got {self.threads}")
        if self.input_size is not None and self.input_size < 1:
            raise ConfigError(f"input size must be >= 1 pixel, got {self.input_size}")

    def replace(self, **changes: Any) -> BenchConfig:
        return dataclasses.replace(self, **changes)


@dataclass
class Measurement:
    """One subject's step times (seconds) and, in training, its memory."""

    name: str
    se_impl: str
    batch: int
    times: list[float]
    cpu_times: list[float] = field(default_factory=list)
    warmup_s: float = 0.0
    peak_bytes: int | None = None
    saved_bytes: int | None = None

    @property
    def median_ms(self) -> float:
        return 1e3 * statistics.median(self.times)

    @property
    def min_ms(self) -> float:
        return 1e3 * min(self.times)

    @property
    def images_per_s(self) -> float:
        return self.batch / statistics.median(self.times)

    @property
    def cpu_median_ms(self) -> float:
        return 1e3 * statistics.median(self.cpu_times)

    def as_dict(self) -> dict[str, Any]:
        mib = 2**20
        return {
            "name": self.name,
            "se_impl": self.se_impl,
            "median_ms": round(self.median_ms, 3),
            "min_ms": round(self.min_ms, 3),
            "images_per_s": round(self.images_per_s, 2),
            "cpu_median_ms": round(self.cpu_median_ms, 3),
            "warmup_s": round(self.warmup_s, 2),
            "peak_mb": None if self.peak_bytes is None else round(self.peak_bytes / mib, 1),
            "saved_mb": None if self.saved_bytes is None else round(self.saved_bytes / mib, 1),
            "times_ms": [round(1e3 * t, 3) for t in self.times],
            "cpu_times_ms": [round(1e3 * t, 3) for t in self.cpu_times],
        }


@dataclass
class BenchResult:
    """Model and (optionally) baseline measurements, with their ratios."""

    config: BenchConfig
    model: Measurement
    baseline: Measurement | None
    environment: dict[str, Any]

    @property
    def ratio(self) -> float | None:
        """Model / baseline time: the median of the per-round ratios (each round times both back to back)."""
        if self.baseline is None:
            return None
        return statistics.median(m / b for m, b in zip(self.model.times, self.baseline.times))

    @property
    def cpu_ratio(self) -> float | None:
        """Model / baseline CPU time of the process per step (all threads), median of per-round ratios."""
        if self.baseline is None:
            return None
        return statistics.median(m / b for m, b in zip(self.model.cpu_times, self.baseline.cpu_times))

    @property
    def ratio_of_medians(self) -> float | None:
        return None if self.baseline is None else self.model.median_ms / self.baseline.median_ms

    @property
    def ratio_of_minima(self) -> float | None:
        return None if self.baseline is None else self.model.min_ms / self.baseline.min_ms

    @property
    def memory_ratio(self) -> float | None:
        if self.baseline is None or not self.model.peak_bytes or not self.baseline.peak_bytes:
            return None
        return self.model.peak_bytes / self.baseline.peak_bytes

    def as_dict(self) -> dict[str, Any]:
        config = dataclasses.asdict(self.config)
        out: dict[str, Any] = {
            "model": self.config.model,
            "baseline": self.baseline.name if self.baseline else None,
            "mode": self.config.mode,
            "model_ms": round(self.model.median_ms, 3),
            "baseline_ms": None if self.baseline is None else round(self.baseline.median_ms, 3),
            "ratio": _round(self.ratio),
            "ratio_of_medians": _round(self.ratio_of_medians),
            "ratio_of_minima": _round(self.ratio_of_minima),
            "cpu_ratio": _round(self.cpu_ratio),
            "model_min_ms": round(self.model.min_ms, 3),
            "baseline_min_ms": None if self.baseline is None else round(self.baseline.min_ms, 3),
            "model_images_per_s": round(self.model.images_per_s, 2),
            "baseline_images_per_s": None if self.baseline is None else round(self.baseline.images_per_s, 2),
            "model_peak_mb": self.model.as_dict()["peak_mb"],
            "baseline_peak_mb": None if self.baseline is None else self.baseline.as_dict()["peak_mb"],
            "memory_ratio": _round(self.memory_ratio),
            "se_path": se_path(self.config.se_impl, self.config.device, self.config.compile),
            "config": config,
            "environment": self.environment,
            "measurements": [m.as_dict() for m in (self.model, self.baseline) if m is not None],
        }
        return out


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


# ---------------------------------------------------------------------------------------------------
# The two steps measured: inference (forward only) and one SGD training step.


class Subject:
    """A model with its optimizer, batch and step function, its SE blocks set to one implementation."""

    def __init__(self, name: str, kwargs: dict[str, Any], se_impl: str, config: BenchConfig) -> None:
        from senet.models import create_model

        self.name = name
        self.se_impl = se_impl
        self.config = config
        device = torch.device(config.device)
        torch.manual_seed(config.seed)
        model = set_se_impl(create_model(name, **kwargs), se_impl)
        size = tuple(model.default_input_size)
        if config.input_size is not None:
            size = (size[0],) + (config.input_size,) * (len(size) - 1)
        memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        if config.channels_last and len(size) != 3:
            raise ConfigError("--channels-last needs a 2-D (image) model")
        self.model = model.to(device=device, memory_format=memory_format)
        self.inputs = torch.randn((config.batch,) + size, device=device).contiguous(memory_format=memory_format)
        self.targets = torch.randint(0, max(1, getattr(model, "num_classes", 1)), (config.batch,), device=device)
        self.optimizer: torch.optim.Optimizer | None = None
        if config.mode == "train":
            # The paper's recipe (Sec. 5.1): SGD, momentum 0.9, weight decay 1e-4; a small step keeps the
            # weights finite over the repeats on random labels.
            self.optimizer = torch.optim.SGD(self.model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)
            self.model.train()
        else:
            self.model.eval()
        self.forward: Callable[[Tensor], Tensor] = torch.compile(self.model) if config.compile else self.model

    def autocast(self) -> contextlib.AbstractContextManager:
        if not self.config.amp:
            return contextlib.nullcontext()
        return torch.autocast(self.config.device, dtype=torch.bfloat16)

    def step(self) -> None:
        if self.optimizer is None:
            with torch.inference_mode(), self.autocast():
                self.forward(self.inputs)
            return
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            loss = F.cross_entropy(self.forward(self.inputs).float(), self.targets)
        loss.backward()
        self.optimizer.step()

    def timed_step(self) -> tuple[float, float]:
        """(wall-clock seconds, process CPU seconds) of one step."""
        _synchronize(self.config.device)
        start, start_cpu = time.perf_counter(), time.process_time()
        self.step()
        _synchronize(self.config.device)
        return time.perf_counter() - start, time.process_time() - start_cpu

    def state_bytes(self) -> int:
        """Bytes of the tensors alive between steps: weights, gradients, optimizer state, the batch."""
        tensors: list[Tensor] = [self.inputs, self.targets, *self.model.state_dict().values()]
        tensors += [p.grad for p in self.model.parameters() if p.grad is not None]
        if self.optimizer is not None:
            for state in self.optimizer.state.values():
                tensors += [v for v in state.values() if isinstance(v, Tensor)]
        return _storage_bytes(tensors)

    def measure_memory(self) -> tuple[int, int]:
        """(peak bytes of one training step, bytes autograd keeps for the backward pass)."""
        assert self.optimizer is not None
        self.optimizer.zero_grad(set_to_none=True)
        if self.config.device == "cuda":
            # The allocator's peak counts every tensor of the process (the other subject's too): take
            # what this step adds to what was allocated before it, plus this subject's own state.
            gc.collect()
            torch.cuda.synchronize()
            state, allocated = self.state_bytes(), torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            self.step()
            torch.cuda.synchronize()
            peak = state + torch.cuda.max_memory_allocated() - allocated
        else:
            before = self.state_bytes()
            peak = before + cpu_peak_bytes(self.step)
        return peak, self.saved_tensor_bytes()

    def saved_tensor_bytes(self) -> int:
        """Bytes of distinct storages autograd saves for the backward of one forward pass (activations),
        leaving out the parameters."""

        def forward() -> None:
            with self.autocast():
                self.forward(self.inputs)

        parameters = {p.untyped_storage().data_ptr() for p in self.model.parameters()}
        return sum(size for ptr, size in saved_storages(forward).items() if ptr not in parameters)


def saved_storages(fn: Callable[[], object]) -> dict[int, int]:
    """{storage address: bytes} of every tensor autograd saves for the backward pass while `fn` runs
    (`torch.autograd.graph.saved_tensors_hooks`). The graph stays usable for a backward pass.
    """
    storages: dict[int, int] = {}

    def pack(tensor: Tensor) -> Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor.detach()  # (the tensor itself would tie a saved output to its own node: a cycle)

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        fn()
    return storages


def _synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _storage_bytes(tensors: Sequence[Tensor]) -> int:
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())


def cpu_peak_bytes(fn: Callable[[], object]) -> int:
    """Peak of live CPU tensor bytes allocated while `fn` runs, from the profiler's memory records.

    Each profiler event carries the bytes allocated (less those freed) in its own span outside its
    children (`self_cpu_memory_usage`; allocations outside any operator are events of their own): summed
    in time order they give the live bytes after each operator, whose maximum is the peak at operator
    granularity. Frees of memory allocated before `fn` are not seen, so the result is the high-water
    mark of what `fn` itself allocated; add the bytes alive before it for the total.
    """
    from torch.profiler import ProfilerActivity, profile

    with _no_profiler_chatter(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    changes = sorted(
        (event.time_range.end, event.self_cpu_memory_usage)
        for event in prof.events()
        if event.self_cpu_memory_usage
    )
    live = peak = 0
    for _, size in changes:
        live += size
        peak = max(peak, live)
    return peak


@contextlib.contextmanager
def _no_profiler_chatter() -> Iterator[None]:
    """Drop the `USDT:... profiler_start` / `profiler_stop` lines that the profiler's C++ side (Kineto)
    writes straight to file descriptor 2 whatever its log level; everything else written there passes."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().splitlines(keepends=True) if not line.startswith(b"USDT:")]
            if kept:
                os.write(2, b"".join(kept))


# ---------------------------------------------------------------------------------------------------


def environment(config: BenchConfig | None = None, *, device: str = "cpu") -> dict[str, Any]:
    """The date, source revision, machine and software a measurement ran on (`config.device`, else
    `device`): what every measured table states (`provenance_line`)."""
    device = config.device if config is not None else device
    env: dict[str, Any] = {
        "date": datetime.date.today().isoformat(),
        "commit": source_commit(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "malloc": allocator.describe(),
    }
    if device == "cuda":
        env["gpu"] = torch.cuda.get_device_name()
    return env


def source_commit(tree: str | os.PathLike[str] | None = None) -> str:
    """The short git commit of a senet source tree (default: the one this module was imported from),
    with `-dirty` when src/ has uncommitted changes; "unknown" outside a git checkout."""
    root = Path(tree) if tree is not None else Path(__file__).resolve().parents[2]
    if not (root / "src" / "senet").is_dir():
        return "unknown (not a source checkout)"

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30, check=True)
        return done.stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--", "src")
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"
    return commit + ("-dirty" if dirty else "")


def provenance_line(env: dict[str, Any]) -> str:
    """One line naming what produced a measured table: date, commit, machine, torch (from `environment`)."""
    gpu = f", GPU {env['gpu']}" if env.get("gpu") else ""
    return (
        f"Measured {env['date']} at commit {env['commit']} on {env['cpu']} ({env['cpu_count']} cores, "
        f"{env['threads']} torch threads){gpu}, torch {env['torch']}."
    )


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@contextlib.contextmanager
def _num_threads(threads: int | None) -> Iterator[None]:
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def run_bench(config: BenchConfig, progress: Callable[[str], None] | None = None) -> BenchResult:
    """Build model and baseline, warm both up, time them alternately, then measure training memory."""
    from senet.models import model_entrypoint

    model_entrypoint(config.model)  # unknown names fail here, before anything is built
    if config.baseline is not None:
        model_entrypoint(config.baseline)
    if config.device == "cuda" and not torch.cuda.is_available():
        raise SenetError("--device cuda: no CUDA device is available here; use --device cpu")
    say = progress or (lambda message: None)
    if config.device == "cuda":  # what earlier measurements left in the caching allocator
        gc.collect()
        torch.cuda.empty_cache()

    with _num_threads(config.threads):
        subjects = [Subject(config.model, config.model_kwargs, config.se_impl, config)]
        if config.baseline is not None:
            same_network = config.baseline == config.model
            kwargs = config.model_kwargs if same_network else {
                k: v for k, v in config.model_kwargs.items() if k in SHARED_KWARGS
            }
            subjects.append(Subject(config.baseline, kwargs, config.baseline_se_impl or config.se_impl, config))
        if config.input_size is None:  # report the size measured: the model's own
            config = config.replace(input_size=int(subjects[0].inputs.shape[-1]))
        warmup_s = []
        for subject in subjects:
            say(f"warming up {subject.name} ({subject.se_impl}){' and compiling' if config.compile else ''}")
            start = time.perf_counter()
            for _ in range(max(1, config.warmup)):
                subject.step()
            warmup_s.append(time.perf_counter() - start)
        times: list[list[float]] = [[] for _ in subjects]
        cpu_times: list[list[float]] = [[] for _ in subjects]
        for round_index in range(config.repeats):
            order = range(len(subjects)) if round_index % 2 == 0 else reversed(range(len(subjects)))
            for index in order:
                wall, cpu = subjects[index].timed_step()
                times[index].append(wall)
                cpu_times[index].append(cpu)
            say(f"round {round_index + 1}/{config.repeats}: " + ", ".join(f"{1e3 * t[-1]:.1f} ms" for t in times))
        measurements = [
            Measurement(s.name, s.se_impl, config.batch, t, c, w)
            for s, t, c, w in zip(subjects, times, cpu_times, warmup_s)
        ]
        if config.mode == "train" and config.memory:
            for subject, measurement in zip(subjects, measurements):
                say(f"measuring the training memory of {subject.name}")
                measurement.peak_bytes, measurement.saved_bytes = subject.measure_memory()
        env = environment(config)
    return BenchResult(config, measurements[0], measurements[1] if len(measurements) > 1 else None, env)


# ---------------------------------------------------------------------------------------------------
# Reporting


def format_result(result: BenchResult) -> str:
    """Human-readable lines for one result."""
    from senet.models import is_se_model

    config = result.config
    settings = (
        f"{config.mode}, batch {config.batch}, input {config.input_size}, {config.device}"
        f"{', compiled' if config.compile else ', eager'}{', channels_last' if config.channels_last else ''}"
        f"{', bf16 autocast' if config.amp else ', fp32'}, {result.environment['threads']} threads, "
        f"{config.repeats} rounds{', malloc: ' + result.environment['malloc'] if config.device == 'cpu' else ''}"
    )
    lines = [settings, f"  {'':28s} {'median ms':>10s} {'min ms':>9s} {'img/s':>8s} {'peak MB':>9s} {'saved MB':>9s}"]
    for m in (result.model, result.baseline):
        if m is None:
            continue
        d = m.as_dict()
        label = m.name + (f" ({m.se_impl})" if is_se_model(m.name) else "")  # a plain model has no SE to fuse
        peak = "" if d["peak_mb"] is None else f"{d['peak_mb']:.1f}"
        saved = "" if d["saved_mb"] is None else f"{d['saved_mb']:.1f}"
        lines.append(f"  {label:28s} {m.median_ms:10.1f} {m.min_ms:9.1f} {m.images_per_s:8.2f} {peak:>9s} {saved:>9s}")
    for impl in dict.fromkeys(m.se_impl for m in (result.model, result.baseline) if m is not None and is_se_model(m.name)):
        lines.append(f"  SE path ({impl}): {se_path(impl, config.device, config.compile)}")
    if result.baseline is not None:
        lines.append(
            f"  time ratio model/baseline: {result.ratio:.3f} (median of paired rounds; "
            f"medians {result.ratio_of_medians:.3f}, minima {result.ratio_of_minima:.3f}); "
            f"CPU time ratio {result.cpu_ratio:.3f}"
        )
        if result.memory_ratio is not None:
            lines.append(f"  peak memory ratio: {result.memory_ratio:.3f}")
    return "\n".join(lines)


def markdown_table(results: Sequence[BenchResult]) -> str:
    """A Markdown table of results, one row per (model, baseline, mode, compile) measurement."""
    header = (
        "| model | baseline | mode | exec | model ms (median / min) | baseline ms (median / min) "
        "| ratio | ratio of minima | CPU-time ratio | peak MB model / baseline | memory ratio |"
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in results:
        c = r.config
        exec_mode = ("compiled" if c.compile else "eager") + (", CL" if c.channels_last else "") + (", bf16" if c.amp else "")
        base = r.baseline
        model_label = r.model.name + (f" ({r.model.se_impl})" if base is not None and base.name == r.model.name else "")
        base_label = "" if base is None else base.name + (f" ({base.se_impl})" if base.name == r.model.name else "")
        peak = "" if r.model.peak_bytes is None else f"{r.model.peak_bytes / 2**20:.0f}"
        if base is not None and base.peak_bytes is not None:
            peak += f" / {base.peak_bytes / 2**20:.0f}"
        lines.append(
            f"| {model_label} | {base_label} | {c.mode} | {exec_mode} "
            f"| {r.model.median_ms:.1f} / {r.model.min_ms:.1f} "
            f"| {'' if base is None else f'{base.median_ms:.1f} / {base.min_ms:.1f}'} "
            f"| {'' if r.ratio is None else f'{r.ratio:.3f}'} "
            f"| {'' if r.ratio_of_minima is None else f'{r.ratio_of_minima:.3f}'} "
            f"| {'' if r.cpu_ratio is None else f'{r.cpu_ratio:.3f}'} "
            f"| {peak} | {'' if r.memory_ratio is None else f'{r.memory_ratio:.3f}'} |"
        )
    return "\n".join(lines)
