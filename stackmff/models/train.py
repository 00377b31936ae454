"""Training loop for StackMFF V3: single device, or DistributedDataParallel when launched by ``torchrun``.

``train(TrainConfig(...)) -> Path`` is the single implementation used by ``stackmff train`` and the DVC ``train``
stage. It supports device selection, autocast (bf16, or fp16 with a grad scaler) on GPU, gradient clipping, AdamW
with warm-up + cosine decay, resumable checkpoints (model, optimiser, scheduler, scaler, RNG states, step), seeding,
dvclive logging (loss, pixel accuracy, validation PSNR) and a small fp16 export next to every checkpoint.

Data: on-the-fly procedural stacks (:class:`~stackmff.data.datasets.ProceduralStacks`: physical synthesis, layers
reshuffled on every draw, invalid layers injected) or an upstream-layout tree on disk
(:class:`~stackmff.data.datasets.FolderStacks`, random crops, flips); batches have equal N
(:class:`~stackmff.data.datasets.EqualNBatchSampler`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from .._checks import check_choice
from ..color import luma
from ..errors import StackMFFError
from .checkpoint import load_model, save_checkpoint
from .device import resolve_device
from .registry import get_config
from .stackmff_v3 import StackMFFV3, star_depth, star_index

__all__ = ["TrainConfig", "train", "train_step"]

log = logging.getLogger("stackmff")


@dataclass
class TrainConfig:
    """Everything a training run needs; saved inside every checkpoint.

    Attributes:
        out_dir: checkpoints (``last.pt``), exports (``model.pt``, ``model_fp16.pt``) and ``live/`` metrics.
        model: registered variant name (see :func:`~stackmff.models.registry.list_models`).
        model_options: overrides of the variant's config fields.
        init_from: checkpoint to start from (its architecture wins over ``model``), e.g. the shipped weights;
            ``model_options`` may still change the parameter-free fields ``head`` and ``rope`` (e.g. a V3-star
            fine-tuned from V3 weights: ``head="regress"``).
        data: ``"procedural"`` or the root of an upstream-layout dataset tree.
        mode: procedural synthesis mode, ``"physical"`` or ``"upstream"``.
        photos: photo bank folder (:func:`~stackmff.data.photos.collect_photos`, DVC stage ``photos``); with
            ``data="procedural"``, a share ``photo_prob`` of the on-the-fly scenes (training and validation) are
            dead-leaves composites of photographs instead of procedural scenes.
        photo_prob: share of photo scenes when ``photos`` is set.
        breathing: focus breathing range of the on-the-fly synthesis (per sample ``U(-b, b)``).
        jpeg_prob: chance that a sample's layers are JPEG round-tripped (quality 60-98).
        size: square training crop side (multiple of 32).
        n_range: inclusive range of N (valid + invalid layers).
        invalid_prob, max_invalid: invalid-layer injection (0 for V3-star).
        shuffle: reshuffle layer order on every draw (False for V3-star: focus order).
        epoch_size: samples per epoch.
        steps: optimiser steps in total (the schedule spans them).
        max_minutes: stop (after checkpointing) once this much wall time has passed; 0 = no limit.
        batch_size, lr, weight_decay, warmup_steps, min_lr_ratio, grad_clip: optimisation.
        colour_loss: weight of an L1 loss between the softmax-weighted colour of the layers and the AiF image (ours,
            classification head only). Cross-entropy treats every wrong layer alike; this term costs what a wrong
            pick costs in colour, so in flat regions any valid layer is fine but an exposure-shifted or noisy one
            is not.
        amp: "auto" (bf16 on GPUs that support it, else fp16; none on CPU), "bf16", "fp16" or "none".
        device: "auto", "cpu", "cuda", "cuda:1"...; under torchrun the local rank's GPU.
        threads: torch CPU threads (0 = leave torch's default).
        workers: DataLoader worker processes.
        seed: seeds data, init and dropout.
        ckpt_every_s: seconds between checkpoints (also written at the end).
        log_every, val_every: steps between train-metric logs / validations.
        val_count, val_size: held-out procedural stacks for validation (seed ``seed + 10_000``).
        resume: continue from ``out_dir/last.pt`` when it exists.
    """

    out_dir: str = ".train/run"
    model: str = "v3_small"
    model_options: dict = field(default_factory=dict)
    init_from: str | None = None
    data: str = "procedural"
    mode: str = "physical"
    photos: str | None = None
    photo_prob: float = 0.5
    breathing: float = 0.0
    jpeg_prob: float = 0.0
    size: int = 96
    n_range: tuple[int, int] = (2, 8)
    invalid_prob: float = 0.3
    max_invalid: int = 2
    shuffle: bool = True
    epoch_size: int = 2000
    steps: int = 1000
    max_minutes: float = 0.0
    batch_size: int = 4
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 100
    min_lr_ratio: float = 0.05
    grad_clip: float = 1.0
    colour_loss: float = 0.0
    amp: str = "auto"
    device: str = "auto"
    threads: int = 0
    workers: int = 0
    seed: int = 0
    ckpt_every_s: float = 300.0
    log_every: int = 20
    val_every: int = 200
    val_count: int = 16
    val_size: int = 128
    resume: bool = True

    def __post_init__(self):
        self.n_range = tuple(self.n_range)
        check_choice(self.amp, ("auto", "bf16", "fp16", "none"), "amp")
        if self.size < 32 or self.size % 32:
            raise StackMFFError(f"size must be a positive multiple of 32, got {self.size}; e.g. --size 96")
        if self.val_size < 32 or self.val_size % 32:
            raise StackMFFError(f"val_size must be a positive multiple of 32, got {self.val_size}")
        if self.steps < 1 or self.batch_size < 1:
            raise StackMFFError(f"steps and batch_size must be >= 1, got {self.steps} and {self.batch_size}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise StackMFFError(f"lr must be a positive number, got {self.lr}; e.g. --lr 1e-3")
        for name in ("weight_decay", "grad_clip", "colour_loss", "max_minutes", "invalid_prob"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise StackMFFError(f"{name} must be a finite number >= 0, got {v}")
        out = Path(self.out_dir)
        if out.exists() and not out.is_dir():
            raise StackMFFError(f"out_dir {out} is a file; -o takes a folder for checkpoints and metrics")


def _loss(model_cfg, logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    # logits (B, N, H, W) float32, index (B, H, W) int64
    if model_cfg.head == "regress":
        # V3-star as upstream (train_star.py): MSE between the depth map min-max normalised over the batch
        # (star_depth) and the ground-truth depth in [0, 1] in layer units (focus-ordered stacks: index / (N - 1))
        n = logits.shape[1]
        return F.mse_loss(star_depth(logits, dim=1), index.float() / max(n - 1, 1))
    return F.cross_entropy(logits, index)


def _predict_index(model_cfg, logits: torch.Tensor) -> torch.Tensor:
    if model_cfg.head == "regress":  # per image, as inference does (upstream evaluates one stack at a time)
        n = logits.shape[1]
        return torch.stack([star_index(star_depth(lg, dim=0), n) for lg in logits])
    return logits.argmax(1)


def _colour_loss(logits: torch.Tensor, layers: torch.Tensor, aif: torch.Tensor) -> torch.Tensor:
    # logits (B, N, H, W), layers (B, N, 3, H, W), aif (B, 3, H, W): L1 of the soft gather against the AiF image
    fused = torch.einsum("bnhw,bnchw->bchw", logits.softmax(1), layers)  # (B, 3, H, W)
    return (fused - aif).abs().mean()


def train_step(
    model: torch.nn.Module,
    batch: dict,
    optimizer: torch.optim.Optimizer,
    *,
    device: torch.device,
    autocast_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    grad_clip: float = 1.0,
    colour_loss: float = 0.0,
) -> dict[str, float]:
    """One optimisation step on a batch from :func:`~stackmff.data.datasets.collate_stacks`.

    Returns:
        ``{"loss", "acc"}`` (pixel accuracy of the predicted index).
    """
    cfg = (model.module if isinstance(model, DistributedDataParallel) else model).cfg
    layers = batch["layers"].to(device, non_blocking=True)  # (B, N, 3, H, W)
    x = luma(layers)  # (B, N, H, W)
    index = batch["index"].to(device, non_blocking=True)  # (B, H, W)
    model.train()
    with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        logits = model(x)
    logits = logits.float()
    loss = _loss(cfg, logits, index)
    if colour_loss > 0 and cfg.head == "classify":
        loss = loss + colour_loss * _colour_loss(logits, layers, batch["aif"].to(device, non_blocking=True))
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    with torch.no_grad():
        acc = (_predict_index(cfg, logits) == index).float().mean()
    return {"loss": float(loss.detach()), "acc": float(acc)}


@torch.no_grad()
def _validate(model: StackMFFV3, batches: list[dict], device: torch.device) -> dict[str, float]:
    model.eval()
    acc, psnr = [], []
    for b in batches:
        layers = b["layers"].to(device)  # (B, N, 3, H, W)
        logits = model(luma(layers)).float()
        idx = _predict_index(model.cfg, logits)  # (B, H, W)
        acc.append((idx == b["index"].to(device)).float().mean().item())
        g = idx[:, None, None].expand(-1, 1, 3, -1, -1)  # (B, 1, 3, H, W)
        fused = layers.gather(1, g)[:, 0]  # (B, 3, H, W)
        mse = ((fused - b["aif"].to(device)) ** 2).flatten(1).mean(1).clamp_min(1e-10)
        psnr += (10 * torch.log10(1.0 / mse)).tolist()
    return {"val/acc": float(np.mean(acc)), "val/psnr": float(np.mean(psnr))}


class _Batches:
    """Batch sampler view: every ``world``-th batch of an epoch (DDP shard), starting after ``skip`` batches."""

    def __init__(self, sampler, rank: int = 0, world: int = 1):
        self.sampler, self.rank, self.world, self.skip = sampler, rank, world, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.sampler.set_epoch(epoch)
        self.skip = skip

    def _mine(self) -> list[list[int]]:
        allb = list(self.sampler)
        usable = len(allb) // self.world * self.world  # equal step count on every rank
        return allb[self.rank : usable : self.world]

    def __iter__(self):
        yield from self._mine()[self.skip :]

    def __len__(self) -> int:
        return max(len(self._mine()) - self.skip, 0)


def _make_dataset(cfg: TrainConfig, *, val: bool = False):
    from ..data.datasets import FolderStacks, ProceduralStacks

    if cfg.data == "procedural" or val:
        return ProceduralStacks(
            cfg.val_count if val else cfg.epoch_size,
            size=cfg.val_size if val else cfg.size,
            n_range=cfg.n_range,
            mode=cfg.mode,
            invalid_prob=cfg.invalid_prob,
            max_invalid=cfg.max_invalid,
            shuffle=cfg.shuffle,
            seed=cfg.seed + 10_000 if val else cfg.seed,
            photos=cfg.photos or None,
            photo_prob=cfg.photo_prob,
            breathing=cfg.breathing,
            jpeg_prob=cfg.jpeg_prob,
        )
    if not Path(cfg.data).is_dir():
        raise StackMFFError(f"data must be 'procedural' or an existing dataset folder, got {cfg.data!r}")
    return FolderStacks(
        cfg.data,
        size=cfg.size,
        shuffle=cfg.shuffle,
        invalid_prob=cfg.invalid_prob,
        max_invalid=cfg.max_invalid,
        seed=cfg.seed,
    )


def _lr_lambda(cfg: TrainConfig):
    def f(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        t = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))

    return f


def _amp_dtype(cfg: TrainConfig, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype, needs grad scaler)."""
    if cfg.amp == "none" or (cfg.amp == "auto" and device.type != "cuda"):
        return None, False
    if cfg.amp == "bf16" or (cfg.amp == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16, False
    return torch.float16, device.type == "cuda"


def _rng_state() -> dict:
    st = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}  # noqa: NPY002 (global state of libraries)
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict) -> None:
    torch.set_rng_state(st["torch"])
    np.random.set_state(st["numpy"])  # noqa: NPY002
    random.setstate(st["python"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def _save_full(path: Path, model: StackMFFV3, opt, sched, scaler, step: int, epoch: int, cfg: TrainConfig) -> None:
    from ..io import OutputSet

    state = {
        "config": model.cfg.to_dict(),
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "scaler": scaler.state_dict() if scaler else None,
        "rng": _rng_state(),
        "step": step,
        "epoch": epoch,
        "train_config": asdict(cfg),
    }
    with OutputSet(overwrite=True) as outs:  # temp file removed on failure/signal; stale ones of killed runs swept
        torch.save(state, outs.temp(path))


def _load_resume(last: Path, cfg: TrainConfig) -> dict:
    """``last.pt``, refused in one line when it is damaged or belongs to another model than ``cfg`` asks for."""
    try:
        ck = torch.load(last, map_location="cpu", weights_only=False)
    except Exception as exc:  # a truncated or foreign file: torch raises anything from EOFError to RuntimeError
        raise StackMFFError(
            f"cannot resume from {last}: the file is damaged ({type(exc).__name__}); delete it or pass --no-resume"
        ) from None
    if not isinstance(ck, dict) or not {"model", "optimizer", "step"} <= set(ck):
        raise StackMFFError(f"{last} is not a training checkpoint; delete it or pass --no-resume")
    was = (ck.get("train_config") or {}).get("model")
    if was is not None and was != cfg.model:
        raise StackMFFError(
            f"{last} was trained with --model {was}, not {cfg.model}; pass --model {was} to resume it, "
            "or another -o / --no-resume to start over"
        )
    return ck


def train(cfg: TrainConfig) -> Path:
    """Train (or resume, or fine-tune from ``init_from``) and return the path of the fp32 inference checkpoint.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) each process trains on its shard of every epoch's batches with
    DistributedDataParallel (NCCL on GPU, gloo on CPU); only rank 0 validates, logs and writes files.

    Returns:
        ``out_dir/model.pt`` (fp32 weights + config); ``out_dir/model_fp16.pt`` and ``out_dir/last.pt`` (resumable)
        are written alongside.
    """
    try:  # checked before any work: the metrics are logged with it
        import dvclive  # noqa: F401
    except ImportError:
        raise StackMFFError(
            "training logs its metrics with dvclive, which is not installed: pip install 'stackmff[pipeline]'"
        ) from None
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    ddp = world > 1
    if ddp and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and cfg.device != "cpu" else "gloo"
        dist.init_process_group(backend)
    if ddp and torch.cuda.is_available() and cfg.device != "cpu":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = resolve_device(cfg.device)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out_dir)
    main_proc = rank == 0
    if main_proc:
        from ..io import sweep_stale_temps

        out.mkdir(parents=True, exist_ok=True)
        sweep_stale_temps(out)  # temp checkpoints of a killed run
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)  # noqa: NPY002 (our data uses Generators; this seeds third-party users of the global state)
    random.seed(cfg.seed)

    if cfg.init_from:
        model = load_model(cfg.init_from, device="cpu").train()
        bad = sorted(set(cfg.model_options) - {"head", "rope"})
        if bad:
            raise StackMFFError(
                f"--model-option {', '.join(bad)} cannot change the architecture of --init-from {cfg.init_from}; "
                "only head and rope can"
            )
        for k, v in cfg.model_options.items():
            setattr(model.cfg, k, v)
        model.cfg.__post_init__()  # validates the new values
        log.info("fine-tuning from %s (%s)", cfg.init_from, model.cfg.extras.get("variant", "custom"))
    else:
        model = StackMFFV3(get_config(cfg.model, **cfg.model_options))
    model = model.to(device).to(memory_format=torch.channels_last)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1 and "pool" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim > 1 and "pool" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg))
    ac_dtype, needs_scaler = _amp_dtype(cfg, device)
    scaler = torch.amp.GradScaler(device.type) if needs_scaler else None

    step, epoch = 0, 0
    last = out / "last.pt"
    if cfg.resume and last.is_file():
        ck = _load_resume(last, cfg)
        try:
            model.load_state_dict(ck["model"])
        except RuntimeError:
            raise StackMFFError(
                f"{last} holds a network of another shape (other --model-option?); use the same options to resume "
                "it, or another -o / --no-resume to start over"
            ) from None
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        if scaler is not None and ck.get("scaler"):
            scaler.load_state_dict(ck["scaler"])
        _set_rng_state(ck["rng"])
        step, epoch = int(ck["step"]), int(ck["epoch"])
        if main_proc:
            log.warning("resumed from %s at step %d", last, step)

    from ..data.datasets import EqualNBatchSampler, collate_stacks

    ds = _make_dataset(cfg)
    sampler = _Batches(EqualNBatchSampler(ds, cfg.batch_size, seed=cfg.seed, drop_last=True), rank, world)
    loader = DataLoader(
        ds,
        batch_sampler=sampler,
        collate_fn=collate_stacks,
        num_workers=cfg.workers,
        persistent_workers=False,
        pin_memory=device.type == "cuda",
    )
    val_batches = []
    if main_proc and cfg.val_count > 0:
        vds = _make_dataset(cfg, val=True)
        vs = EqualNBatchSampler(vds, 4, shuffle=False)
        val_batches = [collate_stacks([vds[i] for i in b]) for b in vs]
    net = DistributedDataParallel(model) if ddp else model

    live = None
    if main_proc:
        from dvclive import Live

        live = Live(str(out / "live"), resume=step > 0, save_dvc_exp=False, dvcyaml=False)
        live.log_params(
            {
                k: (list(v) if isinstance(v, tuple) else v)
                for k, v in asdict(cfg).items()
                if isinstance(v, (int, float, str, bool, tuple)) or v is None
            }
        )
        live.step = step

    t_start = time.monotonic()
    t_ckpt = t_start
    run_loss, run_acc, run_n = 0.0, 0.0, 0
    per_epoch = len(EqualNBatchSampler(ds, cfg.batch_size, seed=cfg.seed, drop_last=True)) // world
    if per_epoch == 0:
        raise StackMFFError(f"epoch_size {cfg.epoch_size} gives no full batch of {cfg.batch_size}; raise epoch_size")

    saved = {"step": -1}

    def checkpoint() -> None:
        saved["step"] = step
        _save_full(last, model, opt, sched, scaler, step, epoch, cfg)
        meta = {"step": step, "train_config": asdict(cfg)}
        save_checkpoint(out / "model.pt", model, **meta)
        save_checkpoint(out / "model_fp16.pt", model, half=True, **meta)

    stop = False
    while step < cfg.steps and not stop:
        sampler.set_epoch(epoch, skip=step - epoch * per_epoch if step > epoch * per_epoch else 0)
        for batch in loader:
            m = train_step(
                net,
                batch,
                opt,
                device=device,
                autocast_dtype=ac_dtype,
                scaler=scaler,
                grad_clip=cfg.grad_clip,
                colour_loss=cfg.colour_loss,
            )
            sched.step()
            step += 1
            run_loss, run_acc, run_n = run_loss + m["loss"], run_acc + m["acc"], run_n + 1
            if not math.isfinite(m["loss"]):
                raise RuntimeError(f"loss became {m['loss']} at step {step}; lower lr or use amp=none")
            elapsed_min = (time.monotonic() - t_start) / 60
            if main_proc and (step % cfg.log_every == 0 or step == cfg.steps):
                live.step = step
                live.log_metric("train/loss", run_loss / run_n)
                live.log_metric("train/acc", run_acc / run_n)
                live.log_metric("train/lr", sched.get_last_lr()[0])
                if val_batches and (step % cfg.val_every == 0 or step == cfg.steps):
                    for k, v in _validate(model, val_batches, device).items():
                        live.log_metric(k, v)
                live.make_summary()
                log.info("step %d loss %.4f acc %.3f (%.1f min)", step, run_loss / run_n, run_acc / run_n, elapsed_min)
                run_loss, run_acc, run_n = 0.0, 0.0, 0
            stop = step >= cfg.steps or (cfg.max_minutes > 0 and elapsed_min >= cfg.max_minutes)
            if ddp:  # rank 0's clock decides, so that every rank stops at the same step
                flag = torch.tensor([int(stop)], device=device)
                dist.broadcast(flag, 0)
                stop = bool(flag.item())
            if main_proc and (stop or time.monotonic() - t_ckpt >= cfg.ckpt_every_s):
                checkpoint()
                t_ckpt = time.monotonic()
            if stop:
                break
        else:
            epoch += 1
    if main_proc:
        if saved["step"] != step:
            checkpoint()
        (out / "train_state.json").write_text(json.dumps({"step": step, "epoch": epoch}) + "\n")
        live.end()
    if ddp:
        dist.barrier()
    return out / "model.pt"
