"""Task-runner choice shared by the flows: thread pool by default, Dask processes when ``flows.task_runner: dask``."""

from __future__ import annotations

from pipelines.config import FlowsParams

__all__ = ["task_runner"]


def task_runner(params: FlowsParams):
    """A Prefect task runner for ``params`` (Dask needs the ``if __name__ == "__main__":`` guard of the caller)."""
    from prefect.task_runners import ThreadPoolTaskRunner

    if params.task_runner == "dask":
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(cluster_kwargs={"n_workers": params.workers, "threads_per_worker": 1, "processes": True})
    if params.task_runner != "threads":
        from stackmff.errors import StackMFFError

        raise StackMFFError(f"flows.task_runner must be threads or dask, got {params.task_runner!r}")
    return ThreadPoolTaskRunner(max_workers=params.workers)
