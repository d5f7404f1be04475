"""The paper's ablations as sweeps of ordinary training runs (Sec. 6, Tables 10-16): `senet ablate`.

A study is a list of SE variants, each a set of create_model keywords (reduction, squeeze, gate,
se_stages, se_position), plus the plain twin as the baseline. Every (variant, seed) is an ordinary run
folder `DIR/<variant>/seed-<s>` trained by the training engine; a variant's folder name holds only the
SE settings that differ from the model's defaults, so identical networks share one run (the reduction
study's r = 16 is the gate study's sigmoid). `DIR/sweep.json` records each run's configuration: a later
call into DIR trains only what is missing, resumes interrupted runs from their newest checkpoint, and
refuses settings that differ from those the runs were trained with.
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import json
import math
import shlex
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from senet.engine.config import RunConfig
from senet.engine.train import CONFIG_FILE, METRICS_FILE, flatten_config, prepare_config
from senet.errors import ConfigError, SenetError, did_you_mean, shown
from senet.weights.checkpoint import atomic_write, read_record
from senet.options import GRID, STUDY_TABLES
from senet.weights.lock import FolderLock
from senet.weights.record import plain

SWEEP_FILE = "sweep.json"
SWEEP_IN_USE = "wait for it to finish, or give another --output"
SHORT_WAIT = 30.0  # seconds a Slurm array's run waits for another's update of sweep.json
# Settings every listed `senet train` command names, even where the recipe has the same.
ALWAYS_SPELLED = ("model.name", "data.spec", "train.seed")

# The paper's ablations (ResNet-50 on ImageNet, the ablation recipe; top-1 error %, paper-facts.md Sec. 4).
PAPER_BASELINE = 23.30


@dataclass(frozen=True)
class Study:
    """One of the paper's ablations: labelled SE variants (create_model keywords) and the paper's top-1 errors."""

    name: str
    table: str
    title: str
    variants: tuple[tuple[str, dict[str, Any]], ...]
    paper: Mapping[str, float] = field(default_factory=dict)


STUDIES: dict[str, Study] = {
    study.name: study
    for study in (
        Study("reduction", STUDY_TABLES["reduction"], "reduction ratio r",
              tuple((f"r = {r}", {"reduction": r}) for r in (2, 4, 8, 16, 32)),
              {"r = 2": 22.29, "r = 4": 22.25, "r = 8": 22.26, "r = 16": 22.28, "r = 32": 22.72}),
        Study("squeeze", STUDY_TABLES["squeeze"], "squeeze operator",
              (("avg", {"squeeze": "avg"}), ("max", {"squeeze": "max"})), {"avg": 22.28, "max": 22.57}),
        Study("gate", STUDY_TABLES["gate"], "excitation non-linearity",
              tuple((gate, {"gate": gate}) for gate in ("sigmoid", "tanh", "relu")),
              {"sigmoid": 22.28, "tanh": 23.00, "relu": 23.47}),
        Study("stages", STUDY_TABLES["stages"], "SE in one stage only", (),  # the model's own stages, see `study_variants`
              {"SE_Stage_2": 23.03, "SE_Stage_3": 23.04, "SE_Stage_4": 22.68, "SE_All": 22.28}),
        Study("position", STUDY_TABLES["position"], "SE integration (Fig. 5)",
              (("SE", {"se_position": "standard"}), ("SE-PRE", {"se_position": "pre"}),
               ("SE-POST", {"se_position": "post"}), ("SE-Identity", {"se_position": "identity"})),
              {"SE": 22.28, "SE-PRE": 22.23, "SE-POST": 22.78, "SE-Identity": 22.20}),
        Study("3x3", STUDY_TABLES["3x3"], "SE after the 3x3 convolution",
              (("SE", {"se_position": "standard"}), ("SE_3x3", {"se_position": "3x3"})), {"SE": 22.28}),
        Study("nosqueeze", STUDY_TABLES["nosqueeze"], "no global pooling (FCs as 1x1 convolutions at every position)",
              (("SE", {"squeeze": "avg"}), ("NoSqueeze", {"squeeze": "none"})), {"SE": 22.28}),
    )
}


def model_stages(model: str, base: Mapping[str, Any] | None = None) -> list[int]:
    """The `se_stages` numbers `model` accepts (paper numbering: conv2_x = 2 ...), as its family declares them."""
    from senet.models import create_model

    with torch.device("meta"):
        return list(create_model(model, **(base or {})).stage_info.se_stages)


def parse_grid(items: Sequence[str]) -> list[tuple[str, dict[str, Any]]]:
    """`["reduction=4,8", "gate=sigmoid,tanh"]` -> the labelled variants of every combination.

    Values are YAML scalars; a tuple value (se_stages) joins its items with '+': `se_stages=3+4,4`.
    """
    axes: list[tuple[str, list[Any]]] = []
    for item in items:
        key, eq, values = item.partition("=")
        if not eq or not key or not values:
            raise ConfigError(f"--grid takes KEY=V1,V2,... (e.g. reduction=4,8 gate=sigmoid,tanh), got {item!r}")
        parsed = []
        for value in values.split(","):
            if "+" in value:
                parsed.append(tuple(yaml.safe_load(part) for part in value.split("+")))
            else:
                parsed.append(yaml.safe_load(value))
        axes.append((key.strip().replace("-", "_"), parsed))
    if not axes:
        raise ConfigError("the grid study needs --grid KEY=V1,V2 ... (e.g. --grid reduction=4,8 gate=sigmoid,tanh)")
    variants = []
    for combination in itertools.product(*(values for _, values in axes)):
        kwargs = {key: value for (key, _), value in zip(axes, combination)}
        label = ", ".join(f"{key}={_text(value)}" for key, value in kwargs.items())
        variants.append((label, kwargs))
    return variants


def study_variants(study: str, model: str, base: Mapping[str, Any], grid: Sequence[str] = ()) -> list[tuple[str, dict[str, Any]]]:
    """The labelled SE variants of `study` for `model` (without the baseline)."""
    if study == GRID:
        return parse_grid(grid)
    if study == "stages":
        stages = model_stages(model, {k: v for k, v in base.items() if k != "se_stages"})
        return [(f"SE_Stage_{s}", {"se_stages": (s,)}) for s in stages] + [("SE_All", {"se_stages": None})]
    return list(STUDIES[study].variants)


def check_study(name: str) -> str:
    """`name` if it is a study, else a ConfigError with the closest names."""
    names = [*STUDIES, GRID]
    if name not in names:
        raise ConfigError(f"unknown study {name!r}{did_you_mean(name, names)}; choose from: {', '.join(names)}")
    return name


# ---------------------------------------------------------------------------------------------------
# Planning: every (variant, seed) as a run folder and its config.


@dataclass
class Run:
    """One training run of the sweep: a variant (or the baseline) at one seed, in `folder`."""

    index: int
    variant: str  # folder name of the variant: the model and the SE settings that differ from its defaults
    model: str
    kwargs: dict[str, Any]
    seed: int
    folder: Path
    config: RunConfig

    @property
    def finished(self) -> bool:
        return (self.folder / "model.safetensors").is_file()


@dataclass
class Row:
    """A row of a study's table: the label, the variant's folder name, and the paper's top-1 error if any."""

    study: str
    label: str
    variant: str
    paper: float | None


@dataclass
class Sweep:
    """A planned sweep: the runs (each variant at each seed, shared between studies) and each study's rows."""

    output: Path
    model: str
    recipe: str
    studies: list[str]
    seeds: list[int]
    runs: list[Run]
    rows: list[Row]
    notes: list[str]

    def runs_of(self, variant: str) -> list[Run]:
        return [run for run in self.runs if run.variant == variant]


def _text(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return "+".join(str(v) for v in value)
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:g}" if isinstance(value, float) else str(value)


def canonical_kwargs(model: str, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """`kwargs` with the SE settings that equal `model`'s defaults left out (ConfigError if it cannot be built).

    Two keyword sets that give the same SE configuration thus give the same run: r = 16 is the default.
    """
    from senet.models import create_model
    from senet.models.registry import SE_KWARGS

    with torch.device("meta"):
        built = create_model(model, **kwargs)
        default = create_model(model, **{k: v for k, v in kwargs.items() if k not in SE_KWARGS})
    se, se_default = getattr(built, "se_config", None), getattr(default, "se_config", None)
    if se is None or se_default is None:
        return {k: v for k, v in kwargs.items() if v is not None}
    out = {}
    for key, value in kwargs.items():
        if key in SE_KWARGS:
            if getattr(se, SE_KWARGS[key]) != getattr(se_default, SE_KWARGS[key]):
                out[key] = getattr(se, SE_KWARGS[key])
        elif value is not None:
            out[key] = value
    return out


def variant_name(model: str, kwargs: Mapping[str, Any], common: Mapping[str, Any]) -> str:
    """Folder name: `se_resnet20-reduction=2`; settings every run shares (`common`) are left out."""
    parts = [f"{key}={_text(value)}" for key, value in kwargs.items() if common.get(key, object()) != value]
    return "-".join([model, *parts])


def plan_sweep(
    studies: Sequence[str],
    *,
    model: str | None,
    recipe: str,
    overrides: Mapping[str, Any],
    seeds: Sequence[int],
    output: str | Path,
    grid: Sequence[str] = (),
) -> Sweep:
    """Every run of `studies` on `model` at `seeds`, with `overrides` (RunConfig dotted keys) on `recipe`.

    SE keywords among the overrides (model.kwargs.*) apply to every SE variant (a variant's own keyword
    wins); the baseline, the plain twin, keeps only the non-SE ones. Raises ConfigError for a study the
    model cannot run (e.g. se_position on a family with one placement).
    """
    from senet.models import is_se_model, plain_twin
    from senet.models.registry import SE_KWARGS

    for study in studies:
        check_study(study)
    notes: list[str] = []
    base_config = prepare_config(recipe, dict(overrides), notes=notes)[0]
    model = model or base_config.model.name
    if model is None:
        raise ConfigError(f"recipe {recipe} names no model; pass --model (an SE model such as se_resnet20)")
    if not is_se_model(model):
        raise ConfigError(f"{model} has no SE blocks to ablate; give an SE model (e.g. se_{model})")
    base = dict(base_config.model.kwargs)
    common = {k: v for k, v in base.items() if k not in SE_KWARGS}
    twin = plain_twin(model)
    rest = {k: v for k, v in overrides.items() if not k.startswith("model.")}

    variants: dict[str, tuple[str, dict[str, Any]]] = {}
    rows: list[Row] = []
    for study in studies:
        paper = STUDIES[study].paper if study in STUDIES else {}
        baseline = variant_name(twin, common, common)
        rows.append(Row(study, f"plain ({twin})", baseline, PAPER_BASELINE if paper else None))
        variants.setdefault(baseline, (twin, common))
        for label, kwargs in study_variants(study, model, base, grid):
            try:
                settings = canonical_kwargs(model, {**base, **kwargs})
            except ConfigError as error:
                raise ConfigError(f"the {study} study's variant {label} does not fit {model}: {error}") from None
            name = variant_name(model, settings, common)
            variants.setdefault(name, (model, settings))
            rows.append(Row(study, label, name, paper.get(label)))

    runs: list[Run] = []
    output = Path(output)
    for seed in seeds:  # seed-major: a sweep cut short has every variant at its first seeds
        for name, (network, kwargs) in variants.items():
            settings = {**rest, "model.name": network, "model.kwargs": plain(kwargs), "train.seed": seed}
            config = prepare_config(recipe, settings)[0]
            runs.append(Run(len(runs), name, network, kwargs, seed, output / name / f"seed-{seed}", config))
    return Sweep(output, model, recipe, list(studies), list(seeds), runs, rows, notes)


def record_sweep(sweep: Sweep) -> None:
    """Check that DIR holds no runs planned with other settings, then record this plan in DIR/sweep.json.

    A later call may add studies or seeds to a sweep, but every run must share the training settings,
    data and model of the runs already there: anything else is a ConfigError naming the differences.
    """
    with FolderLock(sweep.output, fix=SWEEP_IN_USE, wait=SHORT_WAIT):  # (read, check, write: one at a time)
        path = sweep.output / SWEEP_FILE
        record: dict[str, Any] = {}
        if path.is_file():
            try:
                record = json.loads(path.read_text())
                record["runs"] = dict(record["runs"])
            except (ValueError, KeyError, TypeError):
                raise ConfigError(f"{path} is not a readable sweep record; move it away to start the sweep afresh") from None
        recorded: dict[str, Any] = record.get("runs", {})
        if record.get("model", sweep.model) != sweep.model:
            raise ConfigError(f"{sweep.output} holds a sweep of {record['model']}; ablate {sweep.model} with another --output")
        planned = {str(run.folder.relative_to(sweep.output)): run.config.to_dict() for run in sweep.runs}
        for key, before in recorded.items():
            # Every run of a sweep shares all but its network and seed; a run planned again must match in full.
            after = planned.get(key, next(iter(planned.values())))
            differences = _differences(before, after, shared_only=key not in planned)
            if differences:
                raise ConfigError(
                    f"{sweep.output} holds a sweep trained with other settings ({'; '.join(differences[:3])}); "
                    "repeat the earlier settings or choose another --output"
                )
        sweep.output.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"model": sweep.model, "runs": recorded | planned}, indent=1)
        atomic_write(path, lambda temp: temp.write_text(text))


def _differences(before: dict[str, Any], after: dict[str, Any], *, shared_only: bool) -> list[str]:
    """`key: old -> new` for each setting that differs (only those all runs share, if `shared_only`)."""
    old, new = flatten_config(before), flatten_config(after)
    keys = sorted(set(old) | set(new))
    if shared_only:
        keys = [k for k in keys if k not in ("model.name", "model.kwargs", "train.seed")]
    return [f"{k}: {shown(old.get(k))} -> {shown(new.get(k))}" for k in keys if old.get(k) != new.get(k)]


def train_commands(sweep: Sweep, flags: Mapping[str, str] | None = None) -> list[str]:
    """Each run's complete `senet train` command, in run order (the numbers `--only` takes, from 0).

    Every setting that differs from the recipe is spelled out: as its dedicated flag where `flags` maps
    the dotted key to one (`schedule.epochs` -> `--epochs`), else as `--set key=value`. The run folder is
    given as `--resume DIR`, which starts the run there or continues it.
    """
    flags = dict(flags or {})
    default = flatten_config(prepare_config(sweep.recipe, {})[0].to_dict())
    commands = []
    for run in sweep.runs:
        words = ["senet", "train", "--recipe", sweep.recipe]
        for key, value in flatten_config(run.config.to_dict()).items():
            if key == "model.kwargs":
                for name, setting in value.items():
                    words += _spelled(f"model.kwargs.{name}", setting, flags)
            elif key in ALWAYS_SPELLED or (key != "recipe" and value != default.get(key)):
                words += _spelled(key, value, flags)
        words += ["--resume", str(run.folder)]
        commands.append(shlex.join(words))
    return commands


def _spelled(key: str, value: Any, flags: Mapping[str, str]) -> list[str]:
    """Command-line words that set `key` to `value`: its flag where it has one, else `--set key=value`."""
    flag = flags.get(key)
    if flag and isinstance(value, bool):
        return [flag] if value else ["--set", f"{key}=false"]
    if flag and isinstance(value, list) and all(isinstance(v, int) for v in value):
        return [flag, ",".join(map(str, value))]  # se_stages
    if flag and value is not None and not isinstance(value, (list, dict)):
        return [flag, str(value)]
    text = str(value) if isinstance(value, str) else json.dumps(plain(value))
    if yaml.safe_load(text) != value:  # a string YAML would read as something else ("none", "1e3")
        text = json.dumps(value)
    return ["--set", f"{key}={text}"]


# ---------------------------------------------------------------------------------------------------
# Running and collecting.


def run_sweep(
    sweep: Sweep, *, jobs: int = 1, only: int | None = None, log: Callable[[str], None] = print
) -> None:
    """Train every unfinished run of the sweep (or just run `only`), `jobs` at a time; a line per run."""
    from senet.engine.pool import train_many

    record_sweep(sweep)
    total = len(sweep.runs)
    if only is not None:
        if not 0 <= only < total:
            raise ConfigError(f"--only {only} is not a run of this sweep; its runs are numbered 0 to {total - 1} (--list)")
        selected = [sweep.runs[only]]
    else:
        selected = list(sweep.runs)
    todo = [run for run in selected if not run.finished]
    finished = len(selected) - len(todo)
    if finished:
        log(f"{finished} of {len(selected)} run(s) already finished in {sweep.output}: skipped")
    started = sum((run.folder / "checkpoints").is_dir() for run in todo)
    if started:
        log(f"{started} interrupted run(s) resume from their newest checkpoint")
    done = [finished]

    def report(position: int, summary: dict[str, Any]) -> None:
        run = todo[position]
        done[0] += 1
        where = f"[{done[0]}/{len(selected)}] run {run.index}: {run.variant} seed {run.seed}"
        if "error" in summary:
            log(f"{where}: failed: {summary['error']}")
            return
        final = summary["history"][-1]
        log(f"{where}: top-1 error {final['val_top1_err']:.2f}%, top-5 {final['val_top5_err']:.2f}% "
            f"({summary['train_seconds']:.1f} s training)")

    train_many([(run.config, str(run.folder), True) for run in todo], jobs, report)


@dataclass
class Result:
    """A study row with its measured means and standard deviations over the finished seeds."""

    row: Row
    seeds: int
    params: int | None = None
    gmacs: float | None = None
    top1: tuple[float, float] | None = None
    top5: tuple[float, float] | None = None
    train_seconds: float | None = None


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan


def collect(sweep: Sweep) -> list[Result]:
    """The finished runs of each row: final validation errors (mean, sample std over seeds), params, GMACs."""
    from senet.analysis.complexity import complexity
    from senet.models import create_model

    measured: dict[str, Result] = {}
    results = []
    for row in sweep.rows:
        if row.variant not in measured:
            result = Result(row, 0)
            runs = [run for run in sweep.runs_of(row.variant) if run.finished]
            finals, seconds = [], []
            for run in runs:
                history = [json.loads(line) for line in (run.folder / METRICS_FILE).read_text().splitlines() if line.strip()]
                finals.append(history[-1])
                seconds.append(sum(h["train_seconds"] for h in history))
            if runs:
                record = read_record(runs[0].folder / "model.safetensors")
                with torch.device("meta"):
                    network = create_model(record.model, **record.kwargs)
                size = record.input_size
                stats = complexity(network, (record.channels, *(size,) * (len(network.default_input_size) - 1)))
                result.seeds, result.params, result.gmacs = len(runs), stats.params, stats.gmacs
                result.top1 = _mean_std([f["val_top1_err"] for f in finals])
                result.top5 = _mean_std([f["val_top5_err"] for f in finals])
                result.train_seconds = statistics.fmean(seconds)
            measured[row.variant] = result
        results.append(Result(row, **{k: v for k, v in vars(measured[row.variant]).items() if k != "row"}))
    return results


def _pm(value: tuple[float, float] | None) -> str:
    if value is None:
        return "-"
    mean, std = value
    return f"{mean:.2f}" if math.isnan(std) else f"{mean:.2f} ± {std:.2f}"


def write_results(sweep: Sweep, results: list[Result]) -> dict[str, Path]:
    """DIR/results.csv, results.md and results.png (error per variant with error bars over seeds)."""
    from senet.analysis.plots import plot_ablation

    out = sweep.output
    header = ["study", "variant", "run", "seeds", "params", "gmacs", "top1_err_mean", "top1_err_std",
              "top5_err_mean", "top5_err_std", "train_seconds", "paper_top1_err"]

    def csv_row(r: Result) -> list[Any]:
        top1, top5 = r.top1 or (None, None), r.top5 or (None, None)
        return [r.row.study, r.row.label, r.row.variant, r.seeds, r.params, None if r.gmacs is None else round(r.gmacs, 6),
                *(None if v is None or math.isnan(v) else round(v, 4) for v in (*top1, *top5)),
                None if r.train_seconds is None else round(r.train_seconds, 1), r.row.paper]

    def write_csv(temp: Path) -> None:
        with open(temp, "w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(header)
            writer.writerows(csv_row(r) for r in results)

    atomic_write(out / "results.csv", write_csv)
    lines = [f"# Ablations of {sweep.model}", "",
             f"Seeds {', '.join(map(str, sweep.seeds))}; errors are the final validation errors (%), mean ± sample "
             "standard deviation over the finished seeds; GMACs at the training input size (senet.complexity).", ""]
    for study in sweep.studies:
        title = f"{STUDIES[study].table}: {STUDIES[study].title}" if study in STUDIES else "custom grid"
        paper = study in STUDIES
        lines += [f"## {study} ({title})", "",
                  "| variant | params | GMACs | top-1 err | top-5 err | seeds | train time (s) |"
                  + (" paper top-1 err |" if paper else ""),
                  "|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if paper else "")]
        for r in (r for r in results if r.row.study == study):
            cells = [r.row.label, "-" if r.params is None else f"{r.params / 1e6:.4f}M",
                     "-" if r.gmacs is None else f"{r.gmacs:.5f}", _pm(r.top1), _pm(r.top5), str(r.seeds),
                     "-" if r.train_seconds is None else f"{r.train_seconds:.0f}"]
            if paper:
                cells.append("-" if r.row.paper is None else f"{r.row.paper:.2f}")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    if any(study in STUDIES for study in sweep.studies):
        lines.append("The paper's column: ResNet-50 on ImageNet with the paper's ablation recipe (Sec. 6, top-1 error %).")
    atomic_write(out / "results.md", lambda temp: temp.write_text("\n".join(lines) + "\n"))
    figure = plot_ablation(
        {study: [(r.row.label, r.top1, r.top5) for r in results if r.row.study == study] for study in sweep.studies},
        out / "results.png",
        title=f"{sweep.model}: validation error per variant (mean ± std over seeds)",
    )
    return {"csv": out / "results.csv", "md": out / "results.md", "png": figure}


def format_results(results: list[Result]) -> str:
    """The results as a plain-text table for the terminal."""
    lines = [f"{'study':10s} {'variant':22s} {'params':>9s} {'top-1 err':>15s} {'top-5 err':>15s} {'seeds':>5s} {'paper':>6s}"]
    for r in results:
        params = "-" if r.params is None else f"{r.params / 1e6:.4f}M"
        paper = "" if r.row.paper is None else f"{r.row.paper:.2f}"
        lines.append(f"{r.row.study:10s} {r.row.label:22s} {params:>9s} {_pm(r.top1):>15s} {_pm(r.top5):>15s} {r.seeds:5d} {paper:>6s}")
    return "\n".join(lines)


def ablate(
    studies: Sequence[str],
    *,
    model: str | None,
    recipe: str,
    overrides: Mapping[str, Any],
    seeds: Sequence[int],
    output: str | Path,
    grid: Sequence[str] = (),
    jobs: int = 1,
    only: int | None = None,
    collect_only: bool = False,
    log: Callable[[str], None] = print,
) -> list[Result]:
    """`senet ablate`: plan the sweep, train what is unfinished (unless `collect_only`), write the results.

    With `only`, just that run trains and the results are left for a later call (or `collect_only`).
    """
    # A whole sweep is one writer of DIR; the runs of a Slurm array (`only`) share it, each locking its run.
    with FolderLock(output, fix=SWEEP_IN_USE) if only is None else contextlib.nullcontext():
        sweep = plan_sweep(studies, model=model, recipe=recipe, overrides=overrides, seeds=seeds, output=output, grid=grid)
        for note in sweep.notes:
            log(note)
        variants = len({run.variant for run in sweep.runs})
        if collect_only:
            record_sweep(sweep)
        else:
            log(f"senet ablate {', '.join(studies)} on {sweep.model}: {variants} networks x {len(seeds)} seed(s) = "
                f"{len(sweep.runs)} runs in {sweep.output}, {jobs} at a time")
            run_sweep(sweep, jobs=jobs, only=only, log=log)
            if only is not None:
                return []
        results = collect(sweep)
        paths = write_results(sweep, results)
        log(format_results(results))
        missing = sum(not run.finished for run in sweep.runs)
        if missing:
            log(f"{missing} of {len(sweep.runs)} runs not finished yet; the table holds the finished ones")
        log(f"results: {paths['md']}, {paths['csv']}, {paths['png']}")
        return results


def list_commands(
    studies: Sequence[str],
    *,
    model: str | None,
    recipe: str,
    overrides: Mapping[str, Any],
    seeds: Sequence[int],
    output: str | Path,
    grid: Sequence[str] = (),
    flags: Mapping[str, str] | None = None,
) -> list[str]:
    """`senet ablate --list`: record the sweep in DIR and return each run's `senet train` command."""
    sweep = plan_sweep(studies, model=model, recipe=recipe, overrides=overrides, seeds=seeds, output=output, grid=grid)
    record_sweep(sweep)
    return train_commands(sweep, flags)


__all__ = ["STUDIES", "Study", "Sweep", "ablate", "check_study", "collect", "list_commands", "plan_sweep", "SenetError"]
