"""Writing output files: image encoding, temp file in the same folder + rename, all files of a command together."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import tifffile

from ..errors import StackMFFError
from .decode import IMAGE_EXTENSIONS, to_uint

__all__ = [
    "TEMP_SUFFIX",
    "OutputSet",
    "atomic_folder",
    "atomic_write",
    "check_output_path",
    "check_writable_folder",
    "save_image",
    "sweep_stale_temps",
]

log = logging.getLogger("stackmff")


def save_image(
    path: str | os.PathLike,
    image: np.ndarray,
    *,
    bit_depth: int = 8,
    overwrite: bool = False,
    quality: int = 95,
    outputs: OutputSet | None = None,
) -> Path:
    """Write a ``(C, H, W)`` or ``(H, W)`` float image in [0, 1] atomically (temp file in the same folder + rename).

    PNG and TIFF keep 16-bit data; JPEG, BMP and WebP are 8-bit (16-bit requests are reduced with a warning).
    The image is encoded in memory and written with checked writes (a full disk raises, no truncated file is left).
    The parent folder is created. An existing file is refused unless ``overwrite``. With ``outputs`` the file is
    staged in that :class:`OutputSet` and appears only when the set is committed (with the command's other files).

    Raises:
        StackMFFError: unknown extension, the file exists and ``overwrite`` is false, or the encoder failed.
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in IMAGE_EXTENSIONS:
        raise StackMFFError(
            f"output {path} has unknown extension {ext or '(none)'}; use .png, .jpg, .tif, .bmp or .webp"
        )
    if path.exists() and not overwrite:
        raise StackMFFError(f"output {path} exists; pass --overwrite to replace it or choose another name")
    if ext in (".jpg", ".jpeg", ".bmp", ".webp") and bit_depth == 16:
        log.warning("%s cannot hold 16-bit data; writing 8-bit (use .png or .tif to keep 16 bits)", path.name)
        bit_depth = 8
    arr = np.asarray(image)
    if arr.ndim == 3:
        arr = arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0)
    if np.issubdtype(arr.dtype, np.floating):
        arr = to_uint(arr, bit_depth)
    data = _encode(arr, ext, quality, path)
    if outputs is not None:
        outputs.write_bytes(path, data)
        return path
    with OutputSet(overwrite=overwrite) as outs:
        outs.write_bytes(path, data)
    return path


def _encode(arr: np.ndarray, ext: str, quality: int, path: Path) -> bytes | memoryview:
    """The file bytes of an ``(H, W)`` / ``(H, W, 3)`` uint8/uint16 RGB array for extension ``ext``."""
    if ext in (".tif", ".tiff"):
        buf = io.BytesIO()
        tifffile.imwrite(buf, arr, photometric="rgb" if arr.ndim == 3 else "minisblack", compression="zlib")
        return buf.getbuffer()
    bgr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR) if arr.ndim == 3 else arr
    params: list[int] = []
    if ext in (".jpg", ".jpeg"):
        params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    elif ext == ".webp":
        params = [cv2.IMWRITE_WEBP_QUALITY, int(quality)]
    ok, buf = cv2.imencode(ext, bgr, params)
    if not ok or buf is None or buf.size == 0:
        raise StackMFFError(f"could not encode {path} as {ext}; choose .png or .tif")
    return memoryview(buf.reshape(-1))


# --------------------------------------------------------------------------------------------------------------
# Output files: temp file in the same folder, checked write, exclusive rename; all files of a command together
# --------------------------------------------------------------------------------------------------------------

TEMP_SUFFIX = ".stackmff-tmp"
_TEMP_RE = re.compile(r"^\..+\.(\d+)\.[^.]+" + re.escape(TEMP_SUFFIX) + r"$")
_LEGACY_TEMP_RE = re.compile(r"^\..+\.tmp(\d+)$")  # `.last.pt.tmp<PID>` of earlier versions


def _file_mode(base: int = 0o666) -> int:
    """``base`` less the process umask: what ``open()`` (``0o666``) or ``mkdir()`` (``0o777``) would give a new file
    or folder (``mkstemp`` gives 0600, ``mkdtemp`` 0700)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return base & ~mask


def _new_temp(final: Path, *, folder: bool = False) -> Path:
    """A new empty temp file (or folder) standing in for ``final``, next to it: ``.<name>.<pid>.<random>.stackmff-tmp``
    (the naming :func:`sweep_stale_temps` recognises), with the permissions of a plainly created one."""
    prefix = f".{final.name}.{os.getpid()}."
    if folder:
        tmp = tempfile.mkdtemp(prefix=prefix, suffix=TEMP_SUFFIX, dir=final.parent)
        os.chmod(tmp, _file_mode(0o777))
        return Path(tmp)
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=TEMP_SUFFIX, dir=final.parent)
    try:
        os.fchmod(fd, _file_mode())
    finally:
        os.close(fd)
    return Path(tmp)


def _publish(tmp: Path, final: Path, *, overwrite: bool, created: list[Path]) -> None:
    """Give the temp file ``tmp`` the name ``final``: replacing an existing file with ``overwrite``, else exclusively
    (a file that appeared meanwhile, e.g. from a concurrent run, is refused rather than replaced). ``final`` is
    appended to ``created`` as soon as this call made the name exist, so that a caller's failure path removes it."""
    if overwrite:
        if final.is_dir():
            raise StackMFFError(f"output {final} is a folder; give a file name")
        existed = final.exists()
        os.replace(tmp, final)
        if not existed:
            created.append(final)
        return
    try:
        os.link(tmp, final)  # fails if the name exists: exclusive creation
    except FileExistsError:
        raise StackMFFError(
            f"output {final} appeared while this run was working (another run?); "
            "pass --overwrite to replace it or choose another name"
        ) from None
    except OSError:  # a file system without hard links: claim the name, then rename onto it
        fd = os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        created.append(final)
        os.replace(tmp, final)
        return
    created.append(final)
    tmp.unlink()


def _remove(paths: Iterable[Path]) -> None:
    for f in paths:
        try:
            f.unlink(missing_ok=True)
        except OSError:
            pass


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike,
    *,
    mode: Literal["wb", "w"] | None = "wb",
    overwrite: bool = False,
    encoding: str = "utf-8",
) -> Iterator[Any]:
    """Write one file atomically: readers see the old file or the complete new one, never a part.

    The body writes a temp file in the same folder (named as :class:`OutputSet` names them, so
    :func:`sweep_stale_temps` removes it if the process is killed); on success it takes the final name (no fsync),
    exclusively unless ``overwrite``; on any exception it is removed and the final name is left as it was. The
    parent folder is created.

    Args:
        path: the final file.
        mode: ``"wb"`` yields a binary file object, ``"w"`` a text one (``encoding``), ``None`` the temp file's
            ``Path`` for writers that want a file name (``fig.savefig``, ``torch.save``).
        overwrite: replace an existing file; otherwise one that exists, or appears while the body runs, is refused.
        encoding: the text encoding with ``mode="w"``.

    Yields:
        An open file object, or with ``mode=None`` the temp file's path (an empty file, which the body replaces or
        fills).

    Raises:
        StackMFFError: ``path`` is a folder, or it exists (or appeared meanwhile) and ``overwrite`` is false.

    Examples:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> with atomic_write(folder / "a.txt", mode="w") as f:
        ...     _ = f.write("done")
        >>> (folder / "a.txt").read_text(), sorted(p.name for p in folder.iterdir())
        ('done', ['a.txt'])
    """
    final = Path(path)
    if mode not in ("wb", "w", None):
        raise StackMFFError(f"mode must be 'wb', 'w' or None, got {mode!r}")
    if final.is_dir():
        raise StackMFFError(f"output {final} is a folder; give a file name")
    if final.exists() and not overwrite:
        raise StackMFFError(f"output {final} exists; pass --overwrite to replace it or choose another name")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temp(final)
    created: list[Path] = []
    try:
        if mode is None:
            yield tmp
        else:
            with open(tmp, mode, encoding=None if "b" in mode else encoding) as f:
                yield f
        _publish(tmp, final, overwrite=overwrite, created=created)
    except BaseException:
        _remove([tmp, *created])
        raise


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Write a folder as a whole: the body fills a temp folder next to ``path``, which then takes its name.

    With ``overwrite`` an existing ``path`` is removed just before the rename (a folder cannot be swapped in one
    step: for that instant neither exists); otherwise one that exists, or appears while the body runs, is refused.
    On any exception the temp folder is removed and ``path`` is left as it was. The parent folder is created.

    Yields:
        The temp folder (new, empty, named like the temp files of :func:`atomic_write`).

    Raises:
        StackMFFError: ``path`` exists (or appeared meanwhile) and ``overwrite`` is false.
    """
    final = Path(path)
    if final.exists() and not overwrite:
        raise StackMFFError(f"output {final} exists; pass --overwrite to replace it or choose another name")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temp(final, folder=True)
    try:
        yield tmp
        if final.exists() or final.is_symlink():
            if not overwrite:
                raise StackMFFError(
                    f"output {final} appeared while this run was working (another run?); "
                    "pass --overwrite to replace it or choose another name"
                )
            if final.is_dir() and not final.is_symlink():
                shutil.rmtree(final)
            else:
                final.unlink()
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but is not ours
        return True
    return True


def sweep_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Remove temp files of our naming left in ``folder`` by a killed run (their process no longer exists), and the
    temp folders of :func:`atomic_folder`."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for e in entries:
        m = _TEMP_RE.match(e.name) or _LEGACY_TEMP_RE.match(e.name)
        if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            try:
                if e.is_dir(follow_symlinks=False) and _TEMP_RE.match(e.name):  # only the unmistakable new naming
                    shutil.rmtree(e.path)
                else:
                    os.unlink(e.path)
                removed.append(Path(e.path))
            except OSError:
                pass
    if removed:
        log.info("removed %d stale temp file(s) of an interrupted run in %s", len(removed), folder)
    return removed


def check_output_path(path: str | os.PathLike, *, overwrite: bool = False, inputs: Iterable[Path] = ()) -> Path:
    """Refuse, before any work, an output path that cannot be written: an existing folder, an existing file without
    ``overwrite``, one of the ``inputs``, a parent that is a file, or a folder we may not create files in.

    Raises:
        StackMFFError: one line naming the path and the fix.
    """
    path = Path(path)
    if path.is_dir():
        raise StackMFFError(f"output {path} is a folder; give a file name such as {path / 'fused.png'}")
    real = path.resolve()
    for p in inputs:
        if Path(p).resolve() == real:
            raise StackMFFError(f"output {path} is one of the inputs; choose another output name")
    if path.exists() and not overwrite:
        raise StackMFFError(f"output {path} exists; pass --overwrite to replace it or choose another name")
    check_writable_folder(path.parent, f"output {path}")
    return path


def check_writable_folder(folder: str | os.PathLike, what: str) -> None:
    """Refuse a ``folder`` (existing or to be created) that cannot take our files: its nearest existing ancestor
    must be a folder in which we can create a file (probed with a temp file, removed at once)."""
    probe = Path(folder) if str(folder) else Path(".")
    while not probe.exists():
        if probe.is_symlink() or probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise StackMFFError(f"cannot write {what}: {probe} is a file, not a folder; choose another path")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".probe.{os.getpid()}.", suffix=TEMP_SUFFIX, dir=probe)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise StackMFFError(
            f"cannot write {what}: {probe} does not accept new files ({why}); choose a folder you can write to"
        ) from None


class OutputSet:
    """The output files of one command, written all together or not at all.

    Each file is written to a temp file in its own folder (``.<name>.<pid>.<random>.stackmff-tmp``, created with the
    umask's permissions); :meth:`commit` then gives every file its final name, exclusively unless ``overwrite`` (a
    file that appeared meanwhile, e.g. from a concurrent run, is refused rather than replaced). Any failure, an
    exception or a signal (SIGINT, and SIGTERM through the CLI) removes the temp files and the files this set had
    already renamed. Stale temp files of killed runs are swept from the folders written to. (One file on its own,
    without the fsync and the sweep: :func:`atomic_write`.)

    Use as a context manager (commits on success)::

        with OutputSet(overwrite=False) as outs:
            outs.write_bytes(path_a, data)
            torch.save(obj, outs.temp(path_b))
    """

    def __init__(self, *, overwrite: bool = False) -> None:
        self.overwrite = overwrite
        self._staged: list[tuple[Path, Path]] = []
        self._swept: set[Path] = set()
        self._made_dirs: list[Path] = []

    def __enter__(self) -> OutputSet:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()

    def temp(self, final: str | os.PathLike) -> Path:
        """A new empty temp file standing in for ``final`` (refused now if ``final`` exists without overwrite)."""
        final = Path(final)
        if final.is_dir():
            raise StackMFFError(f"output {final} is a folder; give a file name")
        if final.exists() and not self.overwrite:
            raise StackMFFError(f"output {final} exists; pass --overwrite to replace it or choose another name")
        if any(f == final for _, f in self._staged):
            raise StackMFFError(f"two outputs of this command are both {final}; give them different names")
        parent = final.parent
        missing = [d for d in (parent, *parent.parents) if not d.exists()]
        parent.mkdir(parents=True, exist_ok=True)
        self._made_dirs.extend(missing)  # removed again (when empty) if the set is discarded
        if parent not in self._swept:
            self._swept.add(parent)
            sweep_stale_temps(parent)
        tmp = _new_temp(final)
        self._staged.append((tmp, final))
        return tmp

    def write_bytes(self, final: str | os.PathLike, data: bytes | memoryview) -> Path:
        """Write ``data`` for ``final``; write errors (disk full, quota) raise instead of leaving a short file."""
        tmp = self.temp(final)
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            self.discard()
            raise StackMFFError(
                f"could not write {final}: {exc.strerror or type(exc).__name__}; free disk space or choose another "
                "folder (nothing was written)"
            ) from None
        if tmp.stat().st_size != len(data):
            raise StackMFFError(f"writing {final} stopped short (disk full?); free disk space and rerun")
        return tmp

    def discard(self) -> None:
        """Remove every temp file not yet committed."""
        _remove(tmp for tmp, _ in self._staged)
        self._staged.clear()
        for d in sorted(set(self._made_dirs), key=lambda p: len(p.parts), reverse=True):  # deepest first: the
            # folders this set created, if nothing else was put there
            try:
                d.rmdir()
            except OSError:
                pass
        self._made_dirs.clear()

    def commit(self) -> list[Path]:
        """Give every staged file its final name; on any failure nothing of this set remains."""
        created: list[Path] = []
        try:
            for tmp, final in self._staged:
                _publish(tmp, final, overwrite=self.overwrite, created=created)
        except BaseException:
            _remove(created)
            self.discard()
            raise
        done = [final for _, final in self._staged]
        self._staged.clear()
        return done
