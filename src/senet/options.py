"""The values of senet's named options, declared once below everything else (this module imports nothing
of senet and no third-party package), so that the command line can list and check them without importing
torch: `senet --help` and `senet COMMAND --help` answer at once. The modules that implement an option
import its values from here.
"""

from __future__ import annotations

from importlib import resources

# The SE block (senet.layers; paper Sec. 3 and the ablations of Sec. 6).
SQUEEZES = ("avg", "max", "none")
GATES = ("sigmoid", "tanh", "relu", "hard_sigmoid")
SE_POSITIONS = ("standard", "pre", "post", "identity", "3x3")
# How a residual unit's merge runs a block: "fused" (the unit's last BN folded in, `senet.layers.merge`)
# or "naive" (the block called as a module).
SE_IMPLS = ("fused", "naive")

# The ResNet layouts (senet.models.resnet): the paper's (stride on the 1x1) and torchvision's "v1.5".
LAYOUTS = ("paper", "torchvision")

# ImageNet's per-channel statistics: the normalisation of ImageNet-trained weights (timm's, torchvision's).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Data (senet.data.spec): the kinds `--data` takes, and the options of the synthetic kind.
DATA_KINDS = ("digits", "synthetic", "folder", "cifar10", "cifar100")
SYNTHETIC_OPTIONS = {"classes": 10, "train": 1024, "val": 256, "size": None, "channels": 3, "seed": 0}

# Training (senet.engine).
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("step", "cosine", "plateau", "constant")
AMP_MODES = ("none", "bf16", "fp16")

# Benchmarks (senet.bench) and exported models (senet.interop.export).
BENCH_MODES = ("infer", "train")
BENCH_DEVICES = ("cpu", "cuda")
EXPORT_FORMATS = ("onnx", "torchscript", "exported-program")
RUNTIMES = ("onnxruntime", "openvino")  # what runs an exported file (besides eager PyTorch, "torch")
# The format an output file's suffix implies, where `senet export` is not given one (.ts: TorchScript too).
EXPORT_SUFFIXES = {".onnx": "onnx", ".pt": "torchscript", ".ts": "torchscript", ".pt2": "exported-program"}

# The libraries whose checkpoints senet reads (senet.interop.sources).
SOURCES: tuple[str, ...] = ("timm-legacy", "timm", "torchvision", "senet.pytorch")

# The paper's ablations (senet.analysis.ablation): each study and its table; `grid` is the custom study.
STUDY_TABLES = {"reduction": "Table 10", "squeeze": "Table 11", "gate": "Table 12", "stages": "Table 13",
                "position": "Table 14", "3x3": "Table 15", "nosqueeze": "Table 16"}
GRID = "grid"

# The studies of a trained network (senet.analysis): Fig. 6's 50 images of each class and 50 channels of
# each block; what a switched-off SE block's excitation becomes.
PAPER_IMAGES_PER_CLASS, PAPER_CHANNELS = 50, 50
REPLACEMENTS = ("one", "mean")


def data_form(kind: str) -> str:
    """How `--data` of `kind` is written, as `parse_data_spec` reads it: digits, synthetic[:classes=N,...],
    KIND:PATH (the CLI's help and the errors list these)."""
    if kind == "digits":
        return kind
    if kind == "synthetic":
        return "synthetic[:" + ",".join(f"{key}=N" for key in SYNTHETIC_OPTIONS) + "]"
    return f"{kind}:PATH"


def list_recipes() -> list[str]:
    """Names of the recipes shipped with senet (senet/recipes/*.yaml)."""
    folder = resources.files("senet") / "recipes"
    return sorted(item.name[: -len(".yaml")] for item in folder.iterdir() if item.name.endswith(".yaml"))
