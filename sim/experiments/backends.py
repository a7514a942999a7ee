"""Where the independent runs of a sweep (Algorithm 1 per grid value x seed) execute.

``--backend loky`` (default): joblib's loky processes on this machine. ``--backend dask``:
a Dask cluster -- ``--scheduler ADDRESS`` (e.g. ``tcp://host:8786``) connects to a running
one, without it a ``distributed.LocalCluster`` of ``--jobs`` single-threaded worker processes
is started for the sweep and closed after it. ``--backend ray``: ``ray.init(address=ADDRESS)``,
or a local Ray instance with ``--jobs`` CPUs.

Workers only compute: every backend returns each run's rows to the driver, which writes the
part file (``figures.files``), so a remote cluster needs the package importable on its workers
but no filesystem shared with the driver (``--save-artifacts`` excepted: the worker writes
those). Resume works as with loky: a killed driver loses only the runs in flight.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

BACKENDS = ("loky", "dask", "ray")
#: Module each backend imports, and the extra that installs it (pyproject.toml).
_NEEDS = {"dask": ("distributed", "dask"), "ray": ("ray", "ray")}
#: Seconds to wait for a scheduler given by --scheduler before giving up.
CONNECT_TIMEOUT_S = 20


class BackendError(ValueError):
    """Bad --backend/--scheduler input or an unreachable scheduler: one line, exit status 2."""


def add_backend_args(parser) -> None:
    parser.add_argument(
        "--backend", default="loky", choices=BACKENDS,
        help="where runs execute: loky (joblib processes here), dask (--scheduler ADDRESS, or a "
             "LocalCluster of --jobs worker processes), ray (--scheduler ADDRESS or local). "
             "dask/ray need `pip install -e '.[cluster]'`")
    parser.add_argument(
        "--scheduler", metavar="ADDRESS",
        help="dask scheduler (tcp://host:8786) or ray cluster address (auto, ray://host:10001); "
             "the cluster's workers then set the parallelism and --jobs is ignored")


def check_backend(backend: str, scheduler: str | None) -> None:
    """Fail early (before anything is written) on a combination that cannot run."""
    if backend not in BACKENDS:
        raise BackendError(f"--backend must be one of {','.join(BACKENDS)}, got {backend!r}")
    if backend == "loky" and scheduler:
        raise BackendError("--scheduler needs --backend dask or ray")
    if scheduler is not None and not scheduler.strip():
        raise BackendError("--scheduler must be a non-empty address")
    if backend in _NEEDS:
        module, extra = _NEEDS[backend]
        if importlib.util.find_spec(module) is None:
            raise BackendError(f"--backend {backend} needs the {module!r} package: "
                               f"pip install -e '.[cluster]' (or '.[{extra}]')")


Runner = Callable[[Callable, Sequence[tuple]], Iterator]


@contextmanager
def task_runner(backend: str, jobs: int, scheduler: str | None = None):
    """Yield ``run(fn, arg_tuples)``: an iterator of ``fn(*args)`` results in completion order.

    ``jobs``: worker processes to start where the backend starts its own (loky, a dask
    LocalCluster, a local Ray); ignored with ``scheduler``. Cluster resources are released on
    exit, also on KeyboardInterrupt.
    """
    check_backend(backend, scheduler)
    if backend == "loky":
        yield lambda fn, args: _run_loky(fn, args, jobs)
    elif backend == "dask":
        with _dask_client(jobs, scheduler) as client:
            yield lambda fn, args: _run_dask(client, fn, args)
    else:
        with _ray_session(jobs, scheduler):
            yield _run_ray


def _run_loky(fn, args, jobs: int) -> Iterator:
    if jobs == 1:  # in-process: no worker start-up, easiest to debug and profile
        for a in args:
            yield fn(*a)
        return
    from joblib import Parallel, delayed

    yield from Parallel(n_jobs=jobs, return_as="generator_unordered")(delayed(fn)(*a) for a in args)


@contextmanager
def _dask_client(jobs: int, scheduler: str | None):
    from distributed import Client, LocalCluster

    cluster = None
    try:
        if scheduler:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT_S)
        else:
            # one thread per worker process: the runs are single-threaded numpy/scipy (BLAS
            # limited to one thread in sim.experiments.sweep._run_task), the GIL would serialise threads
            cluster = LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True,
                                   dashboard_address=None, silence_logs=logging.ERROR)
            client = Client(cluster)
    except (OSError, TimeoutError) as e:
        if cluster is not None:
            cluster.close()
        raise BackendError(f"cannot reach dask scheduler {scheduler!r}: {e}") from None
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _run_dask(client, fn, args) -> Iterator:
    from distributed import as_completed

    futures = [client.submit(fn, *a, pure=False) for a in args]
    try:
        for fut in as_completed(futures):
            yield fut.result()
    finally:
        client.cancel(futures)


@contextmanager
def _ray_session(jobs: int, scheduler: str | None):
    import ray

    if scheduler:
        try:
            ray.init(address=scheduler, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise BackendError(f"cannot reach ray cluster {scheduler!r}: {e}") from None
    else:
        # Local workers import sim from the same tree as this driver.
        root = str(Path(__file__).resolve().parents[1])
        path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
        ray.init(num_cpus=jobs, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": path}})
    try:
        yield
    finally:
        ray.shutdown()


def _run_ray(fn, args) -> Iterator:
    import ray

    remote = ray.remote(num_cpus=1)(fn)
    pending = [remote.remote(*a) for a in args]
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield ray.get(done[0])
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
