"""Checkpoints of StackMFF V3: save, load (ours or the author's upstream ``.pth``) and export for the upstream code.

A checkpoint of this project is ``{"config", "model", **extra}`` (the
:class:`~stackmff.models.stackmff_v3.StackMFFV3Config` as a dict and the state dict); upstream files are plain state dicts, recognised by their keys and converted with
:func:`~stackmff.models.stackmff_v3.remap_upstream_state_dict`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..errors import StackMFFError
from ._weights import DEFAULT_WEIGHTS  # torch-free, re-exported here
from .device import resolve_device
from .stackmff_v3 import (
    StackMFFV3,
    StackMFFV3Config,
    remap_upstream_state_dict,
    to_upstream_state_dict,
    upstream_config,
)

__all__ = ["DEFAULT_WEIGHTS", "export_upstream", "is_upstream_state_dict", "load_model", "save_checkpoint"]

log = logging.getLogger("stackmff")


def save_checkpoint(path: str | Path, model: StackMFFV3, *, half: bool = False, **extra) -> Path:
    """Write ``{"config", "model", **extra}`` atomically (temp file + rename); ``half`` stores fp16 weights.

    Returns:
        The written path.
    """
    from ..io import atomic_write

    path = Path(path)
    sd = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu() for k, v in model.state_dict().items()}
    with atomic_write(path, mode=None, overwrite=True) as tmp:
        torch.save({"config": model.cfg.to_dict(), "model": sd, **extra}, tmp)
    return path


def load_model(
    weights: str | Path | None = None, *, device: str | torch.device | None = "cpu", head: str | None = None
) -> StackMFFV3:
    """Load a checkpoint written by :func:`save_checkpoint` or by training, or the author's upstream ``.pth``.

    Upstream checkpoints (``stackmffv3.pth``, ``stackmffv3_star.pth``, or any state dict saved by its training
    scripts, with or without DataParallel's ``module.`` prefix) are recognised by their keys; the architecture is
    read from the tensor shapes (:func:`~stackmff.models.stackmff_v3.upstream_config`). V3 and V3-star files have
    identical keys, so ``head`` ("classify" = V3, "regress" = V3-star) says which; without it a file whose name
    contains "star" is taken as V3-star, any other as V3.

    Args:
        weights: checkpoint file, or a training output folder (its ``model.pt``); ``None`` = the shipped
            :data:`DEFAULT_WEIGHTS`.
        device: where to put the model.
        head: for upstream files only: "classify" or "regress" (project checkpoints carry their own).

    Raises:
        StackMFFError: missing or unreadable file, or a state dict that is neither format.
    """
    path = Path(weights) if weights is not None else DEFAULT_WEIGHTS
    if path.is_dir():  # a training output folder
        path = path / "model.pt"
    if not path.is_file():
        raise StackMFFError(
            f"weights {path} not found; pass weights=PATH (--weights) or train some with `stackmff train`"
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle/zip errors carry long messages; keep one line
        raise StackMFFError(f"cannot read weights {path} ({type(exc).__name__}); is it a stackmff checkpoint?") from exc
    if is_upstream_state_dict(ckpt):
        head = head or ("regress" if "star" in path.name.lower() else "classify")
        try:
            cfg = upstream_config(ckpt, head=head)
            model = StackMFFV3(cfg)
            model.load_state_dict(remap_upstream_state_dict({k: v.float() for k, v in ckpt.items()}))
        except (KeyError, ValueError, RuntimeError) as exc:
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise StackMFFError(
                f"weights {path} look like an upstream StackMFF V3 state dict but do not fit: {msg}"
            ) from None
        log.info("loaded upstream %s weights %s", "V3-star" if head == "regress" else "V3", path)
        return model.to(resolve_device(device)).eval()
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise StackMFFError(
            f"weights {path} is neither a stackmff checkpoint (needs 'config' and 'model') nor an upstream "
            "StackMFF V3 state dict; re-export it"
        )
    model = StackMFFV3(StackMFFV3Config.from_dict(ckpt["config"]))
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in ckpt["model"].items()})
    return model.to(resolve_device(device)).eval()


def is_upstream_state_dict(obj) -> bool:
    """True for a plain state dict with upstream StackMFF V3 / V3-star keys (``module.`` prefix allowed)."""
    return (
        isinstance(obj, dict)
        and bool(obj)
        and all(isinstance(v, torch.Tensor) for v in obj.values())
        and any(k.removeprefix("module.").startswith("feature_extraction.encoder.") for k in obj)
    )


def export_upstream(model: StackMFFV3, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``model`` as a plain fp32 state dict that the upstream ``StackMFF_V3`` (``StackMFF_V3_Star`` for a
    regression head) loads with ``load_state_dict``; atomic (temp file + rename).

    Raises:
        StackMFFError: the architecture is not expressible upstream, or ``path`` exists without ``overwrite``.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise StackMFFError(f"{path} exists; pass --overwrite to replace it")
    try:
        sd = to_upstream_state_dict(model)
    except ValueError as exc:
        raise StackMFFError(
            f"this checkpoint cannot be written for the upstream code: {exc}; only upstream-shaped variants "
            "(e.g. --model v3, v3_star) export"
        ) from None
    from ..io import atomic_write

    with atomic_write(path, mode=None, overwrite=overwrite) as tmp:
        torch.save(sd, tmp)
    return path
