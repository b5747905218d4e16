"""Gateway instances and their leases; reaping the calls of instances that died.

Every gateway process (each worker, on every host sharing the database)
registers a row in `gateway_instances` and renews its lease every third of
the lease. The ledger writes each admitted call as IN_FLIGHT under the
process's instance id, and completes the row when the call ends. A process
that dies without completing its rows (kill -9, a crash, a lost host) leaves
them IN_FLIGHT: any live process reaps them, as LOST, once the dead one's
lease has lapsed, or at once when it can see the process is gone (same host
and pid namespace, pid not running). Each process also reaps at start-up.

A LOST call's reservation is settled at its estimate: the upstream may have
served, and may bill, the call, so releasing the estimate could let a key
overspend. If a process that was only stalled (not dead) comes back, it
re-registers, and its calls' own completions overwrite LOST with how they
really ended (and settle their reservations at what they used).

Lease times come from the database's clock, so hosts whose clocks disagree
still agree on whose lease has lapsed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from llmgateway.server.state.ledger import IN_FLIGHT, LOST

if TYPE_CHECKING:
    from llmgateway.server.state.db import Database, Tx

logger = logging.getLogger(__name__)

DEFAULT_LEASE_SECONDS = 15.0
# Warnings about a failing renewal, at most this often.
_WARN_EVERY = 30.0
_NOW = {
    "sqlite": "(julianday('now') - 2440587.5) * 86400.0",
    "postgresql": "CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS DOUBLE PRECISION)",
}
# Calls in flight whose instance holds no lease (any more). The status is
# written out, not a parameter: a generic plan (PostgreSQL's
# plan_cache_mode=force_generic_plan, some poolers) cannot use the partial
# index on in-flight rows for `status = $1`, and would scan the whole ledger
# at every renewal of every process.
_ORPHANS = f"status = '{IN_FLIGHT}' AND instance_id NOT IN (SELECT id FROM gateway_instances)"  # noqa: S608  # constants


@dataclass(frozen=True, slots=True)
class Reaped:
    """What one reaping pass found."""

    instances: int
    calls: int
    reservations: int


def host_identity() -> str:
    """Who can judge this process alive by its pid: the same host, boot and
    pid namespace (containers on one host have separate pid namespaces)."""
    parts = [socket.gethostname()]
    with contextlib.suppress(OSError):
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip())
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    return "/".join(parts)


def process_start(pid: int) -> str:
    """When process `pid` started (clock ticks since boot), so a pid reused by a
    later process is not taken for the one that died; "" when unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else ""  # field 22 of proc(5), after pid and comm


def process_alive(pid: int, started: str) -> bool:
    """Whether the process `pid` that started at `started` still runs here."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        # No /proc: ask the kernel whether the pid exists at all.
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    fields = stat.rsplit(")", 1)[-1].split()
    if not fields or fields[0] in ("Z", "X"):  # a zombie has exited
        return False
    return not started or (len(fields) > 19 and fields[19] == started)


def database_now(tx: Tx) -> float:
    """The database's clock, in epoch seconds."""
    return float(tx.fetchall(f"SELECT {_NOW[tx.dialect]}")[0][0])


def reap(tx: Tx, own: str | None = None, host: str | None = None) -> Reaped:
    """Forget instances whose lease lapsed (or, on this host, whose process is
    gone), mark the calls in flight of instances that hold no lease LOST and
    settle their reservations at their estimate. `own`: the caller's instance,
    never reaped; `host`: the caller's host identity, for the pid check."""
    tx.lock("llmgateway-reaper")
    now = database_now(tx)
    dead = [
        instance
        for instance, instance_host, pid, started, expires in tx.fetchall(
            "SELECT id, host, pid, pid_start, lease_expires_at FROM gateway_instances"
        )
        if instance != own
        and (
            float(expires) < now
            or (host is not None and instance_host == host and not process_alive(pid, started))
        )
    ]
    for instance in dead:
        tx.execute("DELETE FROM gateway_instances WHERE id = ?", (instance,))
    # The estimate each reservation holds is what it settles at: leave it, mark it settled.
    reservations = tx.execute(
        "UPDATE reservations SET settled = 1 WHERE settled = 0 AND id IN "  # noqa: S608  # constants
        f"(SELECT reservation_id FROM usage_records WHERE {_ORPHANS})",
    )
    calls = tx.execute(
        f"UPDATE usage_records SET status = ? WHERE {_ORPHANS}",  # noqa: S608  # constants
        (LOST,),
    )
    return Reaped(instances=len(dead), calls=calls, reservations=reservations)


def _register(tx: Tx, instance: str, host: str, lease: float) -> None:
    now = database_now(tx)
    pid = os.getpid()
    tx.execute(
        "INSERT INTO gateway_instances (id, host, pid, pid_start, started_at, lease_expires_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (instance, host, pid, process_start(pid), now, now + lease),
    )


def _renew_and_reap(tx: Tx, instance: str, host: str, lease: float) -> tuple[bool, Reaped]:
    """Renew this instance's lease (registering it again if it was reaped
    meanwhile), then reap; whether the lease had to be taken anew."""
    renewed = tx.execute(
        "UPDATE gateway_instances SET lease_expires_at = ? WHERE id = ?",
        (database_now(tx) + lease, instance),
    )
    if not renewed:
        _register(tx, instance, host, lease)
    return not renewed, reap(tx, own=instance, host=host)


def _release(tx: Tx, instance: str) -> Reaped:
    """A clean stop: drop this instance's lease and reap what it left in flight
    (nothing, when every call's row was completed)."""
    tx.execute("DELETE FROM gateway_instances WHERE id = ?", (instance,))
    return reap(tx)


class InstanceLease:
    """This process's registration in `gateway_instances`: renewed in the
    background, reaping other instances' lost calls as it goes."""

    def __init__(self, db: Database, lease_seconds: float = DEFAULT_LEASE_SECONDS) -> None:
        self.id = uuid.uuid4().hex[:16]
        self.lease_seconds = lease_seconds
        self._db = db
        self._host = host_identity()
        self._task: asyncio.Task[None] | None = None
        self._last_warning = 0.0

    def register(self) -> Reaped:
        """Take the lease and reap what dead instances left (blocking: at start-up)."""

        def work(tx: Tx) -> Reaped:
            _register(tx, self.id, self._host, self.lease_seconds)
            return reap(tx, own=self.id, host=self._host)

        reaped = self._db.run_sync(work)
        _log_reaped(reaped, "at start-up")
        return reaped

    def start(self) -> None:
        """Renew the lease and reap every third of the lease, on the running loop."""
        self._task = asyncio.get_running_loop().create_task(self._renew_forever())

    async def renew(self) -> Reaped:
        """Renew the lease and reap once (what the background task does)."""
        retaken, reaped = await self._db.run(
            functools.partial(
                _renew_and_reap, instance=self.id, host=self._host, lease=self.lease_seconds
            )
        )
        if retaken:
            logger.warning(
                "this gateway process (instance %s) lost its lease: it did not renew it for "
                "%.1f s, so its calls in flight were marked LOST; those still running "
                "will record how they end",
                self.id,
                self.lease_seconds,
            )
        _log_reaped(reaped, "")
        return reaped

    async def close(self, *, release: bool, give_up: float | None = None) -> None:
        """Stop renewing; with `release` (every call's row is complete), give
        the lease up now rather than letting it lapse: by `give_up` (loop
        time) when given, and not at all once it has passed."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        left = None if give_up is None else give_up - asyncio.get_running_loop().time()
        if not release:
            return
        if left is not None and left <= 0:
            logger.warning(
                "no time left before the shutdown deadline to give up this process's lease; "
                "it lapses within %.0f s (every call's row is complete: nothing is reaped)",
                self.lease_seconds,
            )
            return
        try:
            reaped = await self._db.run(
                functools.partial(_release, instance=self.id),
                within=None if left is None else min(left, self._db.timeout),
            )
        except Exception:
            logger.exception(
                "could not give up this process's lease; others reap it within %.0f s",
                self.lease_seconds,
            )
            return
        _log_reaped(reaped, "at shutdown")

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                await self.renew()
            except Exception as exc:  # noqa: BLE001  # logged; the next round tries again
                now = time.monotonic()
                if now - self._last_warning >= _WARN_EVERY:
                    self._last_warning = now
                    logger.warning(
                        "could not renew this gateway process's lease (instance %s): %s; "
                        "other processes reap its calls in flight if it stays lapsed "
                        "for %.1f s",
                        self.id,
                        exc,
                        self.lease_seconds,
                    )


def _log_reaped(reaped: Reaped, when: str) -> None:
    suffix = f" ({when})" if when else ""
    if reaped.calls:
        logger.warning(
            "marked %d call(s) LOST that gateway processes which stopped without finishing "
            "them left in flight%s; %d reservation(s) settled at their estimate, as the "
            "upstream may bill those calls",
            reaped.calls,
            suffix,
            reaped.reservations,
        )
    if reaped.instances:
        logger.info(
            "forgot %d gateway process(es) whose lease lapsed or whose process is gone%s",
            reaped.instances,
            suffix,
        )
