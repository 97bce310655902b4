"""Executors: outbound calls to partner services with per-executor credentials, retries and a breaker."""
