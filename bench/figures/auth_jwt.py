"""Figure auth_jwt: GET identity/me with a bearer JWT vs anonymous /health/live on the same server."""

import json
import secrets
import urllib.request

from bench.figures.auth_apikey import interleaved_ratio


def measure(h) -> dict:
    from audit.actors import Actor
    from identity.services import user_create

    password = secrets.token_urlsafe(24)
    user_create(
        username="bench-jwt", password=password, roles=["admin"], actor=Actor.system("bench"), caller_permissions=None
    )
    request = urllib.request.Request(
        f"{h.base_url}/elsa/api/identity/login",
        data=json.dumps({"username": "bench-jwt", "password": password}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - the local bench server
        token = json.loads(response.read())["access_token"]
    return interleaved_ratio(h, "auth_jwt", {"Authorization": f"Bearer {token}"}, "GET identity/me, Bearer JWT")
