"""Django's PostgreSQL backend whose health check asks the socket before it asks the server.

With CONN_HEALTH_CHECKS (on in the settings), Django checks a reused connection before the first
query of every request and of every engine task: Django's check is a `SELECT 1`, one round trip
each time, on every resume and every workflow run. A connection the server has closed (a restart,
a failover, pg_terminate_backend, an idle timeout) has a socket that reads end-of-file or the
server's last error: this check looks at the socket without blocking and sends `SELECT 1` only
when something is waiting there. A sound, idle connection has nothing to read and is used as is.
A network path that died without a word is not seen by either check before a query: Django's
`SELECT 1` would wait for TCP to give up, this one lets the query fail, and Django then drops the
connection at the end of that request or task (its `errors_occurred` check), as it always has.
"""

import select

from django.db.backends.postgresql import base
from psycopg.pq import TransactionStatus


class DatabaseWrapper(base.DatabaseWrapper):
    def is_usable(self) -> bool:
        raw = self.connection
        if raw is None or raw.closed or raw.broken:
            return False
        if raw.info.transaction_status != TransactionStatus.IDLE:
            # Left inside a transaction (an aborted one fails SELECT 1): Django's own check decides.
            return super().is_usable()
        try:
            readable, _, _ = select.select([raw.fileno()], [], [], 0)
        except (OSError, ValueError):  # the descriptor is gone
            return False
        if not readable:
            return True
        # End-of-file, an error sent before closing, or a message nobody asked for: ask the server.
        return super().is_usable()
