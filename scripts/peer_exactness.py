"""Print how close senet's logits are to each peer's, from the fixtures (no timm or torchvision needed).

    .venv/bin/python scripts/peer_exactness.py            # one line per peer model, then the maximum per source

For each fixture of tests/fixtures/peers/: draw the weights again from its seed, map them with
`senet.interop.sources.recognise`, load them into the senet model and compare its logits (fp32, eval) with
the ones the peer computed: max |ours - peer| / max |peer|.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from peer_fixtures import PEERS, peer_input, peer_state_dict, read_fixture, relative_difference  # noqa: E402

import senet  # noqa: E402
from senet.interop.sources import recognise  # noqa: E402


def main() -> None:
    torch.set_num_threads(1)
    worst: dict[str, tuple[float, str]] = {}
    for peer in PEERS:
        fixture = read_fixture(peer)
        found = recognise(peer_state_dict(fixture["keys"], fixture["seed"]), source=peer.source)
        with torch.device("meta"):
            model = senet.create_model(found.model_name, **found.model_kwargs)
        model.load_state_dict(found.state_dict, strict=True, assign=True)
        with torch.no_grad():
            difference = relative_difference(model.eval()(peer_input(peer.side)), fixture["logits"])
        print(f"{difference:.1e}  {found.describe()}", flush=True)
        if difference >= worst.get(peer.source, (-1.0, ""))[0]:
            worst[peer.source] = (difference, peer.architecture)
    print()
    for source, (difference, architecture) in worst.items():
        print(f"{source:14s} max {difference:.1e} ({architecture})")


if __name__ == "__main__":
    main()
