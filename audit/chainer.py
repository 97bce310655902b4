"""The per-process chainer: a thread that chains pending audit events right after commits.

audit_record() writes an event as pending inside the action's transaction; when that transaction
commits, its process wakes this thread, which runs audit_seal(): wait for the chain lock, chain
every committed pending event, commit. The request or task that recorded the event does not wait
for the chain lock or for the chaining commit, and while one chaining commit is being flushed the
events of every other transaction accumulate, so the next one chains them all at once.

Guarantees: an event committed while the thread is chaining sets the wake-up flag again, so it is
chained by the next pass (never left behind in a live process). A normally exiting process chains
what it recorded before it exits (atexit). A process killed between a commit and its chaining leaves
the events pending but stored: the beat task audit.seal chains them (ELSA_AUDIT_SEAL_INTERVAL_SECONDS),
as does any other process's next pass.
"""

import atexit
import logging
import os
import threading
import time

from django.db import connection

logger = logging.getLogger("elsa.audit")

# After this long without work the thread closes its database connection (reopened on demand).
IDLE_SECONDS = 1.0
# Once woken, the thread lets this much time pass before chaining, so that the commits of that
# moment (of this process and of every other one) are chained in one pass: one round trip and one
# short lock instead of one per commit. Events reach the chain this much later. 50 ms rather than
# 10: 4 writer processes appended 1,400-1,900 events/s against 1,290-1,480 in alternating runs,
# fewer passes (each a round trip, a lock queue and a function call) chaining more events each.
GATHER_SECONDS = 0.05
RETRY_SECONDS = 1.0


class Chainer:
    def __init__(self) -> None:
        self._start_lock = threading.Lock()
        self._pid: int | None = None
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def notify(self) -> None:
        """Ask for a pass: the events committed so far will be chained shortly."""
        if self._pid != os.getpid():
            self._start()
        self._wake.set()

    def _start(self) -> None:
        with self._start_lock:
            if self._pid == os.getpid():
                return
            # First use in this process, or a forked child (threads do not survive fork).
            self._wake = threading.Event()
            self._stopping = False
            thread = threading.Thread(target=self._run, args=(self._wake,), name="audit-chainer", daemon=True)
            self._pid = os.getpid()
            self._thread = thread
            thread.start()

    def _run(self, wake: threading.Event) -> None:
        from audit.services import audit_seal

        while not self._stopping:
            if not wake.wait(IDLE_SECONDS):
                connection.close()  # idle: hold no database connection
                wake.wait()
            if self._stopping:
                break
            time.sleep(GATHER_SECONDS)
            wake.clear()
            try:
                audit_seal(flush=False)
            except Exception:  # noqa: BLE001 - the actions committed; their events are stored
                logger.exception("audit events could not be chained after commit; the periodic sweep will retry")
                connection.close()  # a broken connection is replaced on the next pass
                wake.wait(RETRY_SECONDS)
        connection.close()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop this process's thread and wait until it has closed its connection (a test database
        cannot be dropped while it is connected); the next notify starts a new one."""
        if self._pid == os.getpid() and self._thread is not None:
            self._stopping = True
            self._wake.set()
            self._thread.join(timeout)
            self._pid = None
            self._thread = None


chainer = Chainer()


@atexit.register
def _chain_before_exit() -> None:
    # A process that exits normally chains what it recorded, rather than leaving it to the sweep.
    if chainer._pid != os.getpid():
        return
    from audit.services import audit_seal

    try:
        audit_seal()
    except Exception:  # noqa: BLE001 - at exit; the sweep will chain them
        logger.exception("audit events could not be chained at exit; the periodic sweep will chain them")
