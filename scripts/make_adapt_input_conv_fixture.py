"""Write tests/interop/fixtures/adapt_input_conv.json: timm's adapt_input_conv of a fixed first-convolution
weight for 1, 2, 4 and 7 input channels, so the CI test compares senet's adaptation with timm's own output.

Run in an environment with timm: PYTHONPATH=src /tmp/peer/bin/python scripts/make_adapt_input_conv_fixture.py
"""

import json
from pathlib import Path

import numpy as np
import timm
import torch
from timm.models import adapt_input_conv

OUT = Path(__file__).resolve().parents[1] / "tests" / "interop" / "fixtures" / "adapt_input_conv.json"

weight = np.random.RandomState(2018).standard_normal((4, 3, 3, 3)).astype(np.float32)
fixture = {"timm": timm.__version__, "weight": weight.tolist(), "adapted": {}}
for in_chans in (1, 2, 4, 7):
    adapted = adapt_input_conv(in_chans, torch.from_numpy(weight.copy()))
    fixture["adapted"][str(in_chans)] = adapted.numpy().tolist()
OUT.write_text(json.dumps(fixture))
print(f"wrote {OUT}")
