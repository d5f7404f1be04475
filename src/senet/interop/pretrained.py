"""`senet.create_model` and `senet.list_models` with timm's weights arguments: `pretrained=True` loads the
weights already on the machine (`senet.weights.cache`), `checkpoint_path=` a given file, both through the
same strict loading as `senet.load_model` (`interop.load`). Without weights, `senet.models.create_model`.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from torch import nn

from senet.errors import ConfigError
from senet.models import registry
from senet.models.features import check_features_only, with_features_only
from senet.weights.cache import cached_models, find_weights


def create_model(
    model_name: str,
    pretrained: bool = False,
    pretrained_cfg: dict[str, Any] | str | None = None,
    pretrained_cfg_overlay: dict[str, Any] | None = None,
    checkpoint_path: str | Path | None = None,
    cache_dir: str | Path | None = None,
    *,
    features_only: bool = False,
    out_indices: Iterable[int] | None = None,
    global_pool: str | None = None,
    **kwargs: Any,
) -> nn.Module:
    """timm's `create_model`: build `model_name` (senet's or timm's name of a senet network, optionally
    `name.tag`), with `pretrained=True` its weights from the hub / torch hub caches (`cache_dir` instead of
    their roots; nothing is downloaded: WeightsNotFoundError says where it looked), or those of
    `checkpoint_path`. `num_classes` / `in_chans` different from the weights' replace the classifier /
    adapt the first convolution; other keywords as `senet.models.create_model`. The network is the one the
    weights need (e.g. the layout they were trained in); `model.pretrained_cfg` says where they came from
    (source, file, hf_hub_id, tag) and their preprocessing."""
    if not pretrained and not checkpoint_path:
        return registry.create_model(
            model_name, pretrained_cfg=pretrained_cfg, pretrained_cfg_overlay=pretrained_cfg_overlay,
            features_only=features_only, out_indices=out_indices, global_pool=global_pool, **kwargs,
        )
    # Reading weights files (and the data stack's preprocessing) is imported only when weights are asked
    # for, so that `senet.create_model` costs the model API alone.
    from senet.interop.load import load_pretrained

    check_features_only(features_only, out_indices)
    name, alias_kwargs = registry.resolve_name(model_name)
    source, provenance = "auto", {}
    if checkpoint_path:
        path = Path(checkpoint_path)
    else:
        found = find_weights(model_name, cache_dir)
        path, source = found.path, found.wanted.source
        provenance = {"hf_hub_id": found.wanted.repo or None, "tag": found.wanted.tag or None}
    num_classes, in_chans = kwargs.pop("num_classes", None), kwargs.pop("in_chans", None)
    loaded = load_pretrained(path, source=source, model=name, num_classes=num_classes, in_chans=in_chans, **kwargs)
    differs = {k: (v, loaded.recognised.model_kwargs.get(k)) for k, v in alias_kwargs.items()
               if loaded.recognised.model_kwargs.get(k, v) != v}
    if differs:
        theirs = ", ".join(f"{k}={b}" for k, (_, b) in differs.items())
        raise ConfigError(
            f"{path} holds {loaded.recognised.architecture} ({theirs}), not timm's {model_name}; "
            f"create {loaded.recognised.architecture} instead"
        )
    model = loaded.model
    if global_pool is not None:
        classifier = model.get_classifier().state_dict()
        model.reset_classifier(model.num_classes, global_pool)
        if all(v.shape == model.get_classifier().state_dict().get(k, v[:0]).shape for k, v in classifier.items()):
            model.get_classifier().load_state_dict(classifier)  # the same width: the trained classifier stays
    cfg = registry.default_pretrained_cfg(model_name, model) | loaded.cfg | provenance
    cfg["input_size"] = tuple(cfg["input_size"])
    cfg["mean"], cfg["std"] = tuple(cfg["mean"]), tuple(cfg["std"])
    model.pretrained_cfg = cfg | dict(pretrained_cfg if isinstance(pretrained_cfg, dict) else {}) | dict(pretrained_cfg_overlay or {})
    return with_features_only(model, features_only, out_indices)


def list_models(
    pattern: str = "*", pretrained: bool = False, *, se: bool | None = None, family: str | None = None,
    aliases: bool | None = None, cache_dir: str | Path | None = None,
) -> list[str]:
    """timm's `list_models`: senet's model names matching `pattern`, and timm's names of senet networks
    where `aliases=True` or (the default) where the pattern matches only those (`list_models("seresnet*")`,
    as in timm); `pretrained=True` the names `create_model(name, pretrained=True)` finds weights for on
    this machine (timm's names with their tag, `seresnet50.a1_in1k`), timm's names included."""
    if not pretrained:
        names = registry.list_models(pattern, se=se, family=family, aliases=bool(aliases))
        if aliases is None and not names:  # a timm user's pattern: timm's names
            names = registry.list_models(pattern, se=se, family=family, aliases=True)
        return names
    names = [n for n in cached_models(cache_dir) if fnmatch.fnmatch(n, pattern)
             or fnmatch.fnmatch(n.split(".")[0], pattern)]
    if se is not None:
        names = [n for n in names if registry.is_se_model(n.split(".")[0]) == se]
    if family is not None:
        names = [n for n in names if registry.model_family(n.split(".")[0]) == family]
    if aliases is False:
        names = [n for n in names if n.split(".")[0] not in registry.TIMM_ALIASES]
    return names
