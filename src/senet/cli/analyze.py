"""`senet analyze excitation` and `senet analyze se-drop`: the paper's studies of a trained SE network (Sec. 7.2)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from senet import options
from senet.cli.args import (
    Parser,
    add_amp_arg,
    add_batch_size_arg,
    add_input_size_arg,
    add_output_format_args,
    add_workers_arg,
    non_negative_int,
    positive_int,
)


# ---------------------------------------------------------------------------------------------------
# senet analyze (the paper's Sec. 7.2 studies of a trained network)


def cmd_analyze_excitation(args: argparse.Namespace) -> int:
    from senet.analysis.excitation import excitation_study

    blocks = None if args.blocks in (None, ["all"]) else [name for item in args.blocks for name in item.split(",") if name]
    classes = [name for name in args.classes.split(",") if name] if args.classes else None
    output = args.output or f"runs/excitation-{Path(args.checkpoint).expanduser().resolve().name}"
    study = excitation_study(
        args.checkpoint, args.data, output=output, blocks=blocks, images_per_class=args.images_per_class or None,
        channels=args.channels, classes=classes, batch_size=args.batch_size, workers=args.workers, device=args.device,
        ema=args.ema, overwrite=args.overwrite, progress=not args.quiet,
    )
    print(f"{study.model}: excitation of {len(study.stats.blocks)} SE blocks over {study.images} images")
    print(study.summary())
    print(f"wrote {study.json_path}, {', '.join(str(path) for path in study.figures)}")
    return 0


def cmd_analyze_se_drop(args: argparse.Namespace) -> int:
    from senet.analysis.se_drop import se_drop_study

    study = se_drop_study(
        args.checkpoint, args.data, replace=args.replace, batch_size=args.batch_size, workers=args.workers,
        device=args.device, amp=args.amp, input_size=args.input_size, ema=args.ema, progress=not args.quiet,
    )
    print(json.dumps(study.as_dict(), indent=1) if args.json else study.format())
    return 0


def add_parsers(sub: Any, commands: dict[str, Callable[[argparse.Namespace], int]]) -> None:
    """`senet analyze excitation` and `senet analyze se-drop`."""
    group = sub.add_parser("analyze", help="the paper's studies of a trained SE network (Sec. 7.2): excitation, se-drop")
    studies = group.add_subparsers(dest="study", metavar="STUDY", required=True, parser_class=Parser)

    def add_common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--checkpoint", required=True, help="any checkpoint `senet eval` takes (run folder, checkpoint "
                       "folder, .safetensors) or `senet convert` reads")
        p.add_argument("--data", help="same forms as for train; its validation split is used "
                       "(default: the data the run was trained on)")
        add_batch_size_arg(p, default=128)
        add_workers_arg(p, default=4)
        p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
        p.add_argument("--ema", action="store_true", help="analyse the EMA weights")

    p = studies.add_parser("excitation", help="per-class excitation per SE block (Figs. 6-7): JSON and PNGs",
                           description="The excitation s of the SE blocks over the first N validation images of "
                           "each class: DIR/excitation.json, DIR/excitation.png (Fig. 6: per-class means over "
                           "sampled channels) and DIR/excitation_spread.png (Fig. 7: mean ± std of a few classes).")
    add_common(p)
    p.add_argument("--blocks", nargs="+", metavar="NAME", help="SE blocks by their paper names (SE_4_2, ...) or "
                   "module paths, or all (default: all)")
    p.add_argument("--images-per-class", type=non_negative_int, default=options.PAPER_IMAGES_PER_CLASS,
                   help="validation images of each class (0: all)")
    p.add_argument("--channels", type=positive_int, default=options.PAPER_CHANNELS, help="channels per block in the figures, "
                   "sampled evenly")
    p.add_argument("--classes", help="comma-separated class names for the Fig. 7 figure (default: the first four)")
    p.add_argument("--output", help="folder for the results (default: runs/excitation-CHECKPOINT)")
    p.add_argument("--overwrite", action="store_true", help="replace the results of an earlier analysis in --output")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(_study=cmd_analyze_excitation)

    p = studies.add_parser("se-drop", help="errors with each stage's SE switched off, and the last blocks' cumulatively",
                           description="Evaluates the checkpoint as `senet eval` does: as it is, with the SE blocks of "
                           "each stage switched off in turn, then cumulatively from the last block back. Each row: "
                           "top-1/top-5 error, the change against the intact network, the removed blocks' parameters.")
    add_common(p)
    p.add_argument("--replace", choices=options.REPLACEMENTS, default="one", help="what the excitation s of a switched-off "
                   "block becomes: 1 (the block is the identity) or its per-channel mean over the data")
    add_input_size_arg(p, help="evaluation crop (default: the training input size)")
    add_amp_arg(p, default="none", help="autocast precision")
    add_output_format_args(p, quiet="no progress bar")
    p.set_defaults(_study=cmd_analyze_se_drop)
    commands["analyze"] = lambda args: args._study(args)
