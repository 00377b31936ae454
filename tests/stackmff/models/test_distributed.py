"""Training across machines (torchrun --nnodes) and the CUDA paths: CUDA and bf16 inference, DDP over NCCL.

The multi-node test runs two torchrun "nodes" on this machine over loopback (gloo): the same rendezvous, ranks and
rank-0-only writing as on two hosts. The ``gpu`` tests run only where CUDA is present (``pytest -m gpu``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

TRAIN_ARGS = [
    "--steps", "2", "--size", "32", "--n-range", "2", "3", "--epoch-size", "8", "--batch-size", "2",
    "--val-count", "2", "--val-size", "32", "--val-every", "2", "--log-every", "1", "--warmup-steps", "1",
]  # fmt: skip
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(launcher: list[str], train: list[str]) -> list[str]:
    """``torchrun <launcher> -m stackmff train <TRAIN_ARGS> <train>``."""
    return [sys.executable, "-m", "torch.distributed.run", *launcher, "-m", "stackmff", "train", *TRAIN_ARGS, *train]


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[3]))
    env.pop("WORLD_SIZE", None)
    return env


@pytest.mark.slow
def test_two_nodes_over_loopback(tmp_path):
    """`torchrun --nnodes 2 --node-rank R --master-addr A --master-port P` on each node, as documented."""
    port, out = _free_port(), tmp_path / "run"
    rendezvous = ["--nnodes", "2", "--nproc-per-node", "1", "--master-addr", "127.0.0.1", "--master-port", str(port)]
    train = ["--device", "cpu", "--threads", "1", "-o", str(out)]
    nodes = [
        subprocess.Popen(
            _torchrun([*rendezvous, "--node-rank", str(r)], train),
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for r in (0, 1)
    ]
    logs = [p.communicate(timeout=600)[0] for p in nodes]
    assert [p.returncode for p in nodes] == [0, 0], "\n".join(log[-3000:] for log in logs)
    ck = torch.load(out / "last.pt", weights_only=False)
    assert ck["step"] == 2  # both nodes stepped together (a lone node would block at the rendezvous)
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())


@pytest.mark.gpu
@needs_cuda
def test_ddp_over_nccl(tmp_path):
    gpus = min(torch.cuda.device_count(), 2)
    out = tmp_path / "run"
    p = subprocess.run(
        _torchrun(
            ["--standalone", "--nproc-per-node", str(gpus)], ["--device", "cuda", "--amp", "bf16", "-o", str(out)]
        ),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    ck = torch.load(out / "last.pt", weights_only=False)
    assert ck["step"] == 2 and all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())


def _stack(n=5, h=160, w=224, seed=0) -> np.ndarray:
    """Layers of one random texture, each sharp in its own vertical band and Gaussian-blurred elsewhere."""
    import cv2

    rng = np.random.default_rng(seed)
    sharp = rng.random((h, w, 3), dtype=np.float32)
    blurred = cv2.GaussianBlur(sharp, (0, 0), 3.0)
    stack = np.empty((n, 3, h, w), np.float32)
    for k in range(n):
        layer = blurred.copy()
        band = slice(k * w // n, (k + 1) * w // n)
        layer[:, band] = sharp[:, band]
        stack[k] = layer.transpose(2, 0, 1)
    return stack


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cuda_inference_agrees_with_cpu(precision):
    from stackmff.fusion import fuse

    st = _stack()
    cpu = fuse(st, "stackmff_v3", device="cpu", precision="fp32", threads=1)
    gpu = fuse(st, "stackmff_v3", device="cuda", precision=precision)
    agree = float((cpu.index == gpu.index).mean())
    assert agree >= (0.999 if precision == "fp32" else 0.98), agree
    assert np.abs(cpu.image - gpu.image).mean() < 2e-3
