"""kopf on the Raft leader only: started when this replica becomes leader, stopped when it
stops being one.

kopf's own peering is a soft pause with no per-object locks and a failover of about a minute;
Raft leadership fails over in seconds, so the operator follows it instead. Each operator run
is ``kopf.operator`` in a thread of its own with its own event loop (kopf then leaves the
process's signals alone), plus the status mirror on that loop; stopping sets kopf's stop flag
and waits a bounded time for the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import kopf

from pipeorch.controlplane.service import ControlPlane
from pipeorch.k8s import manifests as m
from pipeorch.k8s.api import Kube, load_configuration
from pipeorch.k8s.mirror import Mirror
from pipeorch.k8s.operator import Context, registry
from pipeorch.settings import KubernetesSettings

log = logging.getLogger(__name__)
#: How often leadership is checked besides the Raft state-change callback.
CHECK_PERIOD = 0.2
#: How long a stopping operator may take before we go on without it (it is a daemon thread,
#: and its mirror writes nothing once this replica no longer leads).
STOP_TIMEOUT = 5.0


class LeaderOperator:
    def __init__(
        self,
        settings: KubernetesSettings,
        control: ControlPlane,
        is_leader: Callable[[], bool],
    ) -> None:
        self.settings = settings
        self.control = control
        self.is_leader = is_leader
        # Credentials are loaded once, at start-up: a bad kubeconfig fails the process there.
        self.login = load_configuration(settings.kubeconfig)
        # Made once, here: the client's first ApiClient loads all its models (over a second),
        # which a new leader must not spend on its way to taking over.
        self.kube = Kube(self.login)
        self.pod = m.WorkerPodSettings(
            image=settings.worker_image,
            control_plane=settings.control_plane_service,
            store_endpoint=settings.store_endpoint,
            store_secret=settings.store_secret,
            store_bucket=settings.store_bucket,
        )
        self._thread: threading.Thread | None = None
        #: Runs told to stop that had not stopped within STOP_TIMEOUT.
        self._stopping: list[threading.Thread] = []
        self._stop: threading.Event | None = None
        self._mirror: Mirror | None = None
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self.runs = 0

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wake_threadsafe(self) -> None:
        """Where Raft ticks, on a state change: leadership may have moved, look now."""
        self._loop.call_soon_threadsafe(self._wake.set)

    def on_apply(self) -> None:
        """Where Raft ticks, after every applied batch: wake the mirror of the running operator,
        and the supervisor (a new leader's first entry is applied as soon as it leads)."""
        self._loop.call_soon_threadsafe(self._wake.set)
        mirror = self._mirror
        if mirror is not None:
            mirror.notify_threadsafe()

    async def supervise(self) -> None:
        """Start and stop the operator with leadership, until cancelled."""
        try:
            while True:
                leading = self.is_leader()
                if leading and not self.running and not self._lingering():
                    self.start()
                elif not leading and self._thread is not None:
                    await asyncio.to_thread(self.stop)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), CHECK_PERIOD)
                self._wake.clear()
        finally:
            await asyncio.to_thread(self.stop)
            self.kube.close()

    def start(self) -> None:
        self.runs += 1
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(self._stop,), name=f"operator-{self.runs}", daemon=True
        )
        log.info("leader: starting the operator (run %d)", self.runs)
        self._thread.start()

    def stop(self) -> None:
        thread, stop = self._thread, self._stop
        if thread is None or stop is None:
            return
        started = time.monotonic()
        stop.set()
        thread.join(STOP_TIMEOUT)
        if thread.is_alive():
            # It stops at its next look at the flag (kopf may be inside its first listing).
            # Until then no new run starts here: two operators in one process would both act.
            log.warning("operator did not stop within %.0fs; going on without it", STOP_TIMEOUT)
            self._stopping.append(thread)
        else:
            log.info("operator stopped in %.2fs", time.monotonic() - started)
        self._thread = self._stop = None

    def _lingering(self) -> bool:
        self._stopping = [t for t in self._stopping if t.is_alive()]
        return bool(self._stopping)

    def _run(self, stop: threading.Event) -> None:
        try:
            asyncio.run(self._main(stop))
        except Exception:
            log.exception("operator run ended with an error")

    async def _main(self, stop: threading.Event) -> None:
        kube = self.kube
        mirror = Mirror(
            self.control,
            kube,
            self.settings.mirror_period,
            self.is_leader,
            namespace=self.settings.namespace,
        )
        self._mirror = mirror
        ctx = Context(self.control, kube, mirror, self.pod, self.login)
        mirroring = asyncio.create_task(mirror.run())
        namespace = self.settings.namespace
        options: dict[str, Any] = (
            {"namespaces": [namespace]} if namespace else {"clusterwide": True}
        )
        try:
            await kopf.operator(
                registry=registry(),
                standalone=True,
                stop_flag=stop,
                memo=kopf.Memo(ctx=ctx),
                **options,
            )
        finally:
            self._mirror = None
            mirroring.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await mirroring
