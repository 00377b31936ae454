"""Torch datasets of focal stacks for training, and a batch sampler that groups stacks of equal N.

Every draw is a fresh "general" sample: layers reshuffled and (with ``invalid_prob``) invalid layers injected. A
sample is a dict:

- ``layers``: ``(N, 3, H, W)`` float32 in [0, 1];
- ``index``: ``(H, W)`` int64, the GT focus index (never an invalid layer);
- ``aif``: ``(3, H, W)`` float32 all-in-focus image;
- ``valid``: ``(N,)`` bool, which layers are valid (may be a target).

Reproducibility: sample ``i`` of epoch ``e`` is seeded by ``(seed, e, i)``; its layer count N depends only on
``(seed, i)`` so that :class:`EqualNBatchSampler` can group indices before the draw. The epoch is taken from
:meth:`set_epoch` or, robust with persistent DataLoader workers, from the index itself: index ``e * len(ds) + i``
means sample ``i`` of epoch ``e`` (what :class:`EqualNBatchSampler` yields after its own ``set_epoch``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from .._checks import check_choice
from ..errors import StackMFFError
from ..io import from_uint, natural_key, read_image_file
from .augment import INVALID_KINDS, inject_invalid_layers, jpeg_layers, shuffle_layers
from .procedural import make_scene
from .synthesis import SynthStack, synthesize_physical, synthesize_upstream

__all__ = ["EqualNBatchSampler", "FolderStacks", "ProceduralStacks", "collate_stacks", "find_upstream_scenes"]

log = logging.getLogger("stackmff")

_LAYER_EXT = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")


def _to_sample(stack: SynthStack) -> dict[str, torch.Tensor]:
    return {
        "layers": torch.from_numpy(np.ascontiguousarray(stack.layers, dtype=np.float32)),
        "index": torch.from_numpy(np.ascontiguousarray(stack.index, dtype=np.int64)),
        "aif": torch.from_numpy(np.ascontiguousarray(stack.aif, dtype=np.float32)),
        "valid": torch.from_numpy(stack.valid),
    }


def _n_invalid(rng: np.random.Generator, n_total: int, invalid_prob: float, max_invalid: int) -> int:
    room = min(max_invalid, n_total - 2)
    if room <= 0 or rng.random() >= invalid_prob:
        return 0
    return int(rng.integers(1, room + 1))


def _check_size(size: tuple[int, int] | int) -> tuple[int, int]:
    if isinstance(size, int):
        size = (size, size)
    if len(size) != 2 or min(size) < 8:
        raise StackMFFError(f"size must be (H, W) with both >= 8, got {size}.")
    return int(size[0]), int(size[1])


class _EpochMixin:
    length: int
    epoch: int = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch for plain integer indices (like ``DistributedSampler.set_epoch``)."""
        self.epoch = int(epoch)

    def _split(self, idx: int) -> tuple[int, int]:
        idx = int(idx)
        if idx < 0:
            raise IndexError(idx)
        if idx >= self.length:  # an epoch-encoded index (see module docstring)
            return idx // self.length, idx % self.length
        return self.epoch, idx

    def __len__(self) -> int:
        return self.length


class ProceduralStacks(_EpochMixin, Dataset):
    """Unlimited training stacks from procedural RGB-D scenes (no files needed).

    Args:
        length: samples per epoch.
        size: ``(H, W)`` of the stacks.
        n_range: inclusive range of the total layer count N (valid + invalid).
        mode: ``"physical"`` (thin lens, occlusion-aware, noise) or ``"upstream"`` (StackMFF-V3 Gaussian recipe).
        invalid_prob: probability that a sample gets invalid layers (1..``max_invalid``; at least 2 valid remain).
        max_invalid: most invalid layers per sample.
        invalid_kinds: kinds to draw (see :func:`inject_invalid_layers`).
        shuffle: reshuffle the layer order on every draw (False keeps focus order, far to near, for V3-star).
        seed: base seed.
        max_coc: range of the CoC radius at disparity difference 1, drawn per sample (physical mode); scaled with
            ``min(H, W) / 256`` so that small training crops see blur in proportion to the field of view.
        noise: upper bounds of the Poisson gain and read-noise std, drawn per sample (physical mode).
        exposure_jitter: per-layer exposure jitter of valid layers (physical mode).
        scene_opts: extra keyword options for :func:`~stackmff.data.procedural.make_scene`.
        photos: a photo bank (folder, see :func:`~stackmff.data.photos.collect_photos`, or the loaded images):
            a share ``photo_prob`` of the scenes are dead-leaves composites of photographs
            (:func:`~stackmff.data.photos.make_photo_scene`) instead of procedural scenes.
        photo_prob: share of photo scenes (used only with ``photos``).
        breathing: focus breathing, drawn per sample in ``U(-breathing, breathing)`` (physical mode).
        jpeg_prob: chance that a sample's layers are JPEG round-tripped (quality in ``jpeg_quality``).
        jpeg_quality: inclusive JPEG quality range.

    Examples:
        >>> ds = ProceduralStacks(4, size=(32, 32), n_range=(3, 5), seed=0)
        >>> s = ds[0]
        >>> s["layers"].shape[1:], s["index"].shape, s["aif"].shape
        (torch.Size([3, 32, 32]), torch.Size([32, 32]), torch.Size([3, 32, 32]))
    """

    def __init__(
        self,
        length: int,
        *,
        size: tuple[int, int] | int = (128, 128),
        n_range: tuple[int, int] = (2, 16),
        mode: str = "physical",
        invalid_prob: float = 0.3,
        max_invalid: int = 2,
        invalid_kinds: Sequence[str] = INVALID_KINDS,
        shuffle: bool = True,
        seed: int = 0,
        max_coc: tuple[float, float] = (4.0, 16.0),
        noise: tuple[float, float] = (3e-4, 5e-3),
        exposure_jitter: float = 0.02,
        scene_opts: dict | None = None,
        photos: str | os.PathLike | Sequence[np.ndarray] | None = None,
        photo_prob: float = 0.5,
        breathing: float = 0.0,
        jpeg_prob: float = 0.0,
        jpeg_quality: tuple[int, int] = (60, 98),
    ) -> None:
        check_choice(mode, ("physical", "upstream"), "mode")
        if length < 1:
            raise StackMFFError(f"length must be >= 1, got {length}.")
        if n_range[0] < 2 or n_range[1] < n_range[0]:
            raise StackMFFError(f"n_range must be (lo, hi) with 2 <= lo <= hi, got {n_range}.")
        self.length = int(length)
        self.size = _check_size(size)
        self.n_range = (int(n_range[0]), int(n_range[1]))
        self.mode = mode
        self.invalid_prob = float(invalid_prob)
        self.max_invalid = int(max_invalid)
        self.invalid_kinds = tuple(invalid_kinds)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.max_coc = max_coc
        self.noise = noise
        self.exposure_jitter = float(exposure_jitter)
        self.scene_opts = dict(scene_opts or {})
        if isinstance(photos, (str, os.PathLike)):
            from .photos import load_photo_bank

            photos = load_photo_bank(photos)
        self.photos = tuple(photos) if photos is not None else ()
        self.photo_prob = float(photo_prob) if self.photos else 0.0
        self.breathing = float(breathing)
        self.jpeg_prob = float(jpeg_prob)
        self.jpeg_quality = (int(jpeg_quality[0]), int(jpeg_quality[1]))
        self.epoch = 0

    def _counts(self, i: int) -> tuple[int, int]:
        rng = np.random.default_rng([self.seed, 0x5EED, i])
        n = int(rng.integers(self.n_range[0], self.n_range[1] + 1))
        return n, _n_invalid(rng, n, self.invalid_prob, self.max_invalid)

    def n_layers(self, index: int) -> int:
        """Total layer count N of sample ``index`` (the same in every epoch)."""
        return self._counts(int(index) % self.length)[0]

    def draw(self, index: int) -> SynthStack:
        """The :class:`SynthStack` behind ``self[index]`` (with focus, kinds and disparity)."""
        epoch, i = self._split(index)
        n, n_inv = self._counts(i)
        rng = np.random.default_rng([self.seed, epoch, i])
        h, w = self.size
        # the extra draws use their own stream, so that without them every sample is what it always was
        extra = np.random.default_rng([self.seed, 0xA11, epoch, i])
        if self.photo_prob > 0 and extra.random() < self.photo_prob:
            from .photos import make_photo_scene

            scene = make_photo_scene(rng, h, w, self.photos)
        else:
            scene = make_scene(rng, h, w, **self.scene_opts)
        if self.mode == "physical":
            scale = min(h, w) / 256.0
            stack = synthesize_physical(
                scene.image,
                scene.disparity,
                n - n_inv,
                rng=rng,
                max_coc=float(rng.uniform(*self.max_coc)) * scale,
                noise=(float(rng.uniform(0, self.noise[0])), float(rng.uniform(0, self.noise[1]))),
                exposure_jitter=self.exposure_jitter,
                breathing=float(extra.uniform(-self.breathing, self.breathing)) if self.breathing else 0.0,
            )
        else:
            depth = np.rint(scene.disparity * 255.0).astype(np.uint8)
            stack = synthesize_upstream(scene.image, depth, n - n_inv, rng=rng)
        if self.shuffle:
            stack = shuffle_layers(stack, rng)
        if n_inv:
            stack = inject_invalid_layers(stack, rng, kinds=self.invalid_kinds, count=n_inv)
        if self.jpeg_prob > 0 and extra.random() < self.jpeg_prob:
            stack = jpeg_layers(stack, extra, quality=self.jpeg_quality)
        return stack

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return _to_sample(self.draw(index))


def find_upstream_scenes(
    root: str | os.PathLike, *, datasets: Sequence[str] | None = None, split: str = "TR"
) -> list[tuple[Path, list[Path], Path, Path | None]]:
    """List the scenes of an upstream-layout dataset tree.

    Layout: ``<root>/<DATASET>/<split>/focus_stack/<name>/<i>.jpg``, ``focus_index_gt/<name>.npy``, ``AiF/<name>.*``.

    Returns:
        ``(scene_dir, layer_files, gt_npy, aif_file_or_None)`` per scene with a GT map, sorted by dataset and name.
    """
    root = Path(root)
    if not root.is_dir():
        raise StackMFFError(f"dataset root not found: {root}; synthesise one with `stackmff synthesize`")
    names = sorted(datasets) if datasets else sorted(p.name for p in root.iterdir() if p.is_dir())
    out = []
    for ds in names:
        base = root / ds / split
        stacks = base / "focus_stack"
        if not stacks.is_dir():
            if datasets:
                raise StackMFFError(f"{stacks} not found; expected <root>/<DATASET>/{split}/focus_stack/<scene>/")
            continue
        for scene in sorted((p for p in stacks.iterdir() if p.is_dir()), key=natural_key):
            gt = base / "focus_index_gt" / f"{scene.name}.npy"
            if not gt.exists():
                log.warning("%s: no focus_index_gt/%s.npy; scene skipped", ds, scene.name)
                continue
            layers = sorted((p for p in scene.iterdir() if p.suffix.lower() in _LAYER_EXT), key=natural_key)
            aif = (
                next((p for p in sorted((base / "AiF").glob(f"{scene.name}.*"))), None)
                if (base / "AiF").is_dir()
                else None
            )
            if len(layers) >= 2:
                out.append((scene, layers, gt, aif))
    return out


def _read_rgb(path: Path) -> np.ndarray:
    """The stored pixels ``(H, W, 3)``, RGB (uint8/uint16 as decoded by :func:`stackmff.io.read_image_file`; a grey
    image broadcast to three channels). Converted to float after the crop: a whole float image costs time."""
    arr = read_image_file(path)[0][0]
    return arr if arr.ndim == 3 else np.broadcast_to(arr[..., None], (*arr.shape, 3))


class FolderStacks(_EpochMixin, Dataset):
    """Training stacks read from an upstream-layout dataset tree, augmented on every draw.

    Each draw takes a random crop (no resizing: the defocus scale is kept), random horizontal/vertical flips,
    reshuffles the layer order and injects invalid layers. Images smaller than ``size`` are mirror-padded.

    Args:
        root: dataset root holding ``<DATASET>/<split>/focus_stack/...``.
        datasets: dataset names to use (default: every sub-folder that has the layout).
        split: ``"TR"`` or ``"TE"``.
        size: crop ``(H, W)``; None keeps full images (then batch size 1 unless all images share a size).
        flips: random h/v flips.
        shuffle: reshuffle layers on each draw.
        invalid_prob, max_invalid, invalid_kinds: invalid-layer injection as in :class:`ProceduralStacks`.
        seed: base seed.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        datasets: Sequence[str] | None = None,
        split: str = "TR",
        size: tuple[int, int] | int | None = (256, 256),
        flips: bool = True,
        shuffle: bool = True,
        invalid_prob: float = 0.3,
        max_invalid: int = 2,
        invalid_kinds: Sequence[str] = INVALID_KINDS,
        seed: int = 0,
    ) -> None:
        self.scenes = find_upstream_scenes(root, datasets=datasets, split=split)
        if not self.scenes:
            raise StackMFFError(
                f"no stacks found under {root} (split {split}); expected <DATASET>/{split}/focus_stack/<scene>/<i>.jpg "
                "and focus_index_gt/<scene>.npy"
            )
        self.length = len(self.scenes)
        self.size = None if size is None else _check_size(size)
        self.flips = bool(flips)
        self.shuffle = bool(shuffle)
        self.invalid_prob = float(invalid_prob)
        self.max_invalid = int(max_invalid)
        self.invalid_kinds = tuple(invalid_kinds)
        self.seed = int(seed)
        self.epoch = 0

    def _n_inv(self, i: int) -> int:
        rng = np.random.default_rng([self.seed, 0x5EED, i])
        return _n_invalid(rng, len(self.scenes[i][1]) + 2, self.invalid_prob, self.max_invalid)

    def n_layers(self, index: int) -> int:
        """Total layer count N of sample ``index`` (stored layers + injected invalid ones; same in every epoch)."""
        i = int(index) % self.length
        return len(self.scenes[i][1]) + self._n_inv(i)

    def draw(self, index: int) -> SynthStack:
        epoch, i = self._split(index)
        scene, files, gt_path, aif_path = self.scenes[i]
        rng = np.random.default_rng([self.seed, epoch, i])
        index_map = np.load(gt_path).astype(np.int64)
        if index_map.ndim != 2 or index_map.min() < 0 or index_map.max() >= len(files):
            raise StackMFFError(
                f"{gt_path}: GT must be an (H, W) map of layer indices 0..{len(files) - 1}; re-create it"
            )
        h, w = index_map.shape
        if self.size is None:
            y0, x0, ch, cw = 0, 0, h, w
        else:
            ch, cw = min(self.size[0], h), min(self.size[1], w)
            y0, x0 = int(rng.integers(h - ch + 1)), int(rng.integers(w - cw + 1))

        def crop(a: np.ndarray) -> np.ndarray:
            if a.shape[:2] != (h, w):
                raise StackMFFError(f"{scene}: image size {a.shape[:2]} differs from the GT map {(h, w)}")
            return a[y0 : y0 + ch, x0 : x0 + cw]

        def load(path: Path) -> np.ndarray:
            return from_uint(crop(_read_rgb(path)))[0]

        layers = np.stack([load(p) for p in files])  # (N, h, w, 3) float32 in [0, 1]
        aif = load(aif_path) if aif_path is not None else None
        idx = crop(index_map)
        if aif is None:  # no AiF file: gather it from the GT map
            aif = np.take_along_axis(layers, idx[None, ..., None], 0)[0]
        if self.size is not None and (ch, cw) != self.size:
            ph, pw = self.size[0] - ch, self.size[1] - cw
            pad = ((0, ph), (0, pw))
            layers = np.pad(layers, ((0, 0), *pad, (0, 0)), mode="reflect")
            aif = np.pad(aif, (*pad, (0, 0)), mode="reflect")
            idx = np.pad(idx, pad, mode="reflect")
        if self.flips:
            if rng.random() < 0.5:
                layers, aif, idx = layers[:, :, ::-1], aif[:, ::-1], idx[:, ::-1]
            if rng.random() < 0.5:
                layers, aif, idx = layers[:, ::-1], aif[::-1], idx[::-1]
        stack = SynthStack(
            layers=np.ascontiguousarray(layers.transpose(0, 3, 1, 2)),
            index=np.ascontiguousarray(idx),
            aif=np.ascontiguousarray(aif.transpose(2, 0, 1)),
            focus=np.arange(len(files), dtype=np.float32),
        )
        if self.shuffle:
            stack = shuffle_layers(stack, rng)
        n_inv = self._n_inv(i)
        if n_inv:
            stack = inject_invalid_layers(stack, rng, kinds=self.invalid_kinds, count=n_inv)
        return stack

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return _to_sample(self.draw(index))


class EqualNBatchSampler(Sampler[list[int]]):
    """Batches whose samples all have the same layer count N (so they stack into ``(B, N, 3, H, W)``).

    Indices are grouped by ``dataset.n_layers(i)``; each epoch shuffles within groups, cuts them into batches and
    shuffles the batch order. The indices yielded are epoch-encoded (``epoch * len(dataset) + i``), so datasets of
    this module draw new content every epoch even inside persistent DataLoader workers.

    Args:
        dataset: a dataset with ``n_layers(i)`` and ``len``.
        batch_size: samples per batch.
        shuffle: shuffle (else batches follow index order within each N).
        drop_last: drop incomplete batches of each group.
        seed: base seed of the batch order.
    """

    def __init__(self, dataset, batch_size: int, *, shuffle: bool = True, drop_last: bool = False, seed: int = 0):
        if batch_size < 1:
            raise StackMFFError(f"batch_size must be >= 1, got {batch_size}.")
        self.length = len(dataset)
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.seed = int(seed)
        self.epoch = 0
        groups: dict[int, list[int]] = {}
        for i in range(self.length):
            groups.setdefault(int(dataset.n_layers(i)), []).append(i)
        self.groups = {n: np.asarray(v, np.int64) for n, v in sorted(groups.items())}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _batches(self) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, self.epoch])
        batches = []
        for ids in self.groups.values():
            ids = rng.permutation(ids) if self.shuffle else ids
            for s in range(0, len(ids), self.batch_size):
                b = ids[s : s + self.batch_size]
                if len(b) == self.batch_size or not self.drop_last:
                    batches.append(b)
        if self.shuffle:
            batches = [batches[j] for j in rng.permutation(len(batches))]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        offset = self.epoch * self.length
        for b in self._batches():
            yield [int(i) + offset for i in b]

    def __len__(self) -> int:
        return len(self._batches())


def collate_stacks(samples: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack samples of equal N into a batch: ``layers`` ``(B, N, 3, H, W)``, ``index`` ``(B, H, W)``, ``aif``
    ``(B, 3, H, W)``, ``valid`` ``(B, N)``.

    Raises:
        StackMFFError: the samples have different N or sizes (use :class:`EqualNBatchSampler`).
    """
    shapes = {tuple(s["layers"].shape) for s in samples}
    if len(shapes) != 1:
        raise StackMFFError(f"samples in a batch must share (N, C, H, W), got {sorted(shapes)}; use EqualNBatchSampler")
    return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}
