"""Whole-command benchmark grid: every method over N layers x megapixels, alone and beside a competing process.

Each cell times what a user runs, start-up included: ``python -m stackmff fuse DIR -o OUT -m METHOD --overwrite``
with default flags otherwise (so ``--align auto``, the automatic memory budget and thread count), on an N-layer
8-bit JPEG stack of the given size. External tools (enfuse, focus-stack, OpenFocus: :mod:`stackmff.peers`) are
timed the same way when their executables are on ``PATH``: the tool's own commands through its adapter, start-up
included (the adapter's copying of the layers and reading of the output are not counted). The runs of one stack are
interleaved (repeat 1 of every method, then repeat 2, ...) so that all methods see the same load. Per cell, the
median over ``--repeats`` runs of:

- ``wall_s``: wall seconds; ``cpu_s``: user + system CPU seconds of the command (``os.wait4``);
- ``mp_layers_per_s``: N x megapixels / wall seconds;
- ``peak_rss_mb``: the command's peak resident memory (``ru_maxrss`` of the child);
- ``gpu_peak_mb`` (learned methods on CUDA): the most GPU memory torch held during the fusion, from the command's
  ``--json`` summary.

Learned methods run on every ``--devices`` entry (default ``auto``: the CPU, and CUDA as well when torch sees a GPU;
each row says its ``device``). On a machine without a GPU the command is exactly the user's default command; with
one, ``--device cpu`` / ``--device cuda --json`` are added so that both rows exist. ``versus`` compares OpenFocus
with V3 on the device V3 picks by default (CUDA when present), as each tool runs by default.

The stack: a real photo (``data/samples/pcb/00.jpg``, resized to the cell's size) whose layer k is sharp around
depth k/(N-1) of a smooth depth field and blurred elsewhere (one blur, blended per layer): cheap to make at 24 MP
and registered, so ``--align auto`` pays its check only. Larger cells of a method are skipped once it took more
than ``--max-seconds`` on a smaller one (the grid is ordered by size). One run is killed after ``--run-timeout``
seconds (default one hour; the cell then reports ``killed after ...`` as its error): raise it for the paper grid's
largest cells (V3 on 50 x 24 MP took 32 min on a 2-core machine).

``--beside spin|same`` starts a competing process for every timed run (``spin``: one busy Python loop, like a
training job on one core; ``same``: the same command in a loop) and also runs each cell alone, so the ratios
``beside / alone`` are measured in one run. The machine (CPU model, cores, memory, load before and after) is
recorded with the results: on a shared machine compare ratios from one run, not absolute times across runs.
``versus`` in ``grid.json``: per cell, OpenFocus' wall and CPU seconds over V3's, and focus-stack's and enfuse's
over the fastest classical method's (:func:`versus`).

Usage::

    python -m pipelines.benchmarks.grid --out reports/bench                      # small default grid + plots
    python -m pipelines.benchmarks.grid --params params.yaml --out reports/bench # the `bench` section (DVC stage)
    python -m pipelines.benchmarks.grid --methods stackmff_v3 --devices cuda --out /tmp/gpu  # GPU rows only
    python -m pipelines.benchmarks.grid --methods stackmff_v3 --layers 10 --megapixels 0.25 1 \
        --beside spin --threads auto 2 --repeats 3 --out /tmp/contention          # threads beside a busy process
    PATH=/opt/peers/bin:$PATH python -m pipelines.benchmarks.grid --layers 10 --megapixels 0.25 1 --repeats 3 \
        --max-seconds 600 --out /tmp/peers     # side by side with the installed peers (pipelines/README.md, Peers)
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from stackmff.io import atomic_write

ROOT = Path(__file__).resolve().parents[2]
SOURCE_IMAGE = ROOT / "data" / "samples" / "pcb" / "00.jpg"


# ------------------------------------------------------------------------------------------------ machine, stacks
def machine() -> dict:
    """CPU model, cores (and this process' affinity), memory, load, library versions."""
    info: dict = {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count()}
    try:
        info["affinity"] = len(os.sched_getaffinity(0))
    except AttributeError:
        pass
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
        with open("/proc/meminfo") as f:
            mem = {ln.split(":")[0]: int(ln.split()[1]) for ln in f if ln.split(":")[0] in ("MemTotal", "MemAvailable")}
        info["mem_total_gb"] = round(mem["MemTotal"] / 2**20, 1)
        info["mem_available_gb"] = round(mem["MemAvailable"] / 2**20, 1)
    except (OSError, StopIteration, KeyError):
        pass
    info["loadavg"] = load()
    from importlib.metadata import PackageNotFoundError, version

    gpu = gpu_info()
    if gpu is not None:
        info["gpu"] = gpu
    for pkg in ("torch", "numpy", "opencv-python-headless"):
        try:
            info[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return info


_GPU_CODE = (
    "import json, torch\n"
    "if torch.cuda.is_available():\n"
    "    p = torch.cuda.get_device_properties(0)\n"
    "    print(json.dumps({'name': p.name, 'memory_mb': round(p.total_memory / 2**20), 'count': torch.cuda.device_count(),"
    " 'cuda': torch.version.cuda}))\n"
)


@functools.lru_cache(maxsize=1)
def gpu_info() -> dict | None:
    """The first CUDA device as torch sees it (name, memory, count, CUDA version), or None: asked once, in a child
    process, so that this one never loads torch (its start-up would sit in every timed child's page cache anyway)."""
    r = subprocess.run([sys.executable, "-c", _GPU_CODE], capture_output=True, text=True, timeout=300)
    lines = r.stdout.strip().splitlines()
    return json.loads(lines[-1]) if r.returncode == 0 and lines else None


def load() -> list[float]:
    """1, 5 and 15-minute load averages (what `uptime` prints)."""
    return [round(x, 2) for x in os.getloadavg()]


def write_stack(folder: Path, n: int, megapixels: float, *, quality: int = 92) -> tuple[int, int]:
    """Write an ``n``-layer JPEG stack of ~``megapixels`` (4:3) into ``folder``; returns (height, width)."""
    w = int(round(np.sqrt(megapixels * 1e6 * 4 / 3) / 8) * 8)
    h = int(round(w * 3 / 4 / 8) * 8)
    src = cv2.imread(str(SOURCE_IMAGE))
    if src is None:
        raise FileNotFoundError(f"{SOURCE_IMAGE} is missing (bundled sample stack); run from the repository")
    sharp = cv2.resize(src, (w, h), interpolation=cv2.INTER_AREA if w < src.shape[1] else cv2.INTER_CUBIC)
    blur = cv2.GaussianBlur(sharp, (0, 0), max(1.5, w / 400))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    depth = 0.75 * xx / w + 0.125 * (1 + np.sin(yy / h * 2 * np.pi))  # a tilted, wavy surface over [0, 1]
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        focus = k / max(n - 1, 1)
        wk = np.exp(-(((depth - focus) * max(n - 1, 1) * 1.5) ** 2))[..., None]  # sharp within ~1/2 layer step
        layer = (wk * sharp + (1 - wk) * blur).astype(np.uint8)
        cv2.imwrite(str(folder / f"{k:02d}.jpg"), layer, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return h, w


# ------------------------------------------------------------------------------------------------ timing
DEFAULT_RUN_TIMEOUT = 3600.0  # seconds after which one run is killed (--run-timeout)


def _fork_not_vfork() -> None:
    """A no-op ``preexec_fn``: its presence is what makes :mod:`subprocess` fork (see :func:`run_timed`)."""


def run_timed(cmd: Sequence[str], *, env: dict | None = None, timeout: float = DEFAULT_RUN_TIMEOUT) -> dict:
    """Run ``cmd``; its wall seconds, CPU seconds and peak RSS (MB) from ``os.wait4``, and the exit code.

    A run still going after ``timeout`` seconds is killed; ``timed_out`` says so."""
    t0 = time.perf_counter()
    # preexec_fn makes subprocess fork instead of vfork: a vforked child shares this process' memory map until exec,
    # and Linux carries that map's high-water mark into the child's ru_maxrss, so every command would report at
    # least this process' own peak (making a 3 x 40 MP stack: ~2.1 GB); a forked child starts from the current RSS
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_fork_not_vfork
    )
    deadline = t0 + timeout
    timed_out = False
    while True:
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            proc.kill()
            pid, status, ru = os.wait4(proc.pid, 0)
            timed_out = True
            break
        time.sleep(0.005)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    out, err = proc.communicate()
    return {
        "wall_s": wall,
        "cpu_s": ru.ru_utime + ru.ru_stime,
        "peak_rss_mb": ru.ru_maxrss / 1024,
        "rc": proc.returncode,
        "timed_out": timed_out,
        "stdout": out,
        "stderr": err.strip().splitlines()[-1] if err.strip() else "",
    }


# The wrapper reports the tool's own commands (wall, CPU, peak RSS): its own Python start-up, the copying of the
# layers and the reading of the output are not the tool's cost.
_PEER_CODE = (
    "import json, sys\nfrom stackmff.peers import get_peer\n"
    "r = get_peer(sys.argv[1]).fuse_files(sys.argv[2:])\n"
    "print(json.dumps({'wall_s': r.tool_seconds, 'cpu_s': r.cpu_seconds, 'peak_rss_mb': r.peak_mb}))\n"
)


def command(method: str, stack: Path, out: Path, threads: str, device: str | None = None) -> list[str]:
    """The timed command line: ``stackmff fuse`` with default flags, or an external tool through its adapter.

    ``device`` (learned methods): added as ``--device``, with ``--json`` on CUDA (its summary has the GPU memory);
    None = the default device.
    """
    if method in _peer_names():
        files = sorted(str(p) for p in stack.iterdir())
        return [sys.executable, "-c", _PEER_CODE, method, *files]
    cmd = [sys.executable, "-m", "stackmff", "fuse", str(stack), "-o", str(out), "-m", method, "--overwrite"]
    if threads != "auto":
        cmd += ["--threads", threads]
    if device is not None:
        cmd += ["--device", device] + (["--json"] if device.startswith("cuda") else [])
    return cmd


def learned_methods() -> set[str]:
    """Registered methods that run a network (the ones ``--devices`` applies to)."""
    from stackmff.fusion import list_methods

    return {m.name for m in list_methods() if m.learned}


def devices(requested: Sequence[str], gpu: dict | None) -> list[str]:
    """``--devices`` resolved: ``auto`` = ``cpu`` plus ``cuda`` when a GPU is present; order kept, duplicates dropped.

    Raises:
        ValueError: an unknown device, or CUDA asked for on a machine where torch sees no GPU.
    """
    out: list[str] = []
    for d in requested:
        if d == "auto":
            add = ["cpu"] + (["cuda"] if gpu is not None else [])
        elif d == "cpu" or d == "cuda" or (d.startswith("cuda:") and d[5:].isdigit()):
            if d.startswith("cuda") and gpu is None:
                raise ValueError(f"--devices {d}: torch sees no CUDA device here; use cpu or auto")
            add = [d]
        else:
            raise ValueError(f"--devices {d!r} is not a device; use auto, cpu, cuda or cuda:N")
        out += [x for x in add if x not in out]
    return out


def _peer_names() -> set[str]:
    from stackmff.peers import list_peers

    return {p.name for p in list_peers()}


def available_methods(names: Sequence[str] | None = None) -> list[str]:
    """``names``, or every registered method that takes any layer order plus every installed external tool."""
    from stackmff.fusion import list_methods
    from stackmff.peers import list_peers

    if names:
        return list(names)
    ours = [m.name for m in list_methods() if not m.ordered]
    return ours + [p.name for p in list_peers() if p.available()]


class Competitor:
    """A competing process for the duration of a ``with`` block: ``spin`` (one busy core) or a command in a loop."""

    def __init__(self, kind: str, cmd: Sequence[str] | None = None) -> None:
        self.kind, self.cmd, self.proc = kind, cmd, None

    def __enter__(self) -> Competitor:
        if self.kind == "spin":
            code = "while True:\n    pass\n"
        elif self.kind == "same":
            code = f"import subprocess\nwhile True:\n    subprocess.run({list(self.cmd)!r}, capture_output=True)\n"
        else:
            return self
        self.proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
        time.sleep(0.5)  # let it start (and, for "same", get past its own start-up)
        return self

    def __exit__(self, *exc) -> None:
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: the loop and its current child
            self.proc.wait()


def run_once(
    method: str,
    stack: Path,
    out: Path,
    *,
    threads: str,
    beside: str,
    timeout: float = DEFAULT_RUN_TIMEOUT,
    device: str | None = None,
) -> dict:
    """One timed run of ``method`` on ``stack`` (beside a competitor unless ``beside`` is ``none``/``alone``), killed
    after ``timeout`` seconds; ``device`` as in :func:`command`."""
    cmd = command(method, stack, out, threads, device)
    loadavg = load()
    # the "same" competitor fuses into its own output file
    with Competitor(beside, command(method, stack, out.with_name(f"competitor_{out.name}"), threads, device)):
        r = run_timed(cmd, timeout=timeout)
    if r["timed_out"]:
        return {"error": f"killed after {timeout:.0f} s (raise --run-timeout to let it finish)"}
    if r["rc"] != 0:
        return {"error": f"exit {r['rc']}: {r['stderr']}"}
    if method in _peer_names():  # the wrapper reports the tool's own wall, CPU time and memory
        r.update(json.loads(r["stdout"].strip().splitlines()[-1]))
    elif "--json" in cmd:  # stackmff fuse --json: its summary has the GPU memory of a CUDA run
        gpu = json.loads(r["stdout"]).get("gpu_peak_mb")
        if gpu is not None:
            r["gpu_peak_mb"] = gpu
    r["load"] = loadavg
    return r


def summarize(runs: list[dict]) -> dict:
    """Medians over repeated runs, plus every run's wall and CPU seconds and the 1-minute load before it."""
    out = {
        "wall_s": round(statistics.median(r["wall_s"] for r in runs), 3),
        "cpu_s": round(statistics.median(r["cpu_s"] for r in runs), 3),
        "peak_rss_mb": round(statistics.median(r["peak_rss_mb"] for r in runs), 1),
        "walls": [round(r["wall_s"], 3) for r in runs],
        "cpus": [round(r["cpu_s"], 3) for r in runs],
        "load_1min": [r["load"][0] for r in runs],
    }
    gpu = [r["gpu_peak_mb"] for r in runs if "gpu_peak_mb" in r]
    if gpu:
        out["gpu_peak_mb"] = round(statistics.median(gpu), 1)
    return out


def run_grid(
    methods: Sequence[str],
    layers: Sequence[int],
    megapixels: Sequence[float],
    *,
    repeats: int = 1,
    max_seconds: float = 120.0,
    threads: Sequence[str] = ("auto",),
    beside: str = "none",
    workdir: str | None = None,
    run_timeout: float = DEFAULT_RUN_TIMEOUT,
    device_list: Sequence[str] = ("cpu",),
    log=print,
) -> dict:
    """Measure every (method, threads, device, N, MP) cell; returns ``{"machine": ..., "rows": [...]}``.

    ``device_list`` (resolved by :func:`devices`) applies to the learned methods; the classical ones run on the CPU,
    external tools on the device they choose themselves (row ``device`` "own" when ``device_list`` has a GPU). When
    it is just ``cpu`` the commands carry no ``--device`` (the default command of a machine without a GPU).

    Within a stack, the runs are interleaved: repeat 1 of every method (and mode), then repeat 2, ..., each repeat
    starting one method later, so that all methods of a cell see the same load of a shared machine.
    """
    rows = []
    info = machine()
    cells = sorted(((n, mp) for n in layers for mp in megapixels), key=lambda c: c[0] * c[1])
    modes = ("alone", beside) if beside != "none" else ("alone",)
    explicit = list(device_list) != ["cpu"]
    learned, peers = learned_methods(), _peer_names()
    # external tools pick their own device: "own" where a GPU is present (OpenFocus then uses it), else the CPU
    other = {m: ("own" if explicit and m in peers else "cpu",) for m in methods if m not in learned}
    combos = [(m, th, dev) for m in methods for th in threads for dev in other.get(m, device_list)]
    slow: set[tuple[str, str, str]] = set()  # combos that exceeded max_seconds
    if workdir is not None:
        Path(workdir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="stackmff-grid-", dir=workdir) as tmp:
        for n, mp in cells:
            stack = Path(tmp) / f"n{n}_mp{mp}"
            h, w = write_stack(stack, n, mp)
            jobs = [c for c in combos if c not in slow]
            runs: dict[tuple, list[dict]] = {(*c, mode): [] for c in jobs for mode in modes}
            failed: dict[tuple[str, str, str], tuple[str, str]] = {}  # combo -> (mode, error)
            for rep in range(repeats):
                k = rep % len(jobs) if jobs else 0
                for mode in modes:
                    for m, th, dev in jobs[k:] + jobs[:k]:
                        if (m, th, dev) in failed:
                            continue
                        res = run_once(
                            m,
                            stack,
                            Path(tmp) / f"{m}.jpg",
                            threads=th,
                            beside="none" if mode == "alone" else mode,
                            timeout=run_timeout,
                            device=dev if explicit and m in learned else None,
                        )
                        if "error" in res:
                            failed[(m, th, dev)] = (mode, res["error"])
                            log(f"{m} threads={th} device={dev} N={n} {mp} MP {mode}: {res['error']}")
                        else:
                            runs[(m, th, dev, mode)].append(res)
            for method, th, dev in combos:
                row = {
                    "method": method,
                    "threads": th,
                    "device": dev,
                    "layers": n,
                    "megapixels": mp,
                    "height": h,
                    "width": w,
                }
                if (method, th, dev) not in jobs:
                    rows.append({**row, "skipped": f"slower than {max_seconds:.0f} s on a smaller cell"})
                    continue
                if (method, th, dev) in failed:
                    mode, error = failed[(method, th, dev)]
                    rows.append({**row, "beside": mode, "error": error})
                    continue
                for mode in modes:
                    res = summarize(runs[(method, th, dev, mode)])
                    res["mp_layers_per_s"] = round(n * h * w / 1e6 / res["wall_s"], 3)
                    rows.append({**row, "beside": mode, **res})
                    gpu = f"  GPU {res['gpu_peak_mb']:7.0f} MB" if "gpu_peak_mb" in res else ""
                    log(
                        f"{method:18s} threads={th:4s} {dev:6s} N={n:3d} {mp:5.2f} MP {mode:5s}: wall "
                        f"{res['wall_s']:7.2f} s  cpu {res['cpu_s']:7.2f} s  peak {res['peak_rss_mb']:7.0f} MB{gpu}"
                        f"  load {res['load_1min']}"
                    )
                    if res["wall_s"] > max_seconds:
                        slow.add((method, th, dev))
            for f in stack.iterdir():
                f.unlink()
            stack.rmdir()
    info["loadavg_after"] = load()
    return {"machine": info, "rows": rows}


def ratios(rows: list[dict]) -> list[dict]:
    """``beside / alone`` wall and CPU ratios per (method, threads, device, N, MP) measured beside a competitor."""

    def key(r: dict) -> tuple:
        return r["method"], r["threads"], r.get("device", "cpu"), r["layers"], r["megapixels"]

    alone = {key(r): r for r in rows if r.get("beside") == "alone"}
    out = []
    for r in rows:
        k = key(r)
        if r.get("beside") not in (None, "alone") and "wall_s" in r and k in alone:
            a = alone[k]
            out.append(
                {
                    "method": k[0],
                    "threads": k[1],
                    "device": k[2],
                    "layers": k[3],
                    "megapixels": k[4],
                    "beside": r["beside"],
                    "wall_ratio": round(r["wall_s"] / a["wall_s"], 2),
                    "cpu_ratio": round(r["cpu_s"] / a["cpu_s"], 2),
                }
            )
    return out


def versus(
    rows: list[dict], classical: Sequence[str], *, v3: str = "stackmff_v3", v3_device: str = "cpu"
) -> list[dict]:
    """Per (N, MP) cell, the peers' time over ours (measured alone, ``--threads auto``, in the same run).

    ``v3_device``: the row of V3 to compare, the device its default command picks (``cuda`` when a GPU is present,
    as OpenFocus then uses it too); the classical methods run on the CPU.

    ``openfocus_over_v3_wall``/``_cpu``: OpenFocus' wall/CPU seconds over V3's (the issue's goal: >= 4);
    ``focus_stack_over_classical_wall`` and ``enfuse_over_classical_wall``: the tool's wall seconds over the fastest
    of the ``classical`` methods (goal against focus-stack: >= 1). Pairs with a peer not run are left out.
    """
    cells: dict[tuple[int, float], dict[str, dict]] = {}
    for r in rows:
        if r.get("beside") == "alone" and r.get("threads") == "auto" and "wall_s" in r:
            if r["method"] == v3 and r.get("device", "cpu") != v3_device:
                continue
            cells.setdefault((r["layers"], r["megapixels"]), {})[r["method"]] = r
    out = []
    for (n, mp), by in sorted(cells.items()):
        v: dict = {"layers": n, "megapixels": mp}
        if v3 in by and "openfocus" in by:
            v["openfocus_over_v3_wall"] = round(by["openfocus"]["wall_s"] / by[v3]["wall_s"], 2)
            v["openfocus_over_v3_cpu"] = round(by["openfocus"]["cpu_s"] / by[v3]["cpu_s"], 2)
        fastest = min((by[m] for m in classical if m in by), key=lambda r: r["wall_s"], default=None)
        if fastest is not None:
            v["fastest_classical"] = fastest["method"]
            for peer in ("focus_stack", "enfuse"):
                if peer in by:
                    v[f"{peer}_over_classical_wall"] = round(by[peer]["wall_s"] / fastest["wall_s"], 2)
                    v[f"{peer}_over_classical_cpu"] = round(by[peer]["cpu_s"] / fastest["cpu_s"], 2)
        if any(k.endswith("_wall") for k in v):
            out.append(v)
    return out


def classical_methods() -> list[str]:
    """Registered methods that are not learned."""
    from stackmff.fusion import list_methods

    return [m.name for m in list_methods() if not m.learned]


# ------------------------------------------------------------------------------------------------ plots
def plot(rows: list[dict], out_dir: Path) -> list[Path]:
    """Time and peak memory against N (at the largest MP of the grid) and against MP (at the largest N)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    ok = [r for r in rows if "wall_s" in r and r.get("beside", "alone") == "alone"]
    if not ok:
        return []
    written = []
    for axis, fixed in (("layers", "megapixels"), ("megapixels", "layers")):
        # the fixed value: the largest one at which most methods have results
        values = sorted({r[fixed] for r in ok})
        at = max(values, key=lambda v: (len({r["method"] for r in ok if r[fixed] == v}), v))
        fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
        for (method, th, dev), sel in _groups([r for r in ok if r[fixed] == at]).items():
            sel.sort(key=lambda r: r[axis])
            how = ([f"{th} threads"] if th != "auto" else []) + ([dev] if dev != "cpu" else [])
            label = f"{method} ({', '.join(how)})" if how else method
            xs = [r[axis] for r in sel]
            (line,) = axes[0].plot(xs, [r["wall_s"] for r in sel], "o-", label=label)
            axes[0].plot(xs, [r["cpu_s"] for r in sel], "x--", color=line.get_color(), alpha=0.6)
            axes[1].plot(xs, [r["peak_rss_mb"] for r in sel], "o-", color=line.get_color(), label=label)
            gpu = [(x, r["gpu_peak_mb"]) for x, r in zip(xs, sel, strict=True) if "gpu_peak_mb" in r]
            if gpu:
                axes[1].plot(*zip(*gpu, strict=True), "s:", color=line.get_color(), label=f"{label}: GPU memory")
        unit = "MP" if fixed == "megapixels" else "layers"
        plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
        # minor ticks: label 2, 3, 5 and 7 (x 10^k) only, or a decade of labels collides; x: the grid's values
        some = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "2357" else "")
        whats = ("whole command: wall (o-) and CPU (x--) seconds", "peak resident memory (MB; GPU: s:)")
        for ax, what in zip(axes, whats, strict=True):
            ax.set_xlabel("layers N" if axis == "layers" else "megapixels per layer")
            ax.set_ylabel(what)
            ax.set_xscale("log")
            ax.set_yscale("log")
            for a in (ax.xaxis, ax.yaxis):
                a.set_major_formatter(plain)
                a.set_minor_formatter(some)
            ax.grid(True, which="both", alpha=0.3)
            ax.set_xticks(sorted({r[axis] for r in ok}))
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        axes[0].set_title(f"time vs {'N' if axis == 'layers' else 'MP'} at {at:g} {unit}")
        axes[1].set_title(f"memory vs {'N' if axis == 'layers' else 'MP'} at {at:g} {unit}")
        axes[1].legend(fontsize=8)
        path = out_dir / f"grid_vs_{'n' if axis == 'layers' else 'mp'}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def _groups(rows: list[dict]) -> dict[tuple[str, str, str], list[dict]]:
    g: dict[tuple[str, str, str], list[dict]] = {}
    for r in rows:
        g.setdefault((r["method"], r["threads"], r.get("device", "cpu")), []).append(r)
    return g


# ------------------------------------------------------------------------------------------------ main
def _write_json(path: Path, obj) -> None:
    with atomic_write(path, mode="w", overwrite=True) as f:
        f.write(json.dumps(obj, indent=2) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m pipelines.benchmarks.grid",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--params", help="read methods/layers/megapixels/repeats/max_seconds from this file's `bench:`")
    p.add_argument("--methods", nargs="+", help="default: every registered method + installed external tools")
    p.add_argument("--layers", type=int, nargs="+", default=[3, 8], help="N values")
    p.add_argument("--megapixels", type=float, nargs="+", default=[0.25, 1.0], help="megapixels per layer")
    p.add_argument("--repeats", type=int, default=1, help="runs per cell (median)")
    p.add_argument("--max-seconds", type=float, default=120.0, help="skip a method's larger cells after this")
    p.add_argument(
        "--run-timeout",
        type=float,
        default=DEFAULT_RUN_TIMEOUT,
        help="kill one run after this many seconds (reported as an error row)",
    )
    p.add_argument("--threads", nargs="+", default=["auto"], help="--threads values of `stackmff fuse` to compare")
    p.add_argument("--beside", choices=("none", "spin", "same"), default="none", help="competing process")
    p.add_argument(
        "--devices",
        nargs="+",
        default=["auto"],
        help="devices of the learned methods: auto (cpu + cuda if present), cpu, cuda",
    )
    p.add_argument("--workdir", help="where the stacks are written (default: the system temp folder)")
    p.add_argument("--out", required=True, help="folder for grid.json and the plots")
    a = p.parse_args(argv)
    if a.run_timeout <= 0:
        p.error(f"--run-timeout must be > 0 seconds, got {a.run_timeout:g}")
    if a.params:
        from pipelines.config import load_params

        b = load_params(a.params, "bench")
        a.methods, a.layers, a.megapixels = b.methods or None, b.layers, b.megapixels
        a.repeats, a.max_seconds = b.repeats, b.max_seconds
        a.devices = b.devices
    gpu = gpu_info()
    try:
        device_list = devices(a.devices, gpu)
    except ValueError as exc:
        p.error(str(exc))
    methods = available_methods(a.methods)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    log(
        f"grid: {methods} x N {a.layers} x MP {a.megapixels} (learned: {', '.join(device_list)}), {a.repeats} "
        f"repeat(s), load {load()}"
    )
    res = run_grid(
        methods,
        a.layers,
        a.megapixels,
        repeats=a.repeats,
        max_seconds=a.max_seconds,
        run_timeout=a.run_timeout,
        threads=a.threads,
        beside=a.beside,
        workdir=a.workdir,
        device_list=device_list,
        log=log,
    )
    if a.beside != "none":
        res["ratios"] = ratios(res["rows"])
        for r in res["ratios"]:
            log(f"ratio beside {r['beside']}: {r}")
    res["versus"] = versus(res["rows"], classical_methods(), v3_device="cuda" if "cuda" in device_list else "cpu")
    for v in res["versus"]:
        log(f"peers over ours (same run): {v}")
    out = Path(a.out)
    _write_json(out / "grid.json", res)
    for path in plot(res["rows"], out):
        log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
