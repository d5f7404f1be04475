"""Weights already on the machine: the caches other libraries fill, searched by model name. Nothing is downloaded.

Two places, as those libraries lay them out:

- the Hugging Face hub cache timm downloads into: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
  `$XDG_CACHE_HOME/huggingface/hub` or `~/.cache/huggingface/hub`; a repo `timm/seresnet50.a1_in1k` is the
  folder `models--timm--seresnet50.a1_in1k/snapshots/<revision>/` holding `model.safetensors` or
  `pytorch_model.bin` (the revision `refs/main` names first, else the newest);
- the torch hub checkpoint folder torchvision, Cadene's pretrainedmodels and older timm releases download
  into: `$TORCH_HOME/hub/checkpoints`, else `$XDG_CACHE_HOME/torch/hub/checkpoints` or
  `~/.cache/torch/hub/checkpoints`, each file under its URL's last part.

The names looked for come from those libraries: timm's pretrained configs (`senet.models.timm_names`, its
hf_hub_id and url of each tag), torchvision's weight enums and pretrainedmodels' URLs (below). `cache_dir`
replaces both roots (as timm's `create_model(cache_dir=)`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from senet.errors import SenetError
from senet.models.registry import resolve_name
from senet.models.timm_names import ALIASES as TIMM_ALIASES
from senet.models.timm_names import PRETRAINED as TIMM_PRETRAINED

HUB_WEIGHTS = ("model.safetensors", "pytorch_model.bin")

# torchvision 0.29's weight enums (`torchvision.models.get_model_weights(name)`), the DEFAULT weights first:
# the file each URL names. Checked against torchvision by tests/test_weights_cache.py (peer).
TORCHVISION_FILES: dict[str, tuple[str, ...]] = {
    "resnet18": ("resnet18-f37072fd.pth",),
    "resnet34": ("resnet34-b627a593.pth",),
    "resnet50": ("resnet50-11ad3fa6.pth", "resnet50-0676ba61.pth"),
    "resnet101": ("resnet101-cd907fc2.pth", "resnet101-63fe2227.pth"),
    "resnet152": ("resnet152-f82ba261.pth", "resnet152-394f9c45.pth"),
    "resnext50_32x4d": ("resnext50_32x4d-1a0047aa.pth", "resnext50_32x4d-7cdf4587.pth"),
    "resnext101_32x8d": ("resnext101_32x8d-110c445d.pth", "resnext101_32x8d-8ba56ff5.pth"),
    "resnext101_64x4d": ("resnext101_64x4d-173b62eb.pth",),
    "mobilenet_v3_large": ("mobilenet_v3_large-5c1a4163.pth", "mobilenet_v3_large-8738ca79.pth"),
    "mobilenet_v3_small": ("mobilenet_v3_small-047dcff4.pth",),
}

# Cadene's pretrainedmodels (pretrainedmodels/models/senet.py, `pretrained_settings[...]["imagenet"]["url"]`):
# the official release converted, the paper's layout (senet's defaults).
PRETRAINEDMODELS_FILES: dict[str, tuple[str, ...]] = {
    "senet154": ("senet154-c7b49a05.pth",),
    "se_resnet50": ("se_resnet50-ce0d4300.pth",),
    "se_resnet101": ("se_resnet101-7e38fcc6.pth",),
    "se_resnet152": ("se_resnet152-d17c99b7.pth",),
    "se_resnext50_32x4d": ("se_resnext50_32x4d-a260b3a4.pth",),
    "se_resnext101_32x4d": ("se_resnext101_32x4d-3b2fe3d8.pth",),
}


class WeightsNotFoundError(SenetError):
    """No cached weights for a model name (the message says where senet looked and for which names)."""


@dataclass(frozen=True)
class Wanted:
    """One file that would hold a model's weights: a hub repo (`repo`) or a torch hub checkpoint file (`file`),
    with the library that wrote it (a `senet.interop.sources` source) and timm's pretrained tag."""

    source: str
    repo: str = ""
    file: str = ""
    tag: str = ""


@dataclass(frozen=True)
class Found:
    """Cached weights: the file (or hub snapshot folder, with config.json) and what it was wanted as."""

    path: Path
    wanted: Wanted


def hub_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """The Hugging Face hub cache (huggingface_hub's rules; `cache_dir` instead if given)."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return _xdg_cache() / "huggingface" / "hub"


def torch_checkpoint_dir(cache_dir: str | Path | None = None) -> Path:
    """The torch hub checkpoint folder (torch.hub's rules; `cache_dir` instead if given)."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get("TORCH_HOME"):
        return Path(os.environ["TORCH_HOME"]).expanduser() / "hub" / "checkpoints"
    return _xdg_cache() / "torch" / "hub" / "checkpoints"


def _xdg_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser()


def _timm_wanted(timm_name: str, tag: str = "") -> list[Wanted]:
    source = "timm-legacy" if timm_name.startswith("legacy_") else "timm"
    out = []
    for entry in TIMM_PRETRAINED.get(timm_name, []):
        if tag and entry["tag"] != tag:
            continue
        if entry.get("hf_hub_id"):
            out.append(Wanted(source, repo=entry["hf_hub_id"], tag=entry["tag"]))
        if entry.get("url"):  # timm before the hub, and its legacy weights, kept the URL's file
            out.append(Wanted(source, file=entry["url"].rsplit("/", 1)[-1], tag=entry["tag"]))
    return out


def wanted(model_name: str) -> list[Wanted]:
    """The cached files that would hold `model_name`'s weights, in order of preference: timm's names their
    tags' hub repos and files (the default tag first; `name.tag` that tag only); senet's names the official
    release (timm's `legacy_*` repo, pretrainedmodels' file) or torchvision's files."""
    resolve_name(model_name)  # UnknownModelError for a name senet does not have
    base, _, tag = model_name.partition(".")
    if base in TIMM_ALIASES:
        return _timm_wanted(base, tag)
    out: list[Wanted] = []
    for alias, (senet_name, _) in TIMM_ALIASES.items():
        if alias.startswith("legacy_") and senet_name == base:
            out += _timm_wanted(alias)
    out += [Wanted("timm-legacy", file=f) for f in PRETRAINEDMODELS_FILES.get(base, ())]
    out += [Wanted("torchvision", file=f) for f in TORCHVISION_FILES.get(base, ())]
    unique: dict[tuple[str, str], Wanted] = {}  # (timm kept pretrainedmodels' files under the same names)
    for want in out:
        unique.setdefault((want.repo, want.file), want)
    return list(unique.values())


def is_model_name(text: str) -> bool:
    """Whether `text` names a model (senet's or timm's, with or without a tag) rather than a file."""
    try:
        resolve_name(text)
    except SenetError:
        return False
    return True


def _hub_snapshot(root: Path, repo: str) -> Path | None:
    """The snapshot folder of `repo` in the hub cache `root` that holds weights, or None."""
    folder = root / ("models--" + repo.replace("/", "--"))
    snapshots = folder / "snapshots"
    if not snapshots.is_dir():
        return None
    order: list[Path] = []
    try:
        main = (folder / "refs" / "main").read_text().strip()
        order.append(snapshots / main)
    except OSError:
        pass
    order += sorted((p for p in snapshots.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)
    return next((p for p in order if any((p / w).is_file() for w in HUB_WEIGHTS)), None)


def locate(want: Wanted, cache_dir: str | Path | None = None) -> Path | None:
    """Where `want` is on this machine: a hub snapshot's weights file (its folder where config.json is
    beside it, so that its pretrained_cfg is read too) or a torch hub checkpoint file; None if absent."""
    if want.repo:
        snapshot = _hub_snapshot(hub_cache_dir(cache_dir), want.repo)
        if snapshot is None:
            return None
        if (snapshot / "config.json").is_file():
            return snapshot
        return next(snapshot / w for w in HUB_WEIGHTS if (snapshot / w).is_file())
    path = torch_checkpoint_dir(cache_dir) / want.file
    return path if path.is_file() else None


def find_weights(model_name: str, cache_dir: str | Path | None = None) -> Found:
    """The first cached weights of `model_name` (`wanted`'s order), or WeightsNotFoundError saying where
    senet looked, for which names, and that it downloads nothing."""
    candidates = wanted(model_name)
    for want in candidates:
        path = locate(want, cache_dir)
        if path is not None:
            return Found(path, want)
    if not candidates:
        raise WeightsNotFoundError(
            f"no released weights are known for {model_name} (timm, torchvision and pretrainedmodels publish none); "
            f"train it, or pass a checkpoint file (checkpoint_path=, --pretrained FILE)"
        )
    repos = [w.repo for w in candidates if w.repo]
    files = [w.file for w in candidates if w.file]
    looked = []
    if repos:
        looked.append(f"{hub_cache_dir(cache_dir)} for {', '.join(repos)}")
    if files:
        looked.append(f"{torch_checkpoint_dir(cache_dir)} for {', '.join(files)}")
    raise WeightsNotFoundError(
        f"no cached weights for {model_name}: looked in {' and in '.join(looked)}; senet downloads nothing: "
        f"fetch them with timm, torchvision or huggingface-cli, or pass the file (checkpoint_path=, --pretrained FILE)"
    )


def cached_models(cache_dir: str | Path | None = None) -> list[str]:
    """The names `create_model(name, pretrained=True)` finds weights for here: timm's names with their tag
    (`seresnet50.a1_in1k`), senet's names for the release and torchvision's files."""
    names = []
    for alias in TIMM_ALIASES:
        for entry in TIMM_PRETRAINED.get(alias, []):
            full = f"{alias}.{entry['tag']}"
            if any(locate(w, cache_dir) for w in _timm_wanted(alias, entry["tag"])):
                names.append(full)
    for name in sorted(set(PRETRAINEDMODELS_FILES) | set(TORCHVISION_FILES)):
        if any(locate(w, cache_dir) for w in wanted(name)):
            names.append(name)
    return names
