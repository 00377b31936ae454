"""Peers: fusion tools outside this package that the benchmark compares against.

Two kinds of peer live in a registry of their own, separate from :mod:`stackmff.fusion.registry`:

- **external tools** (enfuse, focus-stack, the author's OpenFocus app) run as commands through a small adapter
  (:class:`ExternalTool`): a command template, how the layers are passed, where the fused image appears. A tool is
  used when its executables are on ``PATH`` and reported as ``"absent"`` otherwise;
- **imported results** (:class:`ImportedResults`): fused images produced elsewhere, e.g. by the commercial Helicon
  Focus or Zerene Stacker, read from ``<results>/<method>/<dataset>/<scene>.<ext>`` (the layout of the authors'
  downloadable benchmark results) and evaluated exactly like ours.

Why a separate registry: the fusion registry is iterated by the tests and the CLI, and its methods take an in-memory
``(N, C, H, W)`` stack. External tools take files, may be absent, and cannot be asked to fuse arrays cheaply, so
they would make every registry-driven test depend on the machine's installed software.

Adapter template tokens (each a whole argument): ``{inputs}`` expands to one argument per layer file,
``{input_dir}`` a folder holding only the layers (``000.<ext>``, ``001.<ext>`` ...), ``{output}`` the file the
tool must write, ``{workdir}`` a private scratch folder, ``{aligned}`` the files the ``align`` steps wrote
(matched by ``aligned_glob``). Tokens may also appear inside an argument, e.g. ``--output={output}``.

Examples:
    >>> sorted(p.name for p in list_peers())
    ['enfuse', 'focus_stack', 'openfocus']
    >>> get_peer("enfuse").executables
    ('enfuse', 'align_image_stack')
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from .errors import StackMFFError
from .io import IMAGE_EXTENSIONS, load_image, natural_key, save_image

__all__ = [
    "ExternalTool",
    "ImportedResults",
    "PeerRun",
    "get_peer",
    "list_peers",
    "register_peer",
    "tool_from_config",
]


@dataclass(frozen=True)
class PeerRun:
    """What one external fusion run produced.

    Attributes:
        image: fused image ``(C, H, W)`` float32 in [0, 1] (an alpha channel written by the tool is dropped).
        seconds: wall time of all steps, including copying the layers in and reading the output.
        peak_mb: largest resident memory of any child process, in MiB (``nan`` where the OS cannot tell).
        bit_depth: bit depth of the tool's output file.
        tool_seconds: wall time of the tool's commands only (what a user of the tool waits for).
        cpu_seconds: user + system CPU seconds of the tool's commands (``nan`` where the OS cannot tell).
    """

    image: np.ndarray
    seconds: float
    peak_mb: float
    bit_depth: int = 8
    tool_seconds: float = float("nan")
    cpu_seconds: float = float("nan")


@dataclass(frozen=True)
class ExternalTool:
    """Adapter for a command-line fusion tool.

    Attributes:
        name: method name used in reports (``focus_stack``).
        description: one line for listings.
        command: argument template of the fusion step (see the module docstring for tokens).
        align: argument templates run before ``command`` when the benchmark asks for alignment (empty: the tool
            aligns by itself or cannot).
        aligned_glob: pattern, relative to ``{workdir}``, of the aligned layers the ``align`` steps write.
        output_name: file name of ``{output}`` inside ``{workdir}``; its extension picks the format the tool writes.
        version: arguments printing the version (empty: none).
        timeout_s: seconds after which one run is killed.
    """

    name: str
    description: str
    command: tuple[str, ...]
    align: tuple[tuple[str, ...], ...] = ()
    aligned_glob: str = "aligned_*.tif"
    output_name: str = "fused.png"
    version: tuple[str, ...] = ()
    timeout_s: float = 1800.0
    homepage: str = ""

    @property
    def executables(self) -> tuple[str, ...]:
        """Programs that must be on ``PATH`` (first word of every step)."""
        steps = [self.command, *self.align]
        return tuple(dict.fromkeys(s[0] for s in steps if s))

    def missing(self) -> list[str]:
        """Executables not found on ``PATH``."""
        return [exe for exe in self.executables if shutil.which(exe) is None]

    def available(self) -> bool:
        """True when every executable is installed."""
        return not self.missing()

    def version_string(self) -> str:
        """The tool's version line, ``"absent"`` when not installed, ``"unknown"`` when it does not say."""
        if not self.available():
            return "absent"
        if not self.version:
            return "unknown"
        try:
            out = subprocess.run(list(self.version), capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return "unknown"
        text = (out.stdout.strip() or out.stderr.strip()).splitlines()
        return text[0].strip() if text else "unknown"

    def fuse_files(self, inputs: Sequence[str | os.PathLike], *, align: bool = False) -> PeerRun:
        """Fuse the layer files ``inputs`` (in focus order as given) and return the fused image.

        Args:
            inputs: two or more image files of equal size.
            align: run the ``align`` steps first (ignored when the tool has none).

        Returns:
            :class:`PeerRun` with the image ``(C, H, W)`` float32 in [0, 1], wall time and peak memory.

        Raises:
            StackMFFError: the tool is not installed, fails, times out or writes no output.
        """
        files = [Path(p) for p in inputs]
        if len(files) < 2:
            raise StackMFFError(f"{self.name} needs at least 2 layer files, got {len(files)}; pass the whole stack")
        missing = self.missing()
        if missing:
            raise StackMFFError(
                f"{self.name} is not installed ({', '.join(missing)} not on PATH); install it or drop it"
            )
        t0 = time.perf_counter()
        peak_kb, tool_s, cpu_s = 0.0, 0.0, 0.0
        with tempfile.TemporaryDirectory(prefix=f"stackmff-{self.name}-") as tmp:
            workdir = Path(tmp)
            input_dir = workdir / "layers"
            input_dir.mkdir()
            for i, f in enumerate(files):
                # copies, not links: some tools refuse symlinks or resolve them to the original name
                shutil.copyfile(f, input_dir / f"{i:03d}{f.suffix.lower()}")
            layer_files = sorted(input_dir.iterdir(), key=natural_key)
            output = workdir / self.output_name
            tokens = {"{workdir}": str(workdir), "{input_dir}": str(input_dir), "{output}": str(output)}
            aligned: list[str] = []
            if align and self.align:
                for step in self.align:
                    kb, wall, cpu = self._run(_expand(step, tokens, layer_files, []), workdir)
                    peak_kb, tool_s, cpu_s = max(peak_kb, kb), tool_s + wall, cpu_s + cpu
                aligned = sorted(glob.glob(str(workdir / self.aligned_glob)), key=natural_key)
                if len(aligned) < 2:
                    raise StackMFFError(f"{self.name}: alignment wrote no layers matching {self.aligned_glob}")
            kb, wall, cpu = self._run(_expand(self.command, tokens, layer_files, aligned), workdir)
            peak_kb, tool_s, cpu_s = max(peak_kb, kb), tool_s + wall, cpu_s + cpu
            if not output.is_file():
                raise StackMFFError(f"{self.name} finished but wrote no {output.name}; check the adapter's command")
            image, bits = load_image(output)  # an alpha channel (enfuse writes one) is dropped
        seconds = time.perf_counter() - t0
        return PeerRun(
            image=image,
            seconds=seconds,
            peak_mb=peak_kb / 1024.0 if peak_kb else float("nan"),
            bit_depth=bits,
            tool_seconds=tool_s,
            cpu_seconds=cpu_s if peak_kb else float("nan"),  # no rusage (no os.wait4): no CPU time either
        )

    def fuse_layers(self, layers: np.ndarray, *, options: Sequence[str] = (), bit_depth: int = 8) -> PeerRun:
        """Fuse layers that are registered already, ``(N, C, H, W)`` in [0, 1]: written as PNGs of ``bit_depth``
        (8 or 16), the tool's alignment steps off, ``options`` put right after its program name (e.g. focus-stack's
        ``--align-keep-size`` to keep the layers' frame). See :meth:`fuse_files` for the result and errors."""
        tool = replace(self, align=(), command=(self.command[0], *options, *self.command[1:]))
        with tempfile.TemporaryDirectory(prefix=f"stackmff-{self.name}-layers-") as tmp:
            files = [Path(tmp) / f"{k:03d}.png" for k in range(len(layers))]
            for f, layer in zip(files, layers, strict=True):
                save_image(f, np.clip(layer, 0, 1), bit_depth=bit_depth)
            return tool.fuse_files(files)

    def _run(self, argv: list[str], cwd: Path) -> tuple[float, float, float]:
        """Run one step; return the child's peak resident memory in KiB (0 when unknown), wall and CPU seconds."""
        log_path = cwd / f".{Path(argv[0]).name}.log"
        with open(log_path, "w+b") as log:
            t0 = time.perf_counter()
            proc = subprocess.Popen(argv, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
            status, peak_kb, cpu = _wait(proc, self.timeout_s)
            wall = time.perf_counter() - t0
            log.seek(0)
            tail = log.read()[-400:].decode("utf-8", "replace").replace("\n", " ").strip()
        if status is None:
            raise StackMFFError(f"{self.name} timed out after {self.timeout_s:.0f} s; raise timeout_s in its adapter")
        if status != 0:
            raise StackMFFError(f"{self.name} failed (exit {status}): {tail or 'no output'}")
        return peak_kb, wall, cpu


def _wait(proc: subprocess.Popen, timeout_s: float) -> tuple[int | None, float, float]:
    """Wait for ``proc``; return (exit code or None on timeout, peak RSS in KiB, CPU seconds) from its rusage."""
    deadline = time.monotonic() + timeout_s
    if hasattr(os, "wait4"):
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                return proc.returncode, float(usage.ru_maxrss), usage.ru_utime + usage.ru_stime  # KiB on Linux
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                return None, 0.0, 0.0
            time.sleep(0.02)
    try:
        return proc.wait(timeout=timeout_s), 0.0, 0.0
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None, 0.0, 0.0


def _expand(template: Sequence[str], tokens: Mapping[str, str], inputs: list[Path], aligned: list[str]) -> list[str]:
    argv: list[str] = []
    for arg in template:
        if arg == "{inputs}":
            argv.extend(str(p) for p in inputs)
        elif arg == "{aligned}":
            argv.extend(aligned if aligned else [str(p) for p in inputs])
        else:
            for key, value in tokens.items():
                arg = arg.replace(key, value)
            argv.append(arg)
    return argv


# --------------------------------------------------------------------------------------------------------------
# Imported results (commercial software)
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportedResults:
    """Fused images produced elsewhere, laid out as ``<root>/<dataset>/<scene>.<ext>``.

    ``root`` is the folder of one method, i.e. ``<results>/<method>``.

    Examples:
        >>> ImportedResults(Path("/nonexistent")).available()
        False
    """

    root: Path
    extensions: tuple[str, ...] = field(default=tuple(sorted(IMAGE_EXTENSIONS)))

    def available(self) -> bool:
        """True when ``root`` holds at least one dataset folder."""
        return self.root.is_dir() and any(p.is_dir() for p in self.root.iterdir())

    def find(self, dataset: str, scene: str) -> Path | None:
        """The imported image of ``scene`` in ``dataset`` (any image extension, case-insensitive), or None."""
        folder = self.root / dataset
        if not folder.is_dir():
            return None
        for p in sorted(folder.iterdir(), key=natural_key):
            if p.is_file() and p.stem == scene and p.suffix.lower() in self.extensions:
                return p
        return None

    def copy_to(self, dataset: str, scene: str, output: str | os.PathLike, *, overwrite: bool = False) -> Path | None:
        """Re-encode the imported image as ``output`` (so that it is read exactly like our fused images).

        Returns the written path, or None when this scene has no imported result.
        """
        src = self.find(dataset, scene)
        if src is None:
            return None
        image, bits = load_image(src)
        return save_image(output, image, bit_depth=bits, overwrite=overwrite)


# --------------------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------------------

_PEERS: dict[str, ExternalTool] = {}


def register_peer(tool: ExternalTool, *, replace_existing: bool = False) -> ExternalTool:
    """Add ``tool`` to the peer registry. Registering a name twice raises ``ValueError`` unless ``replace_existing``."""
    if tool.name in _PEERS and not replace_existing:
        raise ValueError(f"peer {tool.name!r} is already registered")
    _PEERS[tool.name] = tool
    return tool


def list_peers() -> list[ExternalTool]:
    """All registered external tools, sorted by name (installed or not)."""
    return [_PEERS[k] for k in sorted(_PEERS)]


def get_peer(name: str) -> ExternalTool:
    """Look an external tool up by name.

    Raises:
        StackMFFError: unknown name (the message lists the known ones).
    """
    if name not in _PEERS:
        raise StackMFFError(f"unknown peer {name!r}; choose one of: {', '.join(sorted(_PEERS))}")
    return _PEERS[name]


def tool_from_config(name: str, config: Mapping[str, object], *, base: ExternalTool | None = None) -> ExternalTool:
    """Build an adapter from a plain mapping (e.g. a ``params.yaml`` section), over ``base`` when given.

    Args:
        name: method name.
        config: keys among ``description, command, align, aligned_glob, output_name, version, timeout_s, homepage``.
        base: adapter whose values fill the keys ``config`` leaves out (e.g. the built-in one of the same name).

    Raises:
        StackMFFError: unknown key, or no ``command`` when there is no ``base``.
    """
    known = {f.name for f in fields(ExternalTool)} - {"name"}
    unknown = set(config) - known
    if unknown:
        raise StackMFFError(
            f"unknown key(s) {', '.join(sorted(unknown))} in the adapter of {name}; use {', '.join(sorted(known))}"
        )
    values: dict[str, object] = {}
    for key, value in config.items():
        if key == "command" or key == "version":
            values[key] = tuple(str(v) for v in _as_list(value, f"{name}.{key}"))
        elif key == "align":
            values[key] = tuple(
                tuple(str(v) for v in _as_list(step, f"{name}.align")) for step in _as_list(value, name)
            )
        elif key == "timeout_s":
            values[key] = float(value)  # type: ignore[arg-type]
        else:
            values[key] = str(value)
    if base is not None:
        return replace(base, name=name, **values)  # type: ignore[arg-type]
    if "command" not in values:
        raise StackMFFError(f"the adapter of {name} needs a command, e.g. [mytool, -o, '{{output}}', '{{inputs}}']")
    return ExternalTool(name=name, description=str(values.pop("description", name)), **values)  # type: ignore[arg-type]


def _as_list(value: object, what: str) -> list:
    if isinstance(value, (list, tuple)):
        return list(value)
    raise StackMFFError(f"{what} must be a list of arguments, got {type(value).__name__}")


def _builtin() -> Iterable[ExternalTool]:
    yield ExternalTool(
        name="enfuse",
        description="enfuse contrast-weighted hard-mask fusion (+ align_image_stack -m when aligning)",
        command=(
            "enfuse",
            "--exposure-weight=0",
            "--saturation-weight=0",
            "--contrast-weight=1",
            "--hard-mask",
            "--output={output}",
            "{aligned}",
        ),
        align=(("align_image_stack", "-m", "-a", "{workdir}/aligned_", "--use-given-order", "{inputs}"),),
        aligned_glob="aligned_*.tif",
        # PNG, not TIFF: enfuse writes LZW-compressed TIFF, which tifffile cannot decode without imagecodecs
        output_name="fused.png",
        version=("enfuse", "--version"),
        homepage="https://enblend.sourceforge.net",
    )
    yield ExternalTool(
        name="focus_stack",
        description="focus-stack (Aimonen): complex-wavelet fusion with its own ECC alignment",
        command=("focus-stack", "--output={output}", "{inputs}"),
        output_name="fused.png",
        version=("focus-stack", "--version"),
        homepage="https://github.com/PetteriAimonen/focus-stack",
    )
    yield ExternalTool(
        name="openfocus",
        description="OpenFocus app by the StackMFF author, its 'stackmffv3' model (run as an external command)",
        command=("openfocus", "-i", "{input_dir}", "-o", "{output}", "-m", "stackmffv3"),
        output_name="fused.png",
        homepage="https://pypi.org/project/openfocus/",
    )


for _tool in _builtin():
    register_peer(_tool)
