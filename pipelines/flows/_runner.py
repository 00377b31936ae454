"""Task-runner choice shared by the flows: a thread pool by default, Dask with ``flows.task_runner: dask``.

Dask runs the tasks either on a local cluster of ``flows.workers`` single-threaded processes started for the flow
run, or, with ``flows.dask_address: tcp://scheduler:8786``, on an existing cluster (``dask scheduler`` on one machine,
``dask worker tcp://scheduler:8786`` on each of the others, every worker with this project installed and the same
checkout of ``data/`` at the same path, since tasks exchange paths, not images).
"""

from __future__ import annotations

from pipelines.config import FlowsParams

__all__ = ["task_runner"]


def task_runner(params: FlowsParams):
    """A Prefect task runner for ``params`` (a local Dask cluster needs the ``if __name__ == "__main__":`` guard).

    Raises:
        StackMFFError: an unknown ``task_runner``, or a ``dask_address`` that is not ``tcp://host:port`` (or given
            without ``task_runner: dask``).
    """
    from prefect.task_runners import ThreadPoolTaskRunner

    from stackmff.errors import StackMFFError

    address = params.dask_address.strip()
    if params.task_runner == "dask":
        from prefect_dask import DaskTaskRunner

        if address:
            scheme, sep, rest = address.partition("://")
            if not sep or scheme not in ("tcp", "tls", "inproc", "ws", "wss") or not rest:
                raise StackMFFError(
                    f"flows.dask_address must look like tcp://host:8786 (the scheduler's address), got {address!r}"
                )
            return DaskTaskRunner(address=address)
        return DaskTaskRunner(cluster_kwargs={"n_workers": params.workers, "threads_per_worker": 1, "processes": True})
    if params.task_runner != "threads":
        raise StackMFFError(f"flows.task_runner must be threads or dask, got {params.task_runner!r}")
    if address:
        raise StackMFFError(f"flows.dask_address {address!r} needs flows.task_runner: dask (it is threads)")
    return ThreadPoolTaskRunner(max_workers=params.workers)
