"""Actor derivation: authenticated principal or anonymous, client IP through trusted proxies only."""

from types import SimpleNamespace

from django.test import RequestFactory, override_settings

from audit.actors import Actor, actor_from_request, client_ip


def request(remote="203.0.113.9", forwarded=None, user=None):
    extra = {"REMOTE_ADDR": remote}
    if forwarded:
        extra["HTTP_X_FORWARDED_FOR"] = forwarded
    req = RequestFactory().get("/", **extra)
    if user is not None:
        req.user = user
    return req


def test_forwarded_header_is_ignored_by_default():
    assert client_ip(request(forwarded="1.1.1.1")) == "203.0.113.9"


@override_settings(ELSA_TRUSTED_PROXY_COUNT=1)
def test_one_trusted_proxy_uses_the_address_it_appended():
    # The client forged "6.6.6.6"; our proxy appended the real peer "198.51.100.4".
    assert client_ip(request(remote="10.0.0.2", forwarded="6.6.6.6, 198.51.100.4")) == "198.51.100.4"


@override_settings(ELSA_TRUSTED_PROXY_COUNT=2)
def test_two_trusted_proxies_skip_both():
    assert client_ip(request(remote="10.0.0.2", forwarded="6.6.6.6, 198.51.100.4, 10.0.0.3")) == "198.51.100.4"


@override_settings(ELSA_TRUSTED_PROXY_COUNT=2)
def test_short_forwarded_header_falls_back_to_the_peer():
    assert client_ip(request(remote="10.0.0.2", forwarded="198.51.100.4")) == "10.0.0.2"


def test_anonymous_request_gives_an_anonymous_actor():
    actor = actor_from_request(request(user=SimpleNamespace(is_authenticated=False)))
    assert actor == Actor.anonymous("203.0.113.9")


def test_authenticated_principal_gives_its_type_id_and_name():
    principal = SimpleNamespace(is_authenticated=True, actor_type="application", actor_id="app-1", actor_name="billing")
    assert actor_from_request(request(user=principal)) == Actor(
        type="application", id="app-1", ip="203.0.113.9", name="billing"
    )
