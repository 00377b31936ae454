"""Flow ``prepare_data``: prepare -> extract -> depth -> synthesize (mirrors the DVC data stages).

Fans out over the training datasets; extraction reads raw downloads (I/O) and is retried, depth and synthesis are
deterministic compute with timeouts.

Run once::

    python -m pipelines.flows.data
"""

from __future__ import annotations

from prefect import flow, task

from pipelines.config import load_params
from pipelines.paths import load_paths
from pipelines.stages import depth as depth_stage
from pipelines.stages import extract as extract_stage
from pipelines.stages import prepare as prepare_stage
from pipelines.stages import synthesize as synthesize_stage


@task(retries=2, retry_delay_seconds=[5, 30], task_run_name="prepare {name}")
def prepare(params_file: str, name: str, source: str, root: str) -> str:
    p = load_paths(root)
    prepare_stage.run(load_params(params_file, "prepare"), p.root / source, p.benchmark(name))
    return str(p.benchmark(name))


@task(retries=2, retry_delay_seconds=[5, 30], task_run_name="extract {dataset}")
def extract(params_file: str, dataset: str, root: str) -> str:
    p = load_paths(root)
    extract_stage.run(load_params(params_file, "extract"), dataset, p.raw / dataset, p.extracted / dataset)
    return str(p.extracted / dataset)


@task(task_run_name="depth {dataset}", timeout_seconds=6 * 3600)
def depth(params_file: str, dataset: str, root: str, extracted: str) -> str:
    p = load_paths(root)
    depth_stage.run(load_params(params_file, "depth"), dataset, extracted, p.depth / dataset)
    return str(p.depth / dataset)


@task(task_run_name="synthesize {split}", timeout_seconds=6 * 3600)
def synthesize(params_file: str, split: str, out: str, root: str, depth_dirs: list[str]) -> str:
    p = load_paths(root)
    synthesize_stage.run(load_params(params_file, "synthesize"), load_params(params_file, "base"), split, p.depth, out)
    return out


@flow(name="prepare_data", log_prints=True)
def prepare_data(params_file: str = "params.yaml", root: str = ".") -> dict[str, str]:
    """Prepare the benchmark sources, extract and depth-complete every training dataset, synthesise both splits."""
    p = load_paths(root)
    ex = load_params(params_file, "extract")
    sources = load_params(params_file, "prepare").sources
    prepared = {n: prepare.submit(params_file, n, src, root) for n, src in sources.items()}
    extracted = {d: extract.submit(params_file, d, root) for d in ex.datasets}
    depths = [depth.submit(params_file, d, root, f) for d, f in extracted.items()]
    done = [f.result() for f in depths]
    outs = {"benchmark": str(p.benchmark("synthetic")), "train": str(p.synth_train)}
    splits = {s: synthesize.submit(params_file, s, o, root, done) for s, o in outs.items()}
    return {**{n: f.result() for n, f in prepared.items()}, **{s: f.result() for s, f in splits.items()}}


if __name__ == "__main__":
    prepare_data()
