"""``stackmff train``: train or fine-tune StackMFF V3 (single process, or ``torchrun`` for DistributedDataParallel)."""

from __future__ import annotations

import argparse
import json
import sys

import yaml

from ..errors import StackMFFError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train or fine-tune the StackMFF V3 network",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Train StackMFF V3. Multi-GPU: torchrun --nproc-per-node=K -m stackmff train ...",
    )
    p.set_defaults(func=_cmd_train)
    # the options' defaults come from TrainConfig, whose module imports torch: added only when `train` is parsed
    from . import defer_arguments

    defer_arguments(p, _add_arguments)


def _add_arguments(p: argparse.ArgumentParser) -> None:
    from ..models.train import TrainConfig

    d = TrainConfig()
    g = p.add_argument_group("model")
    g.add_argument("--model", default=d.model, help="registered variant (v3, v3_small, v3_star, v3_norope)")
    g.add_argument("--model-option", action="append", metavar="KEY=VALUE", help="override a config field, repeatable")
    g.add_argument("--init-from", metavar="CKPT", help="start from these weights (e.g. weights/stackmff_v3.pt)")
    g = p.add_argument_group("data")
    g.add_argument("--data", default=d.data, help="'procedural' or an upstream-layout dataset root")
    g.add_argument("--mode", default=d.mode, choices=("physical", "upstream"), help="procedural synthesis recipe")
    g.add_argument("--photos", metavar="DIR", help="photo bank (stackmff photos): dead-leaves photo scenes")
    g.add_argument("--photo-prob", type=float, default=d.photo_prob, help="share of photo scenes with --photos")
    g.add_argument("--breathing", type=float, default=d.breathing, help="focus breathing range (e.g. 0.02)")
    g.add_argument("--jpeg-prob", type=float, default=d.jpeg_prob, help="chance of JPEG-compressed layers")
    g.add_argument("--size", type=int, default=d.size, help="training crop side (multiple of 32)")
    g.add_argument("--n-range", type=int, nargs=2, default=list(d.n_range), metavar=("LO", "HI"), help="layer counts")
    g.add_argument("--invalid-prob", type=float, default=d.invalid_prob, help="chance of injected invalid layers")
    g.add_argument("--max-invalid", type=int, default=d.max_invalid, help="most invalid layers per stack")
    g.add_argument("--ordered", action="store_true", help="keep focus order (V3-star) instead of reshuffling")
    g.add_argument("--epoch-size", type=int, default=d.epoch_size, help="samples per epoch")
    g = p.add_argument_group("optimisation")
    g.add_argument("--steps", type=int, default=d.steps, help="optimiser steps (the LR schedule spans them)")
    g.add_argument("--max-minutes", type=float, default=d.max_minutes, help="stop after this wall time (0: none)")
    g.add_argument("--batch-size", type=int, default=d.batch_size, help="stacks per batch (per process)")
    g.add_argument("--lr", type=float, default=d.lr, help="peak AdamW learning rate")
    g.add_argument("--weight-decay", type=float, default=d.weight_decay, help="AdamW weight decay")
    g.add_argument("--warmup-steps", type=int, default=d.warmup_steps, help="linear warm-up steps")
    g.add_argument("--grad-clip", type=float, default=d.grad_clip, help="gradient norm clip (0: off)")
    g.add_argument(
        "--colour-loss",
        type=float,
        default=d.colour_loss,
        help="weight of the L1 loss of the softmax-weighted colour against the AiF image (0: off)",
    )
    g.add_argument("--seed", type=int, default=d.seed, help="seed for data, init and dropout")
    g = p.add_argument_group("performance")
    g.add_argument("--device", default=d.device, help="auto, cpu, cuda, cuda:1 ...")
    g.add_argument("--amp", default=d.amp, choices=("auto", "bf16", "fp16", "none"), help="mixed precision on GPU")
    g.add_argument("--threads", type=int, default=d.threads, help="torch CPU threads (0: default)")
    g.add_argument("--workers", type=int, default=d.workers, help="data loader processes")
    g = p.add_argument_group("output")
    g.add_argument("-o", "--out-dir", default=d.out_dir, help="checkpoints, exports and dvclive metrics")
    g.add_argument("--ckpt-every", type=float, default=d.ckpt_every_s, metavar="SECONDS", help="checkpoint period")
    g.add_argument("--log-every", type=int, default=d.log_every, help="steps between metric logs")
    g.add_argument("--val-every", type=int, default=d.val_every, help="steps between validations")
    g.add_argument("--val-count", type=int, default=d.val_count, help="held-out procedural validation stacks")
    g.add_argument("--val-size", type=int, default=d.val_size, help="validation stack side (multiple of 32)")
    g.add_argument("--no-resume", action="store_true", help="start over even if OUT_DIR/last.pt exists")


def _model_options(items: list[str] | None) -> dict:
    opts = {}
    for item in items or []:
        if "=" not in item:
            raise StackMFFError(f"--model-option must look like KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        opts[k.strip().replace("-", "_")] = yaml.safe_load(v)
    return opts


def _cmd_train(args: argparse.Namespace) -> int:
    from ..models.train import TrainConfig, train

    cfg = TrainConfig(
        out_dir=args.out_dir,
        model=args.model,
        model_options=_model_options(args.model_option),
        init_from=args.init_from,
        data=args.data,
        mode=args.mode,
        photos=args.photos,
        photo_prob=args.photo_prob,
        breathing=args.breathing,
        jpeg_prob=args.jpeg_prob,
        size=args.size,
        n_range=tuple(args.n_range),
        invalid_prob=args.invalid_prob,
        max_invalid=args.max_invalid,
        shuffle=not args.ordered,
        epoch_size=args.epoch_size,
        steps=args.steps,
        max_minutes=args.max_minutes,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps,
        grad_clip=args.grad_clip,
        colour_loss=args.colour_loss,
        amp=args.amp,
        device=args.device,
        threads=args.threads,
        workers=args.workers,
        seed=args.seed,
        ckpt_every_s=args.ckpt_every,
        log_every=args.log_every,
        val_every=args.val_every,
        val_count=args.val_count,
        val_size=args.val_size,
        resume=not args.no_resume,
    )
    path = train(cfg)
    print(json.dumps({"model": str(path)}), file=sys.stdout)
    return 0
