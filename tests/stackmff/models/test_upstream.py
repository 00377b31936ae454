"""Upstream fidelity: the author's checkpoints load, export round-trips, ``--preset upstream`` reproduces the
author's prediction code. The equivalence tests run the real upstream classes and scripts from ``../shared/upstream``
(MIT) and skip when it is absent."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from _helpers import SHARED_DATA

from stackmff.cli import main as cli_main
from stackmff.errors import StackMFFError
from stackmff.fusion.learned import fuse_stack_upstream
from stackmff.fusion.run import upstream_outputs
from stackmff.models.checkpoint import export_upstream, load_model, save_checkpoint
from stackmff.models.registry import create_model
from stackmff.models.stackmff_v3 import to_upstream_state_dict, upstream_config

UPSTREAM = SHARED_DATA.parent / "upstream"
# an upstream-expressible architecture small enough for CPU tests: 4 heads, rotary positions, FFN 4x the tokens
TINY_UP = {"dims": (16, 32, 64, 128), "depths": (1, 1, 1, 1), "ffn_dim": 32}
UP_CTOR = {"encoder_dims": [16, 32, 64, 128], "encoder_layers": [1, 1, 1, 1], "num_transformer_layers": 2}


def _randomise_bn(model: torch.nn.Module, seed: int = 0) -> None:
    # trained-like BatchNorm statistics, so that a wrong mapping of running stats would show
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
            m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
            m.weight.data.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
            m.bias.data.copy_(0.1 * torch.randn(m.bias.shape, generator=g))


def _tiny(head: str = "classify"):
    torch.manual_seed(0)
    m = create_model("v3_star" if head == "regress" else "v3", drop_path_rate=0.0, **TINY_UP)
    _randomise_bn(m)
    return m.eval()


@pytest.fixture(scope="module")
def upstream():
    """The author's ``network``/``network_star``/``predict_one_stack*`` modules (skips without ../shared)."""
    if not (UPSTREAM / "network.py").is_file():
        pytest.skip("../shared/upstream is not available")
    import matplotlib

    if not hasattr(matplotlib.cm, "get_cmap"):  # removed in matplotlib 3.9; the scripts call it
        matplotlib.cm.get_cmap = matplotlib.colormaps.get_cmap
    sys.path.insert(0, str(UPSTREAM))
    try:
        mods = {}
        for name in ("network", "network_star", "predict_one_stack", "predict_one_stack_star"):
            spec = importlib.util.spec_from_file_location(name, UPSTREAM / f"{name}.py")
            mod = importlib.util.module_from_spec(spec)
            sys.modules[name] = mod
            spec.loader.exec_module(mod)
            mods[name] = mod
        yield mods
    finally:
        sys.path.remove(str(UPSTREAM))
        for name in ("network", "network_star", "predict_one_stack", "predict_one_stack_star"):
            sys.modules.pop(name, None)


def _write_stack(folder: Path, n: int = 4, h: int = 45, w: int = 70, seed: int = 0) -> np.ndarray:
    """An 8-bit focal stack with real defocus differences, saved as 0.png.. (numeric order = upstream's)."""
    rng = np.random.default_rng(seed)
    sharp = cv2.resize(rng.random((h // 3, w // 3, 3)).astype(np.float32), (w, h), interpolation=cv2.INTER_NEAREST)
    yy = np.linspace(0, 1, h)[:, None] * np.ones((1, w))
    folder.mkdir(parents=True, exist_ok=True)
    layers = []
    for k in range(n):
        blur = cv2.GaussianBlur(sharp, (0, 0), 0.5 + 2.5 * abs(k / (n - 1) - yy).mean() + 0.3 * k)
        zone = (np.abs(yy - k / (n - 1)) < 0.5 / n)[..., None]
        img = np.where(zone, sharp, blur)
        u8 = np.rint(img * 255).astype(np.uint8)
        cv2.imwrite(str(folder / f"{k}.png"), u8[..., ::-1])
        layers.append(u8)
    return np.stack(layers)


def test_upstream_state_dict_loads_with_or_without_module_prefix(tmp_path):
    m = _tiny()
    sd = to_upstream_state_dict(m)
    assert all(k.startswith(("feature_extraction.encoder.", "layer_interaction.")) for k in sd)
    assert upstream_config(sd).dims == m.cfg.dims and upstream_config(sd).depths == m.cfg.depths
    x = torch.rand(1, 3, 64, 64)
    for name, d in (("plain.pth", sd), ("dp.pth", {"module." + k: v for k, v in sd.items()})):
        torch.save(d, tmp_path / name)
        loaded = load_model(tmp_path / name)
        assert loaded.cfg.head == "classify" and loaded.cfg.rope and loaded.cfg.attn_heads == 4
        torch.testing.assert_close(loaded(x), m(x), atol=1e-6, rtol=0)
    torch.save(sd, tmp_path / "stackmffv3_star.pth")  # same keys: the file name (or head=) decides
    assert load_model(tmp_path / "stackmffv3_star.pth").cfg.head == "regress"
    assert load_model(tmp_path / "stackmffv3_star.pth", head="classify").cfg.head == "classify"
    torch.save({"feature_extraction.encoder.bogus": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(StackMFFError, match="upstream StackMFF V3 state dict but do not fit"):
        load_model(tmp_path / "bad.pth")
    torch.save({"weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(StackMFFError, match="neither a stackmff checkpoint"):
        load_model(tmp_path / "other.pth")


def test_export_refuses_what_upstream_cannot_express(tmp_path):
    small = create_model("v3_small")  # 2 heads, no rotary positions
    with pytest.raises(StackMFFError, match=r"attention heads.*rotary"):
        export_upstream(small, tmp_path / "x.pth")
    assert not (tmp_path / "x.pth").exists()
    export_upstream(_tiny(), tmp_path / "y.pth")
    with pytest.raises(StackMFFError, match="exists"):
        export_upstream(_tiny(), tmp_path / "y.pth")


def test_export_cli_round_trip_gives_the_same_index_map(tmp_path, capsys):
    ckpt = save_checkpoint(tmp_path / "tiny.pt", _tiny())
    assert cli_main(["export", str(ckpt), "--format", "upstream", "-o", str(tmp_path / "stackmffv3.pth")]) == 0
    assert "StackMFF_V3(encoder_dims=[16, 32, 64, 128]" in capsys.readouterr().out
    _write_stack(tmp_path / "stack")
    maps = {}
    for name, w in (("project", ckpt), ("upstream", tmp_path / "stackmffv3.pth")):
        out = tmp_path / f"{name}.png"
        args = ["fuse", str(tmp_path / "stack"), "-o", str(out), "--weights", str(w), "--align", "none"]
        args += ["-O", "precision=fp32", "--index-map", str(tmp_path / f"{name}_idx.png")]
        assert cli_main(args) == 0
        maps[name] = cv2.imread(str(tmp_path / f"{name}_idx.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(maps["project"], maps["upstream"])


@pytest.mark.parametrize("head", ["classify", "regress"])
def test_exported_weights_load_in_the_upstream_classes_with_equal_logits(upstream, tmp_path, head):
    m = _tiny(head)
    path = export_upstream(m, tmp_path / "w.pth")
    cls = upstream["network_star"].StackMFF_V3_Star if head == "regress" else upstream["network"].StackMFF_V3
    up = cls(**UP_CTOR)
    up.load_state_dict(torch.load(path, weights_only=True))  # strict: every key and shape must match
    up.eval()
    x = torch.rand(2, 5, 64, 96)
    with torch.no_grad():
        up_logits = up.layer_interaction(up.feature_extraction(x))
        torch.testing.assert_close(m(x), up_logits, atol=2e-5, rtol=0)
        if head == "classify":
            _, idx = up(x)
            np.testing.assert_array_equal(idx.numpy(), m(x).argmax(1).numpy())


@pytest.mark.parametrize("head", ["classify", "regress"])
def test_preset_upstream_reproduces_the_upstream_prediction_script(upstream, tmp_path, head):
    """The author's ``process_stack`` (predict_one_stack[_star].py) vs ``stackmff fuse --preset upstream`` on the
    same files and weights: index map and colour image identical up to argmax near-ties (none here)."""
    m = _tiny(head)
    star = head == "regress"
    w = export_upstream(m, tmp_path / ("stackmffv3_star.pth" if star else "stackmffv3.pth"))
    _write_stack(tmp_path / "stack", n=5, h=50, w=75)  # 50x75: resized to 64x96 by both
    script = upstream["predict_one_stack_star" if star else "predict_one_stack"]
    net = upstream["network_star"].StackMFF_V3_Star(**UP_CTOR) if star else upstream["network"].StackMFF_V3(**UP_CTOR)
    net.load_state_dict(torch.load(w, weights_only=True))
    gray, colour = script.load_image_stack(str(tmp_path / "stack"))
    outs = script.process_stack(net, gray, colour, torch.device("cpu"))
    up_gray, up_idx, up_bgr = outs[0], (outs[4] if star else outs[1]), outs[2]

    out = tmp_path / "fused.png"
    method = "stackmff_v3_star" if star else "stackmff_v3"
    args = ["fuse", str(tmp_path / "stack"), "-o", str(out), "-m", method, "--weights", str(w)]
    assert cli_main([*args, "--preset", "upstream", "--upstream-outputs", "--index-map", str(tmp_path / "i.png")]) == 0
    idx = cv2.imread(str(tmp_path / "i.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(idx, up_idx)
    np.testing.assert_array_equal(cv2.imread(str(out)), up_bgr)  # hard gather of the same 8-bit colours
    ours_gray = cv2.imread(str(tmp_path / "fused_fused_gray.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(ours_gray, (up_gray * 255).astype(np.uint8))
    if star:
        depth = cv2.imread(str(tmp_path / "fused_depth_map.png"), cv2.IMREAD_UNCHANGED)
        assert np.abs(depth.astype(int) - (outs[1] * 255).astype(np.uint8)).max() <= 1  # float rounding


def test_preset_upstream_is_the_documented_pipeline():
    """Independent of ../shared: the steps written out with OpenCV and torch on a stack whose size is not a
    multiple of 32."""
    m = _tiny()
    rng = np.random.default_rng(3)
    u8 = rng.integers(0, 256, (3, 40, 70, 3), dtype=np.uint8)
    stack = u8.transpose(0, 3, 1, 2).astype(np.float32) / 255
    res = fuse_stack_upstream(stack, m)
    g = np.stack([cv2.cvtColor(x, cv2.COLOR_RGB2GRAY) for x in u8]).astype(np.float32) / 255
    x = torch.nn.functional.interpolate(torch.from_numpy(g)[None], size=(64, 96), mode="bilinear")
    with torch.no_grad():
        idx = m(x)[0].argmax(0).numpy().astype(np.float32)
    expect = cv2.resize(idx, (70, 40), interpolation=cv2.INTER_NEAREST).astype(np.int32)
    assert (res.index_map == expect).mean() > 0.999
    sel = np.take_along_axis(stack, res.index_map[None, None].astype(np.int64), 0)[0]
    np.testing.assert_array_equal(res.image, sel)
    assert res.extras["preset"] == "upstream" and res.extras["gray"].shape == (40, 70)


def test_upstream_outputs_follow_the_scripts_formulas():
    from stackmff.fusion.registry import FusionResult

    idx = np.array([[0, 1], [2, 4]])
    r = FusionResult(image=np.zeros((3, 2, 2), np.float32), index_map=idx, extras={"gray": np.full((2, 2), 0.5)})
    o = upstream_outputs(r, 5)
    np.testing.assert_array_equal(o["focus_indices"], idx * 63)  # 255 // 4, the V3 scripts' integer scale
    assert (o["fused_gray"] == 127).all()  # truncation, as (x * 255).astype(uint8)
    assert o["focus_colormap"].shape == (2, 2, 3) and "depth_map" not in o
    np.testing.assert_array_equal(o["focus_colormap"][0, 0], [127, 0, 255])  # rainbow(0): violet
    r.extras["depth"] = np.array([[0.0, 0.25], [0.5, 1.0]], np.float32)
    o = upstream_outputs(r, 5, reverse=True)
    np.testing.assert_array_equal(o["depth_index"], 4 - idx)
    np.testing.assert_array_equal(o["depth_map"], [[255, 191], [127, 0]])
    np.testing.assert_array_equal(o["focus_indices"], ((4 - idx) / 4 * 255).astype(np.uint8))


def test_dataset_commands_write_upstream_outputs_and_time_per_dataset(tmp_path, capsys):
    root = tmp_path / "bench"
    _write_stack(root / "DS" / "dof_stack" / "s1", n=3, h=40, w=48)
    _write_stack(root / "DS" / "dof_stack" / "s2", n=3, h=40, w=48, seed=1)
    for k, side in enumerate("AB"):
        _write_stack(tmp_path / "tmp", n=2, h=40, w=48, seed=5)
        (root / "P" / side).mkdir(parents=True)
        (tmp_path / "tmp" / f"{k}.png").rename(root / "P" / side / "1.png")
    out = tmp_path / "out"
    args = ["fuse-dataset", str(root), "-o", str(out), "-m", "focus_measure", "--no-progress", "--align", "none"]
    assert cli_main([*args, "--upstream-outputs", "--warmup", "1"]) == 0
    assert "DS: " in capsys.readouterr().err  # the per-dataset mean time after warm-up
    for name in ("fused_gray", "focus_indices", "focus_colormap"):
        assert (out / "DS" / name / "s1.png").is_file() and (out / "DS" / name / "s2.png").is_file()
    idx = cv2.imread(str(out / "DS" / "focus_indices" / "s1.png"), cv2.IMREAD_UNCHANGED)
    assert set(np.unique(idx)) <= {0, 127, 254}  # index * (255 // 2)
    pargs = ["fuse-pairs", str(root), "-o", str(tmp_path / "po"), "-m", "focus_measure", "--no-progress"]
    assert cli_main([*pargs, "--datasets", "P", "--align", "none", "--upstream-outputs"]) == 0
    fwd = cv2.imread(str(tmp_path / "po" / "P" / "focus_indices" / "1.png"), cv2.IMREAD_UNCHANGED)
    rev_args = ["--datasets", "P", "--align", "none", "--upstream-outputs", "--reverse", "--overwrite"]
    assert cli_main([*pargs, *rev_args]) == 0
    rev = cv2.imread(str(tmp_path / "po" / "P" / "focus_indices" / "1.png"), cv2.IMREAD_UNCHANGED)
    assert set(np.unique(fwd)) == {0, 255}  # both layers chosen somewhere
    np.testing.assert_array_equal(rev, 255 - fwd)  # N - 1 - index, scaled by 255 // 1
    # a rerun without --overwrite resumes: the finished scene is skipped, its outputs stay as they are
    before = (tmp_path / "po" / "P" / "focus_indices" / "1.png").stat().st_mtime_ns
    assert cli_main([*pargs, "--datasets", "P", "--align", "none", "--upstream-outputs"]) == 0
    assert "skipped 1 finished" in capsys.readouterr().err
    assert (tmp_path / "po" / "P" / "focus_indices" / "1.png").stat().st_mtime_ns == before
    # --preset upstream needs a V3 method
    assert cli_main([*args, "--preset", "upstream", "-o", str(tmp_path / "x")]) == 2
    assert "needs -m stackmff_v3" in capsys.readouterr().err


def test_every_listed_method_runs_with_the_shipped_weights():
    from stackmff.fusion import list_methods
    from stackmff.fusion.stackmff_v3 import needs_weights

    stack = np.stack([np.stack([_gradient(k)] * 3) for k in range(3)]).astype(np.float32)
    for m in list_methods():
        if m.learned and needs_weights(m.name):
            pytest.fail(f"{m.name} is listed but has no shipped weights")
        res = m(stack)
        assert res.image.shape == (3, 64, 64) and np.isfinite(res.image).all()


def _gradient(k: int) -> np.ndarray:
    rng = np.random.default_rng(k)
    base = cv2.resize(rng.random((8, 8)).astype(np.float32), (64, 64), interpolation=cv2.INTER_NEAREST)
    return cv2.GaussianBlur(base, (0, 0), 0.5 + 2 * k)
