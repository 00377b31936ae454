"""Parameter profiles: the paper profile applies to params.yaml, passes the strict config and resolves dvc.yaml."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipelines.config import SECTIONS, BaseParams, TrainParams, load_params
from pipelines.profiles import apply_profile, available_profiles, dvc_set_args, load_profile
from pipelines.stages.train import train_config
from stackmff.errors import StackMFFError

ROOT = Path(__file__).resolve().parents[2]
DVC = Path(sys.executable).with_name("dvc")


@pytest.fixture
def paper_params(tmp_path):
    bench = tmp_path / "mff"
    (bench / "Lytro" / "A").mkdir(parents=True)
    params = tmp_path / "params.yaml"
    shutil.copyfile(ROOT / "params.yaml", params)
    apply_profile(load_profile("paper", benchmark_root=bench), params)
    return params, bench


def test_paper_profile_applies_strictly_and_keeps_comments(paper_params):
    params, bench = paper_params
    assert "paper" in available_profiles()
    for section in SECTIONS:
        load_params(params, section)  # strict: unknown keys / wrong types would raise
    assert load_params(params, "prepare").sources == {"samples": "data/samples", "paper": str(bench.resolve())}
    assert load_params(params, "extract").datasets == ["ADE20K", "DUTS", "DIODE", "NYU_Depth_V2", "Cityscapes"]
    syn = load_params(params, "synthesize")
    assert syn.train.source == "extracted" and syn.train.mode == "upstream" and syn.train.ordered is False
    assert set(syn.train.datasets) == {"ADE20K", "DUTS", "DIODE", "NYU_Depth_V2", "Cityscapes"}  # replaced, not merged
    v3 = load_params(params, "train").variants["stackmff_v3"]
    assert v3["model"] == "v3" and v3["device"] == "cuda" and v3["from_weights"] is False
    fuse = load_params(params, "fuse")
    assert "paper" in fuse.benchmarks and fuse.align["paper"] == "none"
    assert all(m in fuse.options for m in fuse.methods + fuse.learned + fuse.imported)
    assert {"helicon_focus_a", "zerene_dmap", "photoshop"} <= set(fuse.imported)
    text = params.read_text()
    assert "# seeds synthesis and training" in text and "# schedule of the regenerate deployment" in text
    assert yaml.safe_load(text)["base"] == yaml.safe_load((ROOT / "params.yaml").read_text())["base"]


def test_paper_training_starts_from_scratch(paper_params, tmp_path):
    params, _ = paper_params
    tp: TrainParams = load_params(params, "train")
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"x")
    cfg = train_config(tp, BaseParams(), "stackmff_v3", tmp_path / "d", tmp_path / "o", weights)
    assert cfg.init_from is None and cfg.model == "v3" and cfg.resume is False
    default = train_config(
        load_params(ROOT / "params.yaml", "train"), BaseParams(), "stackmff_v3", tmp_path, tmp_path, weights
    )
    assert default.init_from == str(weights)


def test_dvc_yaml_resolves_with_the_paper_profile(paper_params, tmp_path):
    params, _ = paper_params
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copyfile(ROOT / "dvc.yaml", repo / "dvc.yaml")
    shutil.copyfile(params, repo / "params.yaml")
    subprocess.run([str(DVC), "init", "--no-scm", "-q"], cwd=repo, check=True)
    out = subprocess.run([str(DVC), "stage", "list", "--name-only"], cwd=repo, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    names = set(out.stdout.split())
    for stage in (
        "prepare@samples",
        "prepare@paper",
        "peers",
        "extract@NYU_Depth_V2",
        "depth@Cityscapes",
        "train@stackmff_v3",
        "fuse@wavelet-paper",
        "fuse_learned@stackmff_v3-paper",
        "fuse_imported@helicon_focus_c-paper",
        "evaluate_imported@photoshop-paper",
        "report",
    ):
        assert stage in names, stage


def test_profile_errors_are_one_line_and_write_nothing(tmp_path):
    with pytest.raises(StackMFFError, match="needs --benchmark-root"):
        load_profile("paper")
    with pytest.raises(StackMFFError, match="is not a folder"):
        load_profile("paper", benchmark_root=tmp_path / "nope")
    with pytest.raises(StackMFFError, match="no profile 'papr'"):
        load_profile("papr")
    params = tmp_path / "params.yaml"
    shutil.copyfile(ROOT / "params.yaml", params)
    before = params.read_bytes()
    with pytest.raises(StackMFFError, match=r"train\.variants\.stackmff_v3\.stepz"):
        apply_profile({"train.variants.stackmff_v3.stepz": 3}, params)
    with pytest.raises(StackMFFError, match=r"fuse\.index_maps must be true or false"):
        apply_profile({"fuse.index_maps": "yes"}, params)
    assert params.read_bytes() == before


def test_print_set_means_the_same_as_applying(tmp_path):
    """DVC applies -S with Hydra (merging mappings): the printed overrides, applied by DVC's own code, must give
    exactly the params that applying the profile gives."""
    from dvc.utils.hydra import apply_overrides

    bench = tmp_path / "it's a root"  # a quote in the path survives the quoting
    bench.mkdir()
    overrides = load_profile("paper", benchmark_root=bench)
    args = dvc_set_args(overrides, ROOT / "params.yaml")
    assert args[::2] == ["-S"] * (len(args) // 2)
    assert "~synthesize.train.datasets.procedural" in args  # replaced mapping: the default's key is deleted
    by_dvc, ours = tmp_path / "dvc.yaml", tmp_path / "ours.yaml"
    shutil.copyfile(ROOT / "params.yaml", by_dvc)
    apply_overrides(by_dvc, args[1::2])
    apply_profile(overrides, ROOT / "params.yaml", out=ours)
    assert yaml.safe_load(by_dvc.read_text()) == yaml.safe_load(ours.read_text())
    cli = subprocess.run(
        [sys.executable, "-m", "pipelines.profiles", "paper", "--benchmark-root", str(bench), "--print-set"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 0 and shlex.split(cli.stdout) == ["dvc", "exp", "run", *args]
    bad = subprocess.run(
        [sys.executable, "-m", "pipelines.profiles", "paper"], cwd=ROOT, capture_output=True, text=True
    )
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--benchmark-root" in bad.stderr
