"""Write tests/fixtures/peers/: each peer model's keys, shapes and logits on weights drawn from a seed.

Run in the peer environment (timm, torchvision), from the repository root:

    PYTHONPATH=src /tmp/peer/bin/python scripts/make_peer_fixtures.py [ARCH ...]

For every peer of tests/peer_fixtures.py (or those named): build the real peer model (pretrained=False), fill
it with `peer_state_dict(keys, SEED)`, run `peer_input` through it in eval mode (fp32) and write the fixture.
Then, as a check, load the same weights into senet through `senet.interop.sources.recognise` and print the
relative logit difference (docs/weights.md reports these figures).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from peer_fixtures import (  # noqa: E402
    PEERS, build_peer, peer_input, peer_preprocessing, peer_state_dict, relative_difference, state_dict_keys,
    write_fixture,
)

import senet  # noqa: E402
from senet.interop.sources import recognise  # noqa: E402


def main(names: list[str]) -> None:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    import timm
    import torchvision

    versions = {"torch": torch.__version__, "timm": timm.__version__, "torchvision": torchvision.__version__}
    for peer in PEERS:
        if names and peer.architecture not in names and f"{peer.source}:{peer.architecture}" not in names:
            continue
        start = time.perf_counter()
        model = build_peer(peer)
        keys = state_dict_keys(model.state_dict())
        weights = peer_state_dict(keys)
        model.load_state_dict(weights, strict=True)
        with torch.no_grad():
            logits = model(peer_input(peer.side))
        write_fixture(peer, keys, logits, {"versions": versions, "preprocessing": peer_preprocessing(peer)})
        found = recognise(weights, source=peer.source)
        ours = senet.create_model(found.model_name, **found.model_kwargs).eval()
        ours.load_state_dict(found.state_dict, strict=True)
        with torch.no_grad():
            difference = relative_difference(ours(peer_input(peer.side)), logits)
        print(f"{peer.source:14s} {peer.architecture:26s} {found.describe()}  rel diff {difference:.2e}  "
              f"logit std {logits.std():.3g}  ({time.perf_counter() - start:.1f} s)", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
