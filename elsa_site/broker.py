"""kombu's Redis transport with one synchronous Redis client per channel instead of one per command.

kombu's Redis channel builds a new `redis.Redis` client (its response-callback table included) for
every publish, acknowledgement and queue command, on top of the channel's shared connection pool:
measured here, about a quarter of the CPU of a Celery publish, which every workflow start and every
resume pays. A redis-py client is thread-safe and holds no connection of its own (each command
borrows one from the pool), so one per channel serves every command. It is rebuilt whenever the
channel replaces its pool (after a fork, kombu disconnects and drops the pools).

Used for `redis://` broker URLs (settings: CELERY_BROKER_TRANSPORT); everything else is kombu's.
"""

from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    _sync_client = None

    def _create_client(self, asynchronous=False):
        if asynchronous:
            return super()._create_client(asynchronous=True)
        client = self._sync_client
        if client is None or client.connection_pool is not self.pool:
            client = self._sync_client = super()._create_client()
        return client


class Transport(kombu_redis.Transport):
    Channel = Channel
