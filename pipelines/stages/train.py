"""Stage ``train``: train (by default: briefly fine-tune the shipped weights of) one StackMFF V3 variant.

The variant's settings are ``train.variants.<variant>`` in ``params.yaml``, keys of
:class:`stackmff.models.train.TrainConfig` (a typo fails with the key name) plus ``from_weights`` (default true:
start from ``--init``; false: train from scratch, e.g. the full ``v3`` variant of the paper profile, since a
checkpoint's architecture wins over ``model``). Paths come from ``dvc.yaml``: the
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
from stackmff.errors import StackMFFError

__all__ = ["check_variant", "main", "run", "train_config"]

log = logging.getLogger("stackmff.pipelines.train")

_PATH_KEYS = ("out_dir", "init_from", "data", "photos")


def check_variant(variant: str, values: dict) -> tuple[object, bool]:
    """Check one ``train.variants`` entry strictly; returns ``(TrainConfig without paths, from_weights)``.

    Raises:
        StackMFFError: a path key, an unknown key (named in full) or a value of the wrong type.
    """
    from stackmff.models.train import TrainConfig

    values = dict(values)
    from_weights = values.pop("from_weights", True)
    if not isinstance(from_weights, bool):
        raise StackMFFError(f"train.variants.{variant}.from_weights must be true or false, got {from_weights!r}")
    bad = [k for k in _PATH_KEYS if k in values]
    if bad:
        raise StackMFFError(f"train.variants.{variant}.{bad[0]} is a path; paths belong in dvc.yaml, remove it")
    return build(TrainConfig, values, f"train.variants.{variant}"), from_weights


def train_config(params: TrainParams, base: BaseParams, variant: str, data: Path, out: Path, init: Path | None):
    """Build the :class:`~stackmff.models.train.TrainConfig` of ``variant`` (strict keys, paths from arguments)."""
    if variant not in params.variants:
        known = ", ".join(sorted(params.variants)) or "none"
        raise StackMFFError(f"no train.variants.{variant} in the params file; known variants: {known}")
    values = dict(params.variants[variant])
    values.setdefault("seed", base.seed)
    values.setdefault("resume", False)  # a DVC stage starts clean: its output folder is removed before it runs
    cfg, from_weights = check_variant(variant, values)
    if not from_weights:
        init = None
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
