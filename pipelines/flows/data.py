"""Flow ``prepare_data``: prepare -> extract -> depth -> synthesize (mirrors the DVC data stages).

Fans out over the training datasets; extraction reads raw downloads (I/O) and is retried, depth and synthesis are
deterministic compute with timeouts.

Run once::

    python -m pipelines.flows.data
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task

from pipelines.config import load_params
from pipelines.stages import depth as depth_stage
from pipelines.stages import extract as extract_stage
from pipelines.stages import prepare as prepare_stage
from pipelines.stages import synthesize as synthesize_stage


@task(retries=2, retry_delay_seconds=[5, 30], task_run_name="prepare {name}")
def prepare(params_file: str, name: str, source: str, root: str) -> str:
    r = Path(root)
    prepare_stage.run(load_params(params_file, "prepare"), r / source, r / "data/benchmarks" / name)
    return str(r / "data/benchmarks" / name)


@task(retries=2, retry_delay_seconds=[5, 30], task_run_name="extract {dataset}")
def extract(params_file: str, dataset: str, root: str) -> str:
    r = Path(root)
    extract_stage.run(
        load_params(params_file, "extract"), dataset, r / "data/raw" / dataset, r / "data/extracted" / dataset
    )
    return str(r / "data/extracted" / dataset)


@task(task_run_name="depth {dataset}", timeout_seconds=6 * 3600)
def depth(params_file: str, dataset: str, root: str, extracted: str) -> str:
    r = Path(root)
    depth_stage.run(load_params(params_file, "depth"), dataset, extracted, r / "data/depth" / dataset)
    return str(r / "data/depth" / dataset)


@task(task_run_name="synthesize {split}", timeout_seconds=6 * 3600)
def synthesize(params_file: str, split: str, out: str, root: str, depth_dirs: list[str]) -> str:
    synthesize_stage.run(
        load_params(params_file, "synthesize"), load_params(params_file, "base"), split, Path(root) / "data/depth", out
    )
    return out


@flow(name="prepare_data", log_prints=True)
def prepare_data(params_file: str = "params.yaml", root: str = ".") -> dict[str, str]:
    """Prepare the benchmark sources, extract and depth-complete every training dataset, synthesise both splits."""
    r = Path(root)
    ex = load_params(params_file, "extract")
    sources = load_params(params_file, "prepare").sources
    prepared = {n: prepare.submit(params_file, n, src, root) for n, src in sources.items()}
    extracted = {d: extract.submit(params_file, d, root) for d in ex.datasets}
    depths = [depth.submit(params_file, d, root, f) for d, f in extracted.items()]
    done = [f.result() for f in depths]
    outs = {"benchmark": str(r / "data/benchmarks/synthetic"), "train": str(r / "data/synth/train")}
    splits = {s: synthesize.submit(params_file, s, o, root, done) for s, o in outs.items()}
    return {**{n: f.result() for n, f in prepared.items()}, **{s: f.result() for s, f in splits.items()}}


if __name__ == "__main__":
    prepare_data()
