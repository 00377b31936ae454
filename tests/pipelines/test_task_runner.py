"""The flows' task runner: threads, a local Dask cluster, or an existing Dask cluster given by its address."""

from __future__ import annotations

import pytest

from pipelines.config import FlowsParams
from pipelines.flows._runner import task_runner
from stackmff.errors import StackMFFError


def test_threads_by_default():
    from prefect.task_runners import ThreadPoolTaskRunner

    r = task_runner(FlowsParams())
    assert isinstance(r, ThreadPoolTaskRunner)


@pytest.mark.parametrize("address", ["localhost:8786", "http://x:1", "tcp://"])
def test_malformed_dask_address_is_one_line(address):
    with pytest.raises(StackMFFError, match="tcp://host:8786"):
        task_runner(FlowsParams(task_runner="dask", dask_address=address))


def test_dask_address_needs_the_dask_runner():
    with pytest.raises(StackMFFError, match=r"needs flows\.task_runner: dask"):
        task_runner(FlowsParams(dask_address="tcp://127.0.0.1:8786"))


def test_flow_tasks_run_on_an_existing_dask_cluster(prefect_server):
    """A real scheduler + worker started here (as `dask scheduler` / `dask worker` would be elsewhere)."""
    distributed = pytest.importorskip("distributed")
    from prefect import flow, task

    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        runner = task_runner(FlowsParams(task_runner="dask", dask_address=cluster.scheduler_address))
        assert runner.address == cluster.scheduler_address

        @task
        def double_where(x: int) -> tuple[str, int]:
            return distributed.get_worker().address, 2 * x

        @flow
        def fan_out() -> list[tuple[str, int]]:
            return [f.result() for f in [double_where.submit(i) for i in range(3)]]

        out = fan_out.with_options(task_runner=runner)()
        workers = {w.worker_address for w in cluster.workers.values()}
    assert [v for _, v in out] == [0, 2, 4]
    assert {a for a, _ in out} <= workers  # every task ran on the cluster's worker, not in a local pool
