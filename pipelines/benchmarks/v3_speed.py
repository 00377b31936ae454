"""StackMFF V3 inference speed and memory: the fast path against an upstream-style evaluation, and the 12 MP case.

Three measurements, each in layer-megapixels per second (N · H · W / 1e6 / seconds):

- ``throughput``: :func:`stackmff.fusion.learned.fuse_stack_v3` (BN folded, channels-last, streamed layers,
  chunked attention, colour gather included) on an N-layer RGB stack;
- ``reference``: the same weights evaluated the upstream way (:class:`stackmff.models._reference.UpstreamStyleV3`:
  all layers at once in NCHW, ``nn.MultiheadAttention`` over B·H·W sequences), on a smaller stack because it needs
  ~1 KB per layer-pixel; the fast path is timed on the same stack in the same run for the ratio;
- ``memory``: a child process fuses an N-layer stack stored as a ``.npy`` memmap (so the input is file-backed and
  not counted) with a memory budget, sampling its anonymous resident memory (``RssAnon``) every 20 ms; the peak is
  what the fusion itself needs, including the output image, index and confidence maps.

- ``cli_memory`` (optional, ``--cli-memory``): the whole ``stackmff fuse`` command on N 8-bit JPEG layers of the
  ``--mem-size``, with each ``--cli-gather``, peak ``RssAnon`` and ``VmRSS`` of the child sampled every 20 ms.

- ``flops`` (optional, ``--flops``): V3's FLOPs (``torch.utils.flop_counter``), achieved FLOP/s of the network
  against this machine's 2048² matmul and 3×3 conv peak measured in the same run, and the ``torch.profiler`` ops
  that take the time.

- ``openfocus`` (optional, ``--openfocus BIN``): the author's app (``pip install openfocus`` in a SEPARATE venv;
  never import it) on the same 8-bit stack files as ours, ``-m stackmffv3 --cpu``, timed as whole commands (wall and
  CPU seconds of the child from ``resource`` accounting; the ratios are the speed-ups); quality as PSNR against the
  AiF image of a held-out procedural stack, clean and with four invalid layers (blurred, duplicate, noisy,
  exposure-shifted).
  ``--gather hard|soft`` picks the same colour rule on both sides (OpenFocus' ``--ai-mode``; its default is soft,
  which also averages two inference scales); ``--gather pyramid`` (our default) is compared with OpenFocus' soft
  default, as it has no pyramid mode.

Machines here are shared: compare ratios from one run, not absolute times across runs. Use ``--threads`` to pin the
torch thread count (1 on a loaded 2-core machine; 2 threads that spin-wait on a busy core are much slower).

Usage::

    python -m pipelines.benchmarks.v3_speed --variant v3 --threads 1 --json reports/v3_speed.json
    python -m pipelines.benchmarks.v3_speed --skip-memory --size 1024 --layers 10
    python -m pipelines.benchmarks.v3_speed --skip-throughput --skip-reference --skip-memory --flops --threads 1 \
        --weights weights/stackmff_v3.pt
    python -m pipelines.benchmarks.v3_speed --skip-throughput --skip-reference --skip-memory \
        --weights weights/stackmff_v3.pt --openfocus /tmp/ofenv/bin/openfocus
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from stackmff.color import luma
from stackmff.fusion.learned import fuse_stack_v3
from stackmff.io import atomic_write, load_rgb
from stackmff.models._reference import UpstreamStyleV3
from stackmff.models.checkpoint import load_model
from stackmff.models.registry import create_model
from stackmff.models.stackmff_v3 import StackMFFV3


def _model(variant: str, weights: str | None) -> StackMFFV3:
    if weights:
        return load_model(weights)
    torch.manual_seed(0)
    return create_model(variant).eval()


def _stack(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 3, h, w), dtype=np.float32)


def _rss_anon_mb() -> float:
    return _status_mb("self")[0]


def throughput(model: StackMFFV3, n: int, h: int, w: int, *, reps: int = 1, budget_mb: float = 1024) -> dict:
    """Median seconds and layer-MP/s of :func:`fuse_stack_v3` on a random ``(n, 3, h, w)`` stack."""
    st = _stack(n, h, w)
    fuse_stack_v3(st[:, :, :64, :64], model)  # warm-up: oneDNN primitives, allocator
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        res = fuse_stack_v3(st, model, memory_budget_mb=budget_mb)
        times.append(time.perf_counter() - t0)
    sec = float(np.median(times))
    return {
        "layers": n,
        "height": h,
        "width": w,
        "seconds": round(sec, 3),
        "layer_mp_per_s": round(n * h * w / 1e6 / sec, 4),
        "tile": res.extras["tile"],
    }


@torch.inference_mode()
def reference(model: StackMFFV3, n: int, size: int, *, reps: int = 1) -> dict:
    """Upstream-style evaluation vs the fast path on the same ``(n, size, size)`` stack, same weights."""
    ref = UpstreamStyleV3(model).eval()
    st = _stack(n, size, size)
    lum = torch.from_numpy(luma(st))[None]  # (1, N, H, W)
    ref(lum[..., :64, :64])
    t_ref = []
    for _ in range(reps):
        t0 = time.perf_counter()
        idx_ref = ref(lum).argmax(1)[0].numpy()
        t_ref.append(time.perf_counter() - t0)
    fast = throughput(model, n, size, size, reps=reps)
    res = fuse_stack_v3(st, model, precision="fp32")  # agreement of the same arithmetic (bf16 flips near-ties)
    t = float(np.median(t_ref))
    return {
        "layers": n,
        "size": size,
        "reference_seconds": round(t, 3),
        "fast_seconds": fast["seconds"],
        "speedup": round(t / fast["seconds"], 2),
        "index_agreement": float((res.index_map == idx_ref).mean()),
    }


def _median_time(fn, reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def machine_peak(reps: int = 5) -> dict:
    """This machine's measured fp32 peak at the current thread count: a 2048² matmul and a 3×3 64→64 convolution."""
    a = torch.randn(2048, 2048)
    t_mm = _median_time(lambda: a @ a, reps)
    x, wt = torch.randn(1, 64, 256, 256), torch.randn(64, 64, 3, 3)
    t_conv = _median_time(lambda: torch.nn.functional.conv2d(x, wt, padding=1), reps)
    return {
        "matmul_gflops": round(2 * 2048**3 / t_mm / 1e9, 1),
        "conv3x3_gflops": round(2 * 64 * 64 * 9 * 256 * 256 / t_conv / 1e9, 1),
    }


@torch.inference_mode()
def flops(model: StackMFFV3, n: int, size: int, *, reps: int = 1, profile_rows: int = 12) -> dict:
    """V3's FLOPs on an ``n`` × ``size``² stack (``torch.utils.flop_counter``), achieved FLOP/s against the machine
    peak measured in the same run, and where the time goes (``torch.profiler``, ops by self CPU time).

    The network is timed as :func:`fuse_stack_v3` runs it (BN folded, one layer at a time through the encoder,
    cross-layer stage at half resolution, fp32); the counter sees convolutions and matrix products only, so the
    elementwise work (attention scores, norms, activations) is time without counted FLOPs.
    """
    from torch.profiler import ProfilerActivity, profile
    from torch.utils.flop_counter import FlopCounterMode

    from stackmff.models.inference import inference_copy, predict_logits

    m = inference_copy(model)
    st = _stack(n, size, size)
    lum = np.stack([luma(layer) for layer in st])

    def net():
        return predict_logits(m, lum, layer_group=1, half_res=True)

    counter = FlopCounterMode(display=False)
    with counter:
        net()
    total = counter.get_total_flops()
    by_op: dict[str, int] = {}
    for ops in (counter.get_flop_counts().get("Global") or {}).items():
        by_op[str(ops[0]).split(".")[-1] if "." in str(ops[0]) else str(ops[0])] = int(ops[1])
    t_net = _median_time(net, reps)
    t_fuse = _median_time(lambda: fuse_stack_v3(st, model, precision="fp32"), reps)
    peak = machine_peak()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        net()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    all_us = sum(e.self_cpu_time_total for e in events) or 1.0
    top = [
        {
            "op": e.key,
            "self_ms": round(e.self_cpu_time_total / 1e3, 1),
            "share": round(e.self_cpu_time_total / all_us, 3),
        }
        for e in events[:profile_rows]
    ]
    return {
        "layers": n,
        "size": size,
        "threads": torch.get_num_threads(),
        "gflop": round(total / 1e9, 2),
        "gflop_by_op": {k: round(v / 1e9, 2) for k, v in sorted(by_op.items(), key=lambda kv: -kv[1])},
        "network_seconds": round(t_net, 3),
        "fuse_seconds": round(t_fuse, 3),
        "network_gflops": round(total / t_net / 1e9, 2),
        **peak,
        "share_of_matmul_peak": round(total / t_net / 1e9 / peak["matmul_gflops"], 3),
        "share_of_conv_peak": round(total / t_net / 1e9 / peak["conv3x3_gflops"], 3),
        "profile_top_ops": top,
    }


def _memory_child(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    model = _model(args.variant, args.weights)
    st = np.load(args.stack_file, mmap_mode="r")  # file-backed: not part of RssAnon
    base = _rss_anon_mb()
    peak = [base]
    done = threading.Event()

    def sample():
        while not done.wait(0.02):
            peak[0] = max(peak[0], _rss_anon_mb())

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    t0 = time.perf_counter()
    res = fuse_stack_v3(st, model, memory_budget_mb=args.budget)
    sec = time.perf_counter() - t0
    done.set()
    th.join()
    peak[0] = max(peak[0], _rss_anon_mb())
    n, _, h, w = st.shape
    print(
        json.dumps(
            {
                "layers": n,
                "height": h,
                "width": w,
                "budget_mb": args.budget,
                "seconds": round(sec, 1),
                "layer_mp_per_s": round(n * h * w / 1e6 / sec, 4),
                "peak_anon_mb": round(peak[0], 1),
                "baseline_anon_mb": round(base, 1),
                "tile": res.extras["tile"],
                "overlap": res.extras["overlap"],
            }
        )
    )


def memory(args: argparse.Namespace) -> dict:
    """Peak anonymous memory of fusing an ``(N, 3, H, W)`` memmapped stack in a fresh child process."""
    n, (h, w) = args.mem_layers, args.mem_size
    with tempfile.TemporaryDirectory(dir=args.tmpdir) as tmp:
        path = Path(tmp) / "stack.npy"
        mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, 3, h, w))
        rng = np.random.default_rng(0)
        for k in range(n):  # a few random rows tiled down the image: cheap to write, non-trivial content
            mm[k] = np.resize(rng.random((3, 64, w), dtype=np.float32), (3, h, w))
        mm.flush()
        del mm
        cmd = [
            sys.executable,
            "-m",
            "pipelines.benchmarks.v3_speed",
            "--memory-child",
            str(path),
            "--variant",
            args.variant,
            "--threads",
            str(args.threads),
            "--budget",
            str(args.budget),
        ]
        if args.weights:
            cmd += ["--weights", args.weights]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _status_mb(pid: int | str) -> tuple[float, float]:
    """(RssAnon, VmRSS) of a process (a pid or ``"self"``) in MB; NaN when it cannot be read (exited)."""
    anon = rss = float("nan")
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    anon = int(line.split()[1]) / 1024
                elif line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) / 1024
    except OSError:
        pass
    return anon, rss


def cli_memory(args: argparse.Namespace) -> list[dict]:
    """Peak memory of the whole ``stackmff fuse`` command on N 8-bit JPEG layers of H×W, for each ``--cli-gather``.

    What a user sees: decoding, the stack as the CLI keeps it, the network, the colour rule and writing the result,
    plus the interpreter and its imports. Sampled from ``/proc/<pid>/status`` every 20 ms: ``RssAnon`` (the
    process' own memory) and ``VmRSS`` (also counting mapped library pages such as libtorch).
    """
    import cv2

    n, (h, w) = args.mem_layers, args.mem_size
    out = []
    with tempfile.TemporaryDirectory(dir=args.tmpdir) as tmp:
        d = Path(tmp) / "layers"
        d.mkdir()
        rng = np.random.default_rng(0)
        for k in range(n):  # random rows tiled down the image, lightly blurred per layer: JPEG-typical content
            img = np.resize(rng.integers(0, 256, (64, w, 3), dtype=np.uint8), (h, w, 3))
            img = cv2.GaussianBlur(img, (0, 0), 0.5 + 0.3 * k)
            cv2.imwrite(str(d / f"{k:02d}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        for gather in args.cli_gather:
            dst = Path(tmp) / f"fused_{gather}.jpg"
            cmd = [sys.executable, "-m", "stackmff", "fuse", str(d), "-o", str(dst), "--align", "none"]
            cmd += ["--memory-budget", str(args.budget), "-O", f"gather={gather}"]
            if args.weights:
                cmd += ["--weights", args.weights]
            t0 = time.perf_counter()
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            peak_anon = peak_rss = 0.0
            while proc.poll() is None:
                anon, rss = _status_mb(proc.pid)
                peak_anon, peak_rss = max(peak_anon, anon or 0.0), max(peak_rss, rss or 0.0)
                time.sleep(0.02)
            err = proc.stderr.read() if proc.stderr else ""
            if proc.returncode:
                raise RuntimeError(f"stackmff fuse failed ({proc.returncode}): {err.strip()}")
            out.append(
                {
                    "gather": gather,
                    "layers": n,
                    "height": h,
                    "width": w,
                    "budget_mb": args.budget,
                    "seconds": round(time.perf_counter() - t0, 1),
                    "peak_anon_mb": round(peak_anon, 1),
                    "peak_rss_mb": round(peak_rss, 1),
                }
            )
            print("cli memory", out[-1], file=sys.stderr)
    return out


def _run_timed(cmd: list[str], env: dict | None = None) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of a child command.

    CPU time is the steadier measure on a shared machine: wall time also counts the time the child waits for a core.
    """
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    sec = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return sec, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def openfocus_compare(args: argparse.Namespace) -> dict:
    """Ours vs OpenFocus ``stackmffv3`` on the same 8-bit layer files: wall and CPU time, PSNR clean / invalid."""
    import cv2
    from skimage.metrics import peak_signal_noise_ratio

    from stackmff.data.augment import inject_invalid_layers
    from stackmff.data.datasets import ProceduralStacks

    ds = ProceduralStacks(
        1,
        size=(args.of_size, args.of_size),
        n_range=(args.of_layers, args.of_layers),
        invalid_prob=0.0,
        shuffle=False,
        seed=4242,
    )
    st = ds.draw(0)
    inv = st
    rng = np.random.default_rng(0)
    for kind in ("blurred", "duplicate", "noisy", "exposure"):
        inv = inject_invalid_layers(inv, rng, kinds=(kind,), count=1)
    aif = st.aif.transpose(1, 2, 0)
    out: dict = {"layers": st.n, "size": args.of_size, "gather": args.gather}
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    with tempfile.TemporaryDirectory(dir=args.tmpdir) as tmp:
        for case, layers in (("clean", st.layers), ("invalid", inv.layers)):
            d = Path(tmp) / case
            d.mkdir()
            for k, layer in enumerate(layers):
                u8 = np.rint(np.clip(layer, 0, 1) * 255).astype(np.uint8).transpose(1, 2, 0)[..., ::-1]
                cv2.imwrite(str(d / f"{k:02d}.png"), u8)
            ours = Path(tmp) / f"ours_{case}.png"
            theirs = Path(tmp) / f"of_{case}.png"
            code = (
                "import sys, torch; torch.set_num_threads(int(sys.argv[4])); from stackmff.fusion.run import "
                "fuse_to_file; fuse_to_file(sys.argv[1], sys.argv[2], 'stackmff_v3', "
                "method_options={'weights': sys.argv[3] or None, 'device': 'cpu', 'gather': sys.argv[5]})"
            )
            t_ours, cpu_ours = _run_timed(
                [sys.executable, "-c", code, str(d), str(ours), args.weights or "", str(args.threads), args.gather]
            )
            t_of, cpu_of = _run_timed(
                [
                    args.openfocus,
                    "-i",
                    str(d),
                    "-o",
                    str(theirs),
                    "-m",
                    "stackmffv3",
                    "--cpu",
                    "--align",
                    "none",
                    "--threads",
                    str(args.threads),
                    "--ai-mode",
                    "hard" if args.gather == "hard" else "soft",
                ],
                env,
            )
            res = {}
            for who, path, sec, cpu in (("ours", ours, t_ours, cpu_ours), ("openfocus", theirs, t_of, cpu_of)):
                img = load_rgb(path).transpose(1, 2, 0)  # (H, W, 3) float in [0, 1], RGB (grey repeated)
                res[who] = {
                    "seconds": round(sec, 2),
                    "cpu_seconds": round(cpu, 2),
                    "psnr": round(float(peak_signal_noise_ratio(aif, img, data_range=1.0)), 2),
                }
            res["speedup_wall"] = round(t_of / t_ours, 2)
            res["speedup_cpu"] = round(cpu_of / cpu_ours, 2)
            out[case] = res
            if args.keep_outputs:
                for f in (ours, theirs):
                    shutil.copy(f, Path(args.keep_outputs) / f.name)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--variant", default="v3", help="registered variant (random weights: speed does not depend on them)")
    p.add_argument("--weights", help="checkpoint instead of a random variant")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--layers", type=int, default=10, help="N for the throughput case")
    p.add_argument("--size", type=int, default=1024, help="side of the throughput case (1024: 1 MP)")
    p.add_argument("--reps", type=int, default=1, help="repetitions (median)")
    p.add_argument("--ref-layers", type=int, default=4, help="N for the upstream-style comparison")
    p.add_argument("--ref-size", type=int, default=256, help="side for the upstream-style comparison")
    p.add_argument("--mem-layers", type=int, default=10, help="N for the memory case")
    p.add_argument("--mem-size", type=int, nargs=2, default=[3000, 4000], metavar=("H", "W"), help="memory case size")
    p.add_argument("--budget", type=float, default=512, help="memory_budget_mb for the memory case")
    p.add_argument("--tmpdir", help="where the memmapped stack is written (needs N*3*H*W*4 bytes)")
    p.add_argument("--openfocus", metavar="BIN", help="OpenFocus executable (in its own venv) for a side-by-side run")
    p.add_argument("--of-layers", type=int, default=10, help="N of the OpenFocus comparison stack")
    p.add_argument("--of-size", type=int, default=512, help="side of the OpenFocus comparison stack")
    p.add_argument(
        "--gather",
        choices=("hard", "soft", "pyramid"),
        default="pyramid",
        help="our colour rule in the OpenFocus comparison (OpenFocus --ai-mode: hard for hard, else soft)",
    )
    p.add_argument("--keep-outputs", metavar="DIR", help="copy the fused images of the OpenFocus comparison here")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--skip-reference", action="store_true")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument(
        "--cli-memory", action="store_true", help="also measure the whole `stackmff fuse` command (--mem-* JPEGs)"
    )
    p.add_argument("--cli-gather", nargs="+", default=["hard", "pyramid"], help="gather options for --cli-memory")
    p.add_argument(
        "--flops", action="store_true", help="FLOPs (flop_counter), FLOP/s vs measured peak, torch.profiler top ops"
    )
    p.add_argument("--flops-layers", type=int, default=10, help="N of the FLOPs case")
    p.add_argument("--flops-size", type=int, default=1024, help="side of the FLOPs case")
    p.add_argument("--json", help="write the results here (atomic)")
    p.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.memory_child:
        args.stack_file = args.memory_child
        _memory_child(args)
        return 0
    torch.set_num_threads(args.threads)
    model = _model(args.variant, args.weights)
    out: dict = {
        "variant": args.variant,
        "weights": args.weights,
        "threads": args.threads,
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
    }
    if not args.skip_reference:
        out["reference"] = reference(model, args.ref_layers, args.ref_size, reps=args.reps)
        print("reference", out["reference"], file=sys.stderr)
    if not args.skip_throughput:
        out["throughput"] = throughput(model, args.layers, args.size, args.size, reps=args.reps)
        print("throughput", out["throughput"], file=sys.stderr)
    if not args.skip_memory:
        out["memory"] = memory(args)
        print("memory", out["memory"], file=sys.stderr)
    if args.cli_memory:
        out["cli_memory"] = cli_memory(args)
    if args.flops:
        out["flops"] = flops(model, args.flops_layers, args.flops_size, reps=args.reps)
        print("flops", out["flops"], file=sys.stderr)
    if args.openfocus:
        out["openfocus"] = openfocus_compare(args)
        print("openfocus", out["openfocus"], file=sys.stderr)
    text = json.dumps(out, indent=2)
    if args.json:
        with atomic_write(args.json, mode="w", overwrite=True) as f:
            f.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
