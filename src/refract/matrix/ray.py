"""Ray executor: one Ray task per model on an existing cluster (``RAY_ADDRESS``) or a local one.

Each task runs :func:`refract.matrix.worker.run_job` for one model (so the model loads once
and its reference results are shared by its candidates), in a fresh worker process
(``max_calls=1``: the llama.cpp state of one model never lingers into the next), with the
requested ``num_cpus`` / ``num_gpus``. A worker that dies (segfault, out-of-memory kill, lost
node) is retried by Ray up to ``max_retries`` times; after that the model's cells fail with
Ray's message. The task returns its events (the reports as JSON bytes, exactly what the
local executor's pipe carries), and the driver writes them as the local executor does.

Needs the ``ray`` extra (``pip install 'refract[ray]'``) on the driver and every worker, and
the model paths readable on the workers (shared storage); a model a worker cannot read
fails that model's cells with a message naming the worker host.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

__all__ = ["RayExecutor", "ray_task"]

Handle = Callable[[int, dict[str, Any]], None]
_FORWARDED_ENV_PREFIXES = ("REFRACT_", "OMP_", "GGML_", "LLAMA_")


def ray_task(job: dict[str, Any]) -> bytes:
    """What one Ray task runs: every event of one model, as one JSON array (bytes)."""
    from refract.matrix.worker import run_job
    from refract.report.io import dumps_report

    events: list[dict[str, Any]] = []
    run_job(job, events.append)
    return dumps_report({"events": events}, indent=False)


class RayExecutor:
    name = "ray"

    def __init__(
        self,
        *,
        num_cpus: float = 1.0,
        num_gpus: float = 0.0,
        max_retries: int = 2,
        address: str | None = None,
        init_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.num_cpus = num_cpus
        self.num_gpus = num_gpus
        self.max_retries = max_retries
        self.address = address
        self.init_kwargs = dict(init_kwargs or {})

    def check(self) -> None:
        """Ray is importable (else a one-line usage error naming the extra)."""
        from refract.errors import UsageError

        try:
            import ray  # noqa: F401
        except ImportError:
            raise UsageError("--executor ray needs Ray: pip install 'refract[ray]'") from None

    def _env(self) -> dict[str, str]:
        return {k: v for k, v in os.environ.items() if k.startswith(_FORWARDED_ENV_PREFIXES)}

    def run(self, jobs: list[dict[str, Any]], handle: Handle) -> None:
        import orjson
        import ray
        from ray.exceptions import RayError

        self.check()
        started = False
        if not ray.is_initialized():
            address = self.address or os.environ.get("RAY_ADDRESS") or None
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            kwargs.update(self.init_kwargs)
            ray.init(address=address, **kwargs)
            started = True
        remote = ray.remote(max_calls=1)(ray_task).options(
            num_cpus=self.num_cpus, num_gpus=self.num_gpus, max_retries=self.max_retries,
            retry_exceptions=False, runtime_env={"env_vars": self._env()},
        )
        refs: dict[Any, int] = {}
        try:
            for index, job in enumerate(jobs):
                refs[remote.remote(job)] = index
                handle(index, {"type": "submitted"})
            pending = list(refs)
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    index = refs[ref]
                    try:
                        payload = ray.get(ref)
                    except RayError as exc:
                        handle(index, {"type": "crash", "message": _ray_message(exc),
                                       "stderr_tail": []})
                        continue
                    for event in orjson.loads(payload)["events"]:
                        handle(index, event)
        except BaseException:
            for ref in refs:
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # already finished or gone
                    pass
            raise
        finally:
            if started:
                ray.shutdown()


def _ray_message(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    head = type(exc).__name__
    detail = next((ln for ln in lines if "died" in ln or "killed" in ln or "Error" in ln),
                  lines[0] if lines else "")
    return f"Ray task failed ({head}): {detail}"[:500]
