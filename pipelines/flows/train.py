"""Flow ``train``: train every variant of ``train.variants`` (mirrors ``train@<variant>``), serially.

Training is CPU/GPU-bound and uses all cores (or the GPU) by itself, so variants run one after another, with a
timeout and no retries.

Run once::

    python -m pipelines.flows.train
"""

from __future__ import annotations

from prefect import flow, task

from pipelines.config import load_params
from pipelines.paths import load_paths
from pipelines.stages import train as train_stage


@task(task_run_name="train {variant}", timeout_seconds=48 * 3600, cache_result_in_memory=False)
def train_variant(params_file: str, variant: str, root: str) -> str:
    p = load_paths(root)
    path = train_stage.run(
        load_params(params_file, "train"),
        load_params(params_file, "base"),
        variant,
        p.synth_train,
        p.models / variant,
        init=p.root / "weights" / f"{variant}.pt",
    )
    return str(path)


@flow(name="train", log_prints=True)
def train(params_file: str = "params.yaml", root: str = ".", variants: list[str] | None = None) -> list[str]:
    """Train the variants (default: all configured); returns the checkpoint paths."""
    names = variants or list(load_params(params_file, "train").variants)
    return [train_variant(params_file, v, root) for v in names]


if __name__ == "__main__":
    train()
