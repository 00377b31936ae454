"""Stage ``train``: train (by default: briefly fine-tune the shipped weights of) one StackMFF V3 variant.

The variant's settings are ``train.variants.<variant>`` in ``params.yaml``, keys of
:class:`stackmff.models.train.TrainConfig` (a typo fails with the key name). Paths come from ``dvc.yaml``: the
training set (upstream layout written by ``synthesize@train``), the initial checkpoint and the output folder, which
receives ``model.pt`` (used by the learned fuse stages) and dvclive logs in ``live/`` (declared as DVC metrics and
plots).

Usage (from ``dvc.yaml``)::

    python -m pipelines.stages.train --params params.yaml --variant stackmff_v3 --init weights/stackmff_v3.pt \
        data/synth/train models/stackmff_v3
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from pipelines.config import BaseParams, TrainParams, build, load_params
from pipelines.stages._common import parser, run_main
from stackmff._checks import StackMFFError

__all__ = ["main", "run", "train_config"]

log = logging.getLogger("stackmff.pipelines.train")

_PATH_KEYS = ("out_dir", "init_from", "data")


def train_config(params: TrainParams, base: BaseParams, variant: str, data: Path, out: Path, init: Path | None):
    """Build the :class:`~stackmff.models.train.TrainConfig` of ``variant`` (strict keys, paths from arguments)."""
    from stackmff.models.train import TrainConfig

    if variant not in params.variants:
        known = ", ".join(sorted(params.variants)) or "none"
        raise StackMFFError(f"no train.variants.{variant} in the params file; known variants: {known}")
    values = dict(params.variants[variant])
    bad = [k for k in _PATH_KEYS if k in values]
    if bad:
        raise StackMFFError(f"train.variants.{variant}.{bad[0]} is a path; paths belong in dvc.yaml, remove it")
    values.setdefault("seed", base.seed)
    values.setdefault("resume", False)  # a DVC stage starts clean: its output folder is removed before it runs
    cfg = build(TrainConfig, values, f"train.variants.{variant}")
    init_from = str(init) if init is not None and init.is_file() else None
    if init is not None and init_from is None:
        log.warning("initial weights %s not found: training %s from scratch", init, variant)
    from dataclasses import replace

    return replace(cfg, out_dir=str(out), data=str(data), init_from=init_from)


def run(
    params: TrainParams,
    base: BaseParams,
    variant: str,
    data: str | Path,
    out: str | Path,
    *,
    init: str | Path | None = None,
) -> Path:
    """Train ``variant`` on ``data`` into ``out``; returns the inference checkpoint ``out/model.pt``."""
    from stackmff.models.train import train

    cfg = train_config(params, base, variant, Path(data), Path(out), Path(init) if init else None)
    return train(cfg)


def _main(argv: Sequence[str] | None = None) -> int:
    p = parser("train", "Train or fine-tune one StackMFF V3 variant.")
    p.add_argument("--variant", required=True, help="entry of train.variants")
    p.add_argument("--init", help="checkpoint to start from (missing file: from scratch, with a warning)")
    p.add_argument("data", help="training set (upstream layout) or 'procedural'")
    p.add_argument("out", help="output folder (model.pt, live/)")
    a = p.parse_args(argv)
    path = run(load_params(a.params, "train"), load_params(a.params, "base"), a.variant, a.data, a.out, init=a.init)
    log.info("trained %s: %s", a.variant, path)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    return run_main(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
