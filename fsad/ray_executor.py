"""The Ray executor: run independent (or chained) Python calls as Ray tasks, on one machine or a cluster.

Ray (https://docs.ray.io) does the scheduling, the resource accounting (``num_gpus`` sets
``CUDA_VISIBLE_DEVICES`` per task, so ``device: auto`` in a task is its own GPU) and the retries of tasks
whose worker or node died. This module is imported only when ``--executor ray`` is asked for, so the kit
runs without Ray installed (it lives in the ``distributed`` extra).

With no address a local Ray instance is started for the run and shut down after it; with ``auto`` or
``HOST:PORT`` the run joins an existing cluster (``ray start --head`` / ``ray start --address``). When Ray is
already initialised in the process (a notebook, a test that chose its own settings), that instance is used as
it is and left running. Ray's usage statistics are off unless the user opted in (``RAY_USAGE_STATS_ENABLED``).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

from fsad.errors import ConfigError

INSTALL_HINT = (
    "the ray executor needs Ray: pip install 'fsad-kit[distributed]' "
    "(in this repository: pip install -c constraints.txt -e '.[distributed]')"
)


@dataclass
class RayOptions:
    """How tasks are placed.

    Attributes:
        address: cluster to join (``auto``, ``HOST:PORT``); None starts a local Ray instance for the run.
        num_cpus: CPUs each task reserves (also its thread count: Ray sets ``OMP_NUM_THREADS`` to it).
        num_gpus: GPUs each task reserves (fractions share a GPU).
        max_retries: times a task whose worker or node died is re-run before it counts as failed.
        local_cpus: CPUs of the local instance started when no address is given (default: all).
    """

    address: str | None = None
    num_cpus: float = 1
    num_gpus: float = 0
    max_retries: int = 2
    local_cpus: int | None = None

    def __post_init__(self) -> None:
        if self.num_cpus < 0 or self.num_gpus < 0:
            raise ConfigError(f"--cpus-per-job and --gpus-per-job must be >= 0 (got {self.num_cpus}, {self.num_gpus}).")
        if self.max_retries < 0:
            raise ConfigError(f"--max-retries must be >= 0 (got {self.max_retries}).")


def import_ray():
    """Import Ray with usage statistics off by default; a clear error when the extra is not installed."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError as error:
        raise RuntimeError(f"{INSTALL_HINT} ({error}).") from error
    return ray


@contextmanager
def ray_session(options: RayOptions) -> Iterator[Any]:
    """Ray initialised for the block: joined, started locally, or reused when already up."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    if options.address:
        ray.init(address=options.address)
    else:
        # address="local": a new instance even when RAY_ADDRESS or a running cluster's address file is around.
        ray.init(address="local", num_cpus=options.local_cpus, include_dashboard=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def failure_reason(error: BaseException, max_retries: int) -> str:
    """One line saying why a task produced no result."""
    ray = import_ray()
    if isinstance(error, ray.exceptions.RayTaskError):  # the function itself raised: not retried
        cause = error.cause if getattr(error, "cause", None) is not None else error
        text = str(cause).strip().splitlines()
        return f"{type(cause).__name__}: {text[-1] if text else ''}"
    text = str(error).strip().splitlines()
    return (
        f"{type(error).__name__} (worker or node lost; gave up after {max_retries} retries): {text[0] if text else ''}"
    )


def remote(fn: Callable[..., Any], options: RayOptions):
    """``fn`` as a Ray remote function with the options' resources and retry budget."""
    ray = import_ray()
    return ray.remote(fn).options(
        num_cpus=options.num_cpus, num_gpus=options.num_gpus, max_retries=options.max_retries, retry_exceptions=False
    )


def wait_all(
    refs: Sequence[Any],
    on_result: Callable[[int, Any], Any],
    on_error: Callable[[int, BaseException], Any],
    desc: str = "",
    progress: bool = True,
) -> list[Any]:
    """Collect ``refs`` as they finish (any order); returns ``on_result``/``on_error`` values in ``refs`` order."""
    from tqdm.auto import tqdm

    ray = import_ray()
    position = {ref: i for i, ref in enumerate(refs)}
    results: list[Any] = [None] * len(refs)
    pending = list(refs)
    with tqdm(total=len(refs), desc=desc, disable=not progress) as bar:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                i = position[ref]
                try:
                    value = ray.get(ref)
                except ray.exceptions.RayError as error:
                    results[i] = on_error(i, error)
                else:
                    results[i] = on_result(i, value)
                bar.update(1)
    return results


def map_tasks(
    fn: Callable[..., Any],
    arguments: Sequence[tuple],
    options: RayOptions,
    on_lost: Callable[[tuple, str], Any],
    desc: str = "",
    progress: bool = True,
) -> list[Any]:
    """``[fn(*args) for args in arguments]`` as Ray tasks; a task without a result gives ``on_lost(args, reason)``.

    Results come back in the order of ``arguments`` whatever order the tasks finished in.
    """
    with ray_session(options):
        task = remote(fn, options)
        refs = [task.remote(*args) for args in arguments]
        return wait_all(
            refs,
            on_result=lambda i, value: value,
            on_error=lambda i, error: on_lost(arguments[i], failure_reason(error, options.max_retries)),
            desc=desc,
            progress=progress,
        )
