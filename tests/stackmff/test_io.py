"""Tests of stack I/O: formats, bit depths, ordering, EXIF orientation, bad input, atomic saving, dataset trees."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest
import tifffile
from _helpers import write_image
from PIL import Image

from stackmff.errors import StackMFFError
from stackmff.io import load_image, load_stack, natural_key, save_image


def _rgb(h=24, w=32, seed=0, dtype=np.uint8):
    rng = np.random.default_rng(seed)
    top = 255 if dtype == np.uint8 else 65535
    return rng.integers(0, top + 1, (h, w, 3), dtype=np.int64).astype(dtype)


def test_natural_order_of_file_names(tmp_path):
    for name in ("10.png", "2.png", "1.png", "b3.png", "B20.png"):
        write_image(tmp_path / name, _rgb())
    stack = load_stack(tmp_path)
    assert [p.name for p in stack.paths] == ["1.png", "2.png", "10.png", "b3.png", "B20.png"]
    assert sorted(["x10.png", "x9.png"], key=natural_key) == ["x9.png", "x10.png"]


def test_explicit_file_list_keeps_the_given_order(tmp_path):
    a, b = write_image(tmp_path / "a.png", _rgb(seed=1)), write_image(tmp_path / "b.png", _rgb(seed=2))
    stack = load_stack([b, a])
    assert stack.paths == [b, a]
    np.testing.assert_array_equal(stack.images[0].transpose(1, 2, 0), _rgb(seed=2) / np.float32(255))


@pytest.mark.parametrize("ext", [".png", ".bmp", ".tif", ".webp"])
def test_lossless_8bit_formats_round_trip_exactly(tmp_path, ext):
    arrays = [_rgb(seed=s) for s in range(2)]
    for i, arr in enumerate(arrays):
        if ext == ".webp":
            Image.fromarray(arr).save(tmp_path / f"{i}{ext}", lossless=True)
        elif ext == ".tif":
            tifffile.imwrite(tmp_path / f"{i}{ext}", arr, photometric="rgb")
        else:
            write_image(tmp_path / f"{i}{ext}", arr)
    stack = load_stack(tmp_path)
    assert stack.images.shape == (2, 3, 24, 32) and stack.images.dtype == np.float32 and stack.bit_depth == 8
    for layer, arr in zip(stack.images, arrays):
        np.testing.assert_array_equal(np.rint(layer.transpose(1, 2, 0) * 255).astype(np.uint8), arr)


def test_jpeg_reads_close_to_the_source(tmp_path):
    smooth = cv2.GaussianBlur(_rgb(64, 64), (0, 0), 3)
    for i in range(2):
        write_image(tmp_path / f"{i}.jpg", smooth)
    stack = load_stack(tmp_path)
    assert stack.images.shape == (2, 3, 64, 64)
    assert np.abs(stack.images[0].transpose(1, 2, 0) * 255 - smooth).mean() < 3


def test_16bit_tiff_and_png_keep_16_bits(tmp_path):
    a16, b16 = _rgb(seed=3, dtype=np.uint16), _rgb(seed=4, dtype=np.uint16)
    tifffile.imwrite(tmp_path / "0.tif", a16, photometric="rgb")
    write_image(tmp_path / "1.png", b16)
    stack = load_stack(tmp_path)
    assert stack.bit_depth == 16
    np.testing.assert_array_equal(np.rint(stack.images[0].transpose(1, 2, 0) * 65535).astype(np.uint16), a16)
    np.testing.assert_array_equal(np.rint(stack.images[1].transpose(1, 2, 0) * 65535).astype(np.uint16), b16)
    out = save_image(tmp_path / "out" / "fused.png", stack.images[0], bit_depth=16)
    back = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back[..., ::-1], a16)  # exact 16-bit round trip


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_lzw_tiff_written_by_opencv(tmp_path, dtype):
    # OpenCV (and many cameras) write LZW-compressed TIFFs, which tifffile alone cannot decode
    arrays = [_rgb(seed=s, dtype=dtype) for s in range(2)]
    for i, arr in enumerate(arrays):
        write_image(tmp_path / f"{i}.tif", arr)
    stack = load_stack(tmp_path)
    assert stack.bit_depth == (16 if dtype == np.uint16 else 8)
    top = 65535 if dtype == np.uint16 else 255
    np.testing.assert_array_equal(np.rint(stack.images[1].transpose(1, 2, 0) * top).astype(dtype), arrays[1])


def test_multipage_tiff_is_a_stack(tmp_path):
    pages = np.stack([_rgb(seed=s)[..., 0] for s in range(4)])  # (4, H, W) gray pages
    with tifffile.TiffWriter(tmp_path / "stack.tif") as tw:
        for page in pages:
            tw.write(page, photometric="minisblack")
    with tifffile.TiffFile(tmp_path / "stack.tif") as tf:
        assert len(tf.pages) == 4
    stack = load_stack(tmp_path / "stack.tif")
    assert stack.images.shape == (4, 1, 24, 32)
    assert len(stack.paths) == 4
    np.testing.assert_array_equal(np.rint(stack.images[2, 0] * 255).astype(np.uint8), pages[2])


def test_imagej_style_zstack_in_one_page(tmp_path):
    pages = np.stack([_rgb(seed=s, dtype=np.uint16)[..., 0] for s in range(3)])  # (Z, H, W)
    tifffile.imwrite(tmp_path / "z.tif", pages, photometric="minisblack", imagej=True)
    stack = load_stack(tmp_path / "z.tif")
    assert stack.images.shape == (3, 1, 24, 32) and stack.bit_depth == 16
    np.testing.assert_array_equal(np.rint(stack.images[1, 0] * 65535).astype(np.uint16), pages[1])


def test_exif_orientation_is_applied(tmp_path):
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = 255  # left half white
    for i in range(2):
        im = Image.fromarray(arr)
        exif = im.getexif()
        exif[0x0112] = 6  # "rotate 90 CW to display"
        im.save(tmp_path / f"{i}.jpg", exif=exif.tobytes(), quality=100)
    stack = load_stack(tmp_path)
    assert stack.images.shape == (2, 3, 40, 20)  # portrait after rotation
    # the white left half ends up on top after a clockwise rotation
    assert stack.images[0, :, :15].mean() > 0.9 and stack.images[0, :, 25:].mean() < 0.1


def test_gray_rgb_rgba_mix_works_and_alpha_is_reported(tmp_path, caplog):
    rgb = _rgb(seed=5)
    gray = rgb[..., 0].copy()
    write_image(tmp_path / "0.png", gray)
    write_image(tmp_path / "1.png", rgb)
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)]), "RGBA").save(tmp_path / "2.png")
    with caplog.at_level(logging.WARNING, logger="stackmff"):
        stack = load_stack(tmp_path)
    assert stack.images.shape == (3, 3, 24, 32)
    for c in range(3):  # gray is repeated in every channel
        np.testing.assert_array_equal(stack.images[0, c], gray / np.float32(255))
    np.testing.assert_array_equal(stack.images[2], stack.images[1])  # alpha dropped, colour kept
    assert "alpha" in caplog.text and "2.png" in caplog.text


def test_non_image_files_are_skipped_with_a_warning(tmp_path, caplog):
    for i in range(2):
        write_image(tmp_path / f"{i}.png", _rgb(seed=i))
    (tmp_path / "notes.txt").write_text("focus notes")
    (tmp_path / "Thumbs.db").write_bytes(b"\0\1")
    with caplog.at_level(logging.WARNING, logger="stackmff"):
        stack = load_stack(tmp_path)
    assert stack.n == 2
    assert "notes.txt" in caplog.text and "Thumbs.db" in caplog.text


def test_empty_folder(tmp_path):
    with pytest.raises(StackMFFError, match="no images found"):
        load_stack(tmp_path)


def test_missing_input(tmp_path):
    with pytest.raises(StackMFFError, match="input not found"):
        load_stack(tmp_path / "nope")


def test_one_image_is_not_a_stack(tmp_path):
    write_image(tmp_path / "0.png", _rgb())
    with pytest.raises(StackMFFError, match="at least 2 layers, found 1"):
        load_stack(tmp_path)


def test_mixed_sizes_name_the_files(tmp_path):
    write_image(tmp_path / "0.png", _rgb(24, 32))
    write_image(tmp_path / "1.png", _rgb(20, 32))
    with pytest.raises(StackMFFError, match=r"different sizes .*0\.png is 32x24.*1\.png is 32x20"):
        load_stack(tmp_path)


@pytest.mark.parametrize("ext", [".png", ".jpg", ".tif"])
def test_truncated_image(tmp_path, ext):
    write_image(tmp_path / f"0{ext}", _rgb(64, 64))
    good = write_image(tmp_path / f"1{ext}", _rgb(64, 64, seed=1))
    data = good.read_bytes()
    good.write_bytes(data[: len(data) // 2])
    with pytest.raises(StackMFFError, match=rf"cannot read .*1\{ext}.*truncated"):
        load_stack(tmp_path)


def test_non_image_named_png(tmp_path):
    write_image(tmp_path / "0.png", _rgb())
    (tmp_path / "1.png").write_text("this is not a picture\n")
    with pytest.raises(StackMFFError, match=r"cannot read .*1\.png"):
        load_stack(tmp_path)


def test_error_messages_are_one_line(tmp_path):
    (tmp_path / "1.png").write_text("x\ny\n")
    with pytest.raises(StackMFFError) as info:
        load_stack(tmp_path)
    assert "\n" not in str(info.value)


def test_load_image_gives_chw_float(tmp_path):
    path = write_image(tmp_path / "a.png", _rgb())
    img, bits = load_image(path)
    assert img.shape == (3, 24, 32) and img.dtype == np.float32 and bits == 8


def test_save_image_refuses_overwrite_and_writes_atomically(tmp_path):
    img = np.full((3, 8, 8), 0.5, np.float32)
    out = save_image(tmp_path / "new" / "deep" / "a.png", img)
    assert out.is_file()
    before = out.read_bytes()
    with pytest.raises(StackMFFError, match="exists; pass --overwrite"):
        save_image(out, np.zeros_like(img))
    assert out.read_bytes() == before
    save_image(out, np.zeros_like(img), overwrite=True)
    assert cv2.imread(str(out)).max() == 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["a.png"]  # no temp files left behind
    with pytest.raises(StackMFFError, match="unknown extension"):
        save_image(tmp_path / "a.xyz", img)


def test_save_jpeg_of_16bit_request_is_8bit(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="stackmff"):
        out = save_image(tmp_path / "a.jpg", np.full((3, 8, 8), 0.5, np.float32), bit_depth=16)
    assert cv2.imread(str(out), cv2.IMREAD_UNCHANGED).dtype == np.uint8
    assert "16-bit" in caplog.text


def _noise_stack(folder, n=4, h=300, w=400):
    rng = np.random.default_rng(0)
    for k in range(n):
        write_image(folder / f"{k}.png", rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    return folder


def test_load_stack_peak_memory_is_about_one_float_stack(tmp_path):
    import tracemalloc

    folder = _noise_stack(tmp_path / "s")
    tracemalloc.start()
    try:
        stack = load_stack(folder)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # float32 stack + the decoded uint8 layers (1/4) + one float layer in flight; holding every layer twice as
    # float32 (the naive way) would peak at 2x
    assert peak < 1.4 * stack.images.nbytes, peak / stack.images.nbytes


def test_stack_larger_than_available_memory_is_refused_in_one_line(tmp_path, monkeypatch):
    from stackmff import _memory

    folder = _noise_stack(tmp_path / "s", n=3, h=40, w=50)
    monkeypatch.setattr(_memory, "available_bytes", lambda: 10_000)  # bytes
    with pytest.raises(StackMFFError, match=r"3 layers of 50x40.*GiB.*fuse fewer layers") as err:
        load_stack(folder)
    assert "\n" not in str(err.value)
    monkeypatch.setattr(_memory, "available_bytes", lambda: None)  # unknown (not Linux): no check
    assert load_stack(folder).images.shape == (3, 3, 40, 50)


def test_compact_stack_converts_exactly_like_the_float_stack(tmp_path):
    rgb8, rgb16 = _rgb(seed=1), _rgb(seed=2, dtype=np.uint16)
    write_image(tmp_path / "0.png", rgb8[..., 0].copy())  # gray, broadcast to RGB
    write_image(tmp_path / "1.png", rgb8)
    tifffile.imwrite(tmp_path / "2.tif", rgb16)
    Image.fromarray(np.dstack([rgb8, np.full(rgb8.shape[:2], 9, np.uint8)]), "RGBA").save(tmp_path / "3.png")
    full, comp = load_stack(tmp_path), load_stack(tmp_path, compact=True)
    assert comp.images.shape == full.images.shape == (4, 3, 24, 32) and len(comp.images) == 4
    assert comp.bit_depth == full.bit_depth == 16 and comp.n == 4 and comp.size == (24, 32)
    np.testing.assert_array_equal(np.asarray(comp.images), full.images)
    for k in range(4):
        layer = comp.images[k]
        assert layer.shape == (3, 24, 32) and layer.ndim == 3
        np.testing.assert_array_equal(layer[:, 5:9], full.images[k][:, 5:9])  # converts only what is indexed
        np.testing.assert_array_equal(layer[:, ::3, ::2], full.images[k][:, ::3, ::2])
        np.testing.assert_array_equal(layer.transpose(1, 2, 0), full.images[k].transpose(1, 2, 0))
        assert layer[:, 5:9].dtype == np.float32
    np.testing.assert_array_equal(np.asarray(comp.images[[3, 1]]), full.images[[3, 1]])
    assert comp.images.nbytes < full.images.nbytes / 2  # 8-bit layers at 1/4, the 16-bit one at 1/2
    gray = load_stack(tmp_path, color="gray", compact=True)
    np.testing.assert_array_equal(np.asarray(gray.images), load_stack(tmp_path, color="gray").images)


def test_v3_and_alignment_give_the_same_result_on_a_compact_stack(tmp_path):
    import torch

    from stackmff.align import align_stack
    from stackmff.fusion.learned import fuse_stack_v3
    from stackmff.models.registry import create_model

    folder = _noise_stack(tmp_path / "s", n=3, h=64, w=80)
    full, comp = load_stack(folder), load_stack(folder, compact=True)
    torch.manual_seed(0)
    model = create_model("v3_small").eval()
    for gather in ("hard", "pyramid"):
        a = fuse_stack_v3(full.images, model, gather=gather, precision="fp32")
        b = fuse_stack_v3(comp.images, model, gather=gather, precision="fp32")
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.index_map, b.index_map)
    ra = align_stack(full.images, mode="translation", skip_tolerance=0)
    rb = align_stack(comp.images, mode="translation", skip_tolerance=0)
    # a compact 8-bit stack is warped as 8-bit integers (a quarter of the memory of float32): within one 8-bit step
    np.testing.assert_allclose(np.asarray(rb.images), ra.images, rtol=0, atol=1 / 255 + 1e-6)


@pytest.mark.parametrize(
    ("name", "array"),
    [
        ("rgb.jpg", np.random.default_rng(1).integers(0, 256, (20, 24, 3), dtype=np.uint8)),
        ("grey.png", np.random.default_rng(2).integers(0, 256, (20, 24), dtype=np.uint8)),
        ("rgb16.png", np.random.default_rng(3).integers(0, 65536, (20, 24, 3), dtype=np.uint16)),
        ("rgba.png", np.random.default_rng(4).integers(0, 256, (20, 24, 4), dtype=np.uint8)),
    ],
)
def test_read_rgb8_gives_opencvs_colour_pixels(tmp_path, name, array):
    """The one 8-bit RGB reader (photo bank, Depth Anything input) decodes as cv2.imread(IMREAD_COLOR) does."""
    from stackmff.io import load_rgb, read_rgb8

    path = tmp_path / name
    assert cv2.imwrite(str(path), array)
    want = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    got = read_rgb8(path)
    assert got.dtype == np.uint8 and got.shape == (20, 24, 3)
    np.testing.assert_array_equal(got, want)
    assert load_rgb(path).shape == (3, 20, 24)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    with pytest.raises(StackMFFError, match="cannot read"):
        read_rgb8(tmp_path / "bad.png")


@pytest.mark.parametrize("shape", [(1200, 1500, 3), (3, 40, 50), (5000, 7), (1, 9, 9), (7,)])
def test_to_uint_in_row_chunks_gives_the_whole_array_conversion(shape):
    from stackmff.io.decode import to_uint

    x = (np.random.default_rng(len(shape)).random(shape) * 1.4 - 0.2).astype(np.float32)
    for bits, scale, dtype in ((8, 255.0, np.uint8), (16, 65535.0, np.uint16)):
        for arr in (x, x.T):  # contiguous and a transposed view (what save_image passes)
            ref = np.rint(np.clip(arr, 0.0, 1.0) * scale).astype(dtype)
            got = to_uint(arr, bits)
            assert got.dtype == dtype
            np.testing.assert_array_equal(got, ref)
