"""Figure auth_apikey: GET identity/me with an API key vs anonymous /health/live on the same server."""

from bench.harness import figure

ROUNDS = 3
SECONDS = 3.0


def interleaved_ratio(h, name: str, headers: dict, note: str) -> dict:
    """Alternate /health/live and identity/me runs, so load from elsewhere on the machine hits both alike."""
    me = [("GET", "/elsa/api/identity/me", headers, "")]
    h.http_rps_requests(me, duration=2)  # warm the verification caches of every worker
    health_rps, me_rps = [], []
    for _ in range(ROUNDS):
        health_rps.append(h.http_rps("/health/live", duration=SECONDS))
        result = h.http_rps_requests(me, duration=SECONDS)
        if result["non_2xx"]:
            raise RuntimeError(f"{result['non_2xx']} of {result['total']} {name} requests failed")
        me_rps.append(result["rps"])
    value = sum(me_rps) / ROUNDS
    baseline = sum(health_rps) / ROUNDS
    return figure(name, value, baseline, "req/s", f"{note}; interleaved with /health/live, {ROUNDS}x{SECONDS:.0f}s")


def measure(h) -> dict:
    from audit.actors import Actor
    from identity.services import application_create

    _, _, api_key = application_create(
        name="bench-apikey", roles=["admin"], actor=Actor.system("bench"), caller_permissions=None
    )
    return interleaved_ratio(h, "auth_apikey", {"Authorization": f"ApiKey {api_key}"}, "GET identity/me, ApiKey")
