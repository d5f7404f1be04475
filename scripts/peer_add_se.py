"""torchvision's ResNet-50 with SE added by senet.add_se takes timm's `seresnet50` weights, strictly, and
gives timm's logits (the closing demonstration of issue 13).

Run in the peer environment (torch, timm, torchvision; nothing is downloaded):

    PYTHONPATH=src /tmp/peer/bin/python scripts/peer_add_se.py [--arch resnet50] [--size 224] [--batch 2]

timm's `seresnet50` (pretrained=False) is built with weights from a fixed seed and its BatchNorm
statistics randomised (so they matter); torchvision's `resnet50(weights=None)` gets SE from
`senet.add_se(..., divisor=8)` (timm rounds C/16 to a multiple of 8), loads timm's state dict with
strict=True, and both run in eval mode on the same input. Prints the key check and the max |difference|,
and, as a control, the difference from torchvision's network without SE given the same weights.
"""

from __future__ import annotations

import argparse

import timm
import torch
import torchvision

import senet

TIMM_NAMES = {"resnet18": "seresnet18", "resnet34": "seresnet34", "resnet50": "seresnet50",
              "resnet101": "seresnet101", "resnet152": "seresnet152"}


def randomise_batch_norm(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Non-trivial running statistics and affine parameters, so a misplaced BN or SE would show."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=generator) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=generator) * 0.1)


def compare(arch: str = "resnet50", size: int = 224, batch: int = 2, seed: int = 0) -> dict[str, object]:
    """Build both, load timm's weights into torchvision + add_se, return the figures."""
    torch.manual_seed(seed)
    reference = timm.create_model(TIMM_NAMES[arch], pretrained=False).eval()
    randomise_batch_norm(reference, torch.Generator().manual_seed(seed))
    model = getattr(torchvision.models, arch)(weights=None)
    senet.add_se(model, divisor=8)
    model.eval()
    state = reference.state_dict()
    missing_unexpected = model.load_state_dict(state, strict=True)
    plain = getattr(torchvision.models, arch)(weights=None).eval()  # the control: the same weights, no SE
    plain.load_state_dict({k: v for k, v in state.items() if ".se." not in k}, strict=True)
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        expected, got, without_se = reference(x), model(x), plain(x)
    return {
        "torchvision": arch,
        "timm": TIMM_NAMES[arch],
        "keys": len(state),
        "strict_load": str(missing_unexpected),
        "se_blocks": model.se_report.blocks,
        "se_params": model.se_report.params_added,
        "max_abs_diff": (expected - got).abs().max().item(),
        "max_abs_logit": expected.abs().max().item(),
        "diff_no_se": (expected - without_se).abs().max().item(),
        "same_top1": bool((expected.argmax(1) == got.argmax(1)).all()),
        "versions": f"torch {torch.__version__}, timm {timm.__version__}, torchvision {torchvision.__version__}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet50", choices=sorted(TIMM_NAMES))
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for key, value in compare(args.arch, args.size, args.batch, args.seed).items():
        print(f"{key:14s} {value}")


if __name__ == "__main__":
    main()
