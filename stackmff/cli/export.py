"""``stackmff export``: write a checkpoint in another format (``--format upstream``: the author's plain state dict)."""

from __future__ import annotations

import argparse
import json
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write a checkpoint as the upstream StackMFF V3 code loads it",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Export a stackmff checkpoint. --format upstream writes a plain fp32 state dict with the key "
        "names of the author's network.py / network_star.py (load_state_dict(torch.load(PATH))).",
    )
    p.add_argument("checkpoint", metavar="CKPT", help="stackmff checkpoint (.pt) or training folder")
    p.add_argument("-o", "--output", required=True, help="file to write (e.g. stackmffv3.pth)")
    p.add_argument("--format", default="upstream", choices=("upstream",), help="output format")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> int:
    from ..models.checkpoint import export_upstream, load_model

    model = load_model(args.checkpoint, device="cpu")
    path = export_upstream(model, args.output, overwrite=args.overwrite)
    cfg = model.cfg
    cls = "StackMFF_V3_Star" if cfg.head == "regress" else "StackMFF_V3"
    ctor = (
        f"{cls}(encoder_dims={list(cfg.dims)}, encoder_layers={list(cfg.depths)}, "
        f"num_transformer_layers={cfg.attn_layers})"
    )
    print(json.dumps({"output": str(path), "upstream_class": ctor}), file=sys.stdout)
    return 0
