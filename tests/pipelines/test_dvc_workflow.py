"""The DVC habits of pipelines/README.md, run for real on a temporary copy of this repository with tiny parameters:

- the experiment walk-through: ``dvc exp run -S`` on a fusion option and on a training option, then
  ``dvc exp show --only-changed``, ``dvc metrics diff`` and ``dvc plots diff`` compare them with the baseline;
- sharing through a remote: ``dvc push`` to a local-folder remote, a fresh ``git clone``, ``dvc pull``, and
  ``dvc status`` reports nothing to do.

Slow (the whole pipeline runs once, then the stages each experiment touches): minutes on the 2-core machine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DVC = str(Path(sys.executable).with_name("dvc"))

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("git") is None or not Path(DVC).exists(), reason="needs git and dvc"),
]

TINY = {  # every stage of dvc.yaml runs, on a few small stacks and a 3-step fine-tune
    "prepare": {"sources": {}},
    "extract": {"datasets": ["DUTS"]},  # absent: the stage records that and succeeds
    "synthesize": {
        "benchmark": {"scenes": 2, "size": 64, "layers": [3, 4], "datasets": {"procedural": 0}},
        "train": {"scenes": 4, "size": 64, "layers": [2, 3]},
    },
    "train": {"variants": {"stackmff_v3": {"steps": 3, "size": 64, "val_every": 3, "val_count": 2, "val_size": 64}}},
    "fuse": {
        "methods": ["focus_measure", "wavelet"],
        "imported": [],
        "benchmarks": ["synthetic"],
    },
    "evaluate": {"metrics": ["psnr", "ssim", "qabf"]},
    "report": {"metrics": ["psnr", "ssim", "qabf"], "max_scenes": 1},
}


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(a[k], v) if isinstance(v, dict) and isinstance(a.get(k), dict) and v else v
    return out


def _sh(cwd: Path, *cmd: str) -> str:
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    env["PYTHONPATH"] = str(cwd)  # the stages import the copy's pipelines/ and stackmff/
    env.update(GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert p.returncode == 0, f"{' '.join(cmd)} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p.stdout


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A git + DVC copy of the repository (tracked and new files, no outputs), tiny params, reproduced once."""
    dst = tmp_path_factory.mktemp("repo") / "stackmff"
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    skip = ("dvc.lock", "reports/", "data/samples/")  # outputs are regenerated; no benchmark from the samples
    for f in (f.decode() for f in files if f):
        if f.startswith(skip) or not (ROOT / f).is_file():
            continue
        (dst / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, dst / f)
    params = yaml.safe_load((dst / "params.yaml").read_text())
    (dst / "params.yaml").write_text(yaml.safe_dump(_merge(params, TINY), sort_keys=False))
    _sh(dst, "git", "init", "-q")
    _sh(dst, "git", "add", "-A")
    _sh(dst, "git", "commit", "-qm", "tiny copy")
    _sh(dst, DVC, "repro", "-q")
    _sh(dst, "git", "add", "-A")
    _sh(dst, "git", "commit", "-qm", "baseline")
    return dst


def test_metrics_show_is_headline_only(project):
    out = _sh(project, DVC, "metrics", "show")
    print(out)
    lines = out.splitlines()
    header = lines[0].split()
    assert {"psnr", "ssim"} <= set(header) and "qabf" not in header and "ms_ssim" not in header
    rows = {ln.split()[0] for ln in lines[1:] if ln.startswith("reports/")}
    methods = ("focus_measure", "wavelet", "stackmff_v3")
    want = {f"reports/summary/{d}/{m}.json" for d in ("procedural", "procedural_invalid") for m in methods}
    assert rows == want
    assert max(len(ln) for ln in lines) < 160  # a terminal, not a wall


def test_experiments_on_a_fusion_and_a_training_option(project):
    # --temp: each runs in its own copy of HEAD, the workspace (and the next experiment) stays at the baseline;
    # "+" adds a key to the empty options dict (DVC's Hydra overrides refuse to set a key that is not there)
    _sh(project, DVC, "exp", "run", "--temp", "-n", "wavelet-db2", "-S", "+fuse.options.wavelet.wavelet=db2")
    _sh(project, DVC, "exp", "run", "--temp", "-n", "lr-1e-3", "-S", "train.variants.stackmff_v3.lr=0.001")
    assert _sh(project, "git", "status", "--porcelain").strip() == ""  # the workspace is untouched
    noise = r"Created|train\.(acc|loss|lr)|step|val\.acc|data/.*|models/.*|reports/(metrics|runs)"  # hashes etc.
    table = _sh(project, DVC, "exp", "show", "--only-changed", "--md", "--drop", noise)
    print(table)
    rows = json.loads(_sh(project, DVC, "exp", "show", "--json"))
    exps = {e["name"]: e for r in rows for e in (r.get("experiments") or []) for e in e.get("revs", [])}
    assert {"wavelet-db2", "lr-1e-3"} <= set(exps)
    assert "wavelet-db2" in table and "lr-1e-3" in table
    assert "fuse.options.wavelet.wavelet" in table and "train.variants.stackmff_v3.lr" in table

    def metrics(name: str) -> dict:
        data = exps[name]["data"]["metrics"]
        return {k: v["data"] for k, v in data.items()}

    w, t = metrics("wavelet-db2"), metrics("lr-1e-3")
    key_w = "reports/summary/procedural/wavelet.json"
    key_f = "reports/summary/procedural/focus_measure.json"
    head = {
        k: json.loads((project / k).read_text()) for k in (key_w, key_f, "reports/summary/procedural/stackmff_v3.json")
    }
    assert w[key_w] != head[key_w] and w[key_f] == head[key_f]  # the wavelet option changes the wavelet only
    assert t["reports/summary/procedural/stackmff_v3.json"] != head["reports/summary/procedural/stackmff_v3.json"]
    assert t[key_w] == head[key_w]  # ... and the training option the learned method only
    diff = json.loads(_sh(project, DVC, "metrics", "diff", "HEAD", "wavelet-db2", "--json"))
    key_wi = "reports/summary/procedural_invalid/wavelet.json"
    assert set(diff) == {key_w, key_wi}, diff  # only the wavelet's headline numbers moved
    assert set(diff[key_w]) <= {"psnr", "ssim"}
    plots = json.loads(_sh(project, DVC, "plots", "diff", "HEAD", "wavelet-db2", "--json"))["data"]
    for name in ("means/procedural.psnr.json", "paired/procedural.psnr.json"):  # both revisions in one plot
        spec = plots[f"reports/plots/dvc/{name}"][0]["content"]
        values = spec["data"]["values"]
        assert {d["rev"] for d in values} == {"HEAD", "wavelet-db2"}, name
    paired = [d for d in values if d["method"] == "wavelet"]
    moved = {d["scene"]: d["delta"] for d in paired if d["rev"] == "wavelet-db2"}
    assert moved != {d["scene"]: d["delta"] for d in paired if d["rev"] == "HEAD"}
    assert "stackmff_v3" not in {d["method"] for d in values}  # the reference itself is not plotted


def test_push_to_a_folder_remote_clone_pull_status_clean(project, tmp_path):
    store = tmp_path / "dvcstore"
    _sh(project, DVC, "remote", "add", "-d", "-f", "shared", str(store))
    _sh(project, DVC, "push", "-q")
    _sh(project, "git", "commit", "-qam", "remote")
    clone = tmp_path / "clone"
    _sh(tmp_path, "git", "clone", "-q", str(project), str(clone))
    assert not (clone / "models" / "stackmff_v3" / "model.pt").exists()  # git has the .gitignore files only
    assert not list((clone / "data").rglob("*.png"))
    _sh(clone, DVC, "pull", "-q")
    assert (clone / "models" / "stackmff_v3" / "model.pt").is_file()
    assert (clone / "reports" / "index.html").is_file()
    status = _sh(clone, DVC, "status")
    # clean: nothing but the tool probe, which DVC re-runs on every repro by design (always_changed)
    assert [ln.strip() for ln in status.splitlines() if ln.strip()] == ["peers:", "always changed"], status
