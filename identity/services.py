"""Writes of the identity app: users, roles, applications, keys, logins and tokens, each audited."""

import secrets
from datetime import datetime

from django.contrib.auth.hashers import check_password, make_password
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.actors import Actor
from audit.services import audit_record
from elsa_site.errors import Conflict, DomainError, InvalidInput, Unavailable
from identity import config_file, invalidation, tokens
from identity.apikeys import api_key_generate
from identity.models import ApiKey, Application, Role, User, permissions_of_roles
from identity.permissions import known_permissions

FAILURE = "failure"


class InvalidCredentials(DomainError):
    """Wrong username or password, or a refresh token that is invalid, expired or already used."""

    http_status = 401
    code = "authentication_failed"


class InvalidClient(DomainError):
    """Client authentication failed at the token endpoint (RFC 6749 `invalid_client`)."""

    http_status = 401
    code = "invalid_client"


class ExceedsOwnPermissions(DomainError):
    """A caller without `*` granting permissions it lacks, or changing a principal or role holding them."""

    http_status = 403
    code = "exceeds_own_permissions"


def _require_held(caller_permissions: frozenset[str] | None, permissions, message: str) -> None:
    """Refuse (403) unless the caller holds `*` or every one of `permissions`.

    Whoever may grant a permission, or reset the password or API key of a principal holding it, in
    effect holds it: so a caller grants, and takes over, only what it holds itself. None is the
    trusted command line.
    """
    if not caller_holds(caller_permissions, permissions):
        raise ExceedsOwnPermissions(message)


def caller_holds(caller_permissions: frozenset[str] | None, permissions) -> bool:
    """Whether the caller holds `*` or every one of `permissions` (None: the trusted command line)."""
    return caller_permissions is None or "*" in caller_permissions or set(permissions or []) <= caller_permissions


def _require_wildcard_for(caller_permissions: frozenset[str] | None, permissions, kind: str) -> None:
    """A user (superusers included), application or role holding `*` is changed only by a `*` caller."""
    message = f"Only a caller holding '*' can change or delete a {kind} holding '*'."
    _require_held(caller_permissions, set(permissions or []) & {"*"}, message)


_GRANT_REFUSED = "You cannot grant permissions you do not hold yourself."
_TAKEOVER_REFUSED = "You cannot replace the credentials of this {}: it holds permissions you do not hold."


# --- Failed attempts ------------------------------------------------------------------------


def api_key_failure_record(*, ip: str | None, key_id: str, reason: str = "invalid_api_key") -> None:
    """Audit a refused API key; only its public key id (if well-formed) is recorded, never the key."""
    with transaction.atomic():
        audit_record(
            event_type="identity.apikey.used-failed",
            action="authenticate",
            result=FAILURE,
            resource=("api-key", key_id) if key_id else None,
            actor=Actor.anonymous(ip),
            context={"reason": reason},
        )


def login_failure_record(*, actor: Actor, username: str, reason: str, event_type: str = "identity.login") -> None:
    # Its own transaction: the failed request raises afterwards, and the event must survive that.
    with transaction.atomic():
        audit_record(
            event_type=event_type,
            action="authenticate",
            result=FAILURE,
            resource=("user", username[:150]),
            actor=actor,
            context={"reason": reason},
        )


def client_failure_record(*, actor: Actor, client_id: str, reason: str) -> None:
    with transaction.atomic():
        audit_record(
            event_type="identity.token",
            action="client_credentials",
            result=FAILURE,
            resource=("application", client_id[:64]),
            actor=actor,
            context={"reason": reason},
        )


# --- Login, refresh, logout, client credentials --------------------------------------------


def _subject_of_user(user: User) -> tokens.TokenSubject:
    return tokens.TokenSubject("user", str(user.pk), user.username, user.permissions)


def _authenticate_user(username: str, password: str) -> tokens.TokenSubject | None:
    user = User.objects.filter(username=username).first()
    if user is None:
        subject = config_file.config_user_authenticate(username, password)
        if subject is None:
            # Hash anyway so that an unknown name takes as long as a wrong password.
            make_password(password)
        return subject
    if not check_password(password, user.password) or not user.is_active:
        return None
    return _subject_of_user(user)


def user_login(*, username: str, password: str, actor: Actor) -> dict:
    """A token pair for valid credentials; InvalidCredentials (401) and an audited failure otherwise."""
    subject = _authenticate_user(username, password)
    if subject is None:
        login_failure_record(actor=actor, username=username, reason="invalid_credentials")
        raise InvalidCredentials("Invalid username or password.")
    with transaction.atomic():
        pair = tokens.token_pair_issue(subject)
        audit_record(
            event_type="identity.login",
            action="authenticate",
            resource=("user", subject.actor_id),
            actor=Actor("user", subject.actor_id, actor.ip, subject.actor_name),
        )
    return pair


def _current_subject(actor_type: str, actor_id: str) -> tokens.TokenSubject | None:
    """The token subject as it is now (permissions re-read), or None if disabled or gone."""
    if actor_id.startswith(config_file.ID_PREFIX):
        name = actor_id.removeprefix(config_file.ID_PREFIX)
        config = config_file.usable_identity_file()
        if actor_type == "user" and name in config.users:
            return tokens.TokenSubject("user", actor_id, name, config_file.role_permissions(config.users[name].roles))
        return None
    if actor_type != "user" or not actor_id.isdigit():
        return None
    user = User.objects.filter(pk=int(actor_id), is_active=True).first()
    return _subject_of_user(user) if user else None


def token_refresh(*, refresh_token: str, actor: Actor) -> dict:
    """Rotate: blacklist the presented refresh token and issue a new pair.

    A reused refresh token is 401 and revokes its whole family (every token rotated from the same
    login), since either the user or a thief holds a copy: both must sign in again.
    """
    payload = tokens.refresh_token_verify(refresh_token)
    if payload is None:
        login_failure_record(actor=actor, username="", reason="invalid_refresh_token", event_type="identity.refresh")
        raise InvalidCredentials("The refresh token is invalid, expired or already used.")
    actor_type, actor_id = tokens.refresh_token_subject(payload)
    family = tokens.refresh_token_family(payload)
    pair = None
    disabled = False

    def refused(reason: str) -> None:
        # The token's whole family is revoked, and why is recorded, in the transaction below.
        audit_record(
            event_type="identity.refresh",
            action="rotate",
            result=FAILURE,
            resource=(actor_type or "user", actor_id),
            actor=actor,
            context={"reason": reason, "revoked": tokens.token_family_revoke(family)},
        )

    with transaction.atomic():
        # One transaction from the blacklist row to the new pair: a concurrent reuse waits for it,
        # then revokes the family including the pair issued here.
        if tokens.refresh_token_use(payload):
            subject = _current_subject(actor_type, actor_id)
            if subject is None:
                # Committed before the 401: the family stays revoked even if the account is enabled again.
                disabled = True
                refused("account_disabled")
            else:
                pair = tokens.token_pair_issue(subject, family=family)
                audit_record(
                    event_type="identity.refresh",
                    action="rotate",
                    resource=(actor_type or "user", actor_id),
                    actor=Actor(actor_type or "user", actor_id, actor.ip, subject.actor_name),
                )
        else:
            refused("reuse_detected")
    if disabled:
        raise InvalidCredentials("The account is disabled.")
    if pair is None:
        raise InvalidCredentials("The refresh token is invalid, expired or already used.")
    return pair


@transaction.atomic
def user_logout(*, refresh_token: str, actor: Actor) -> None:
    """Revoke the refresh token and every token rotated from the same login."""
    payload = tokens.refresh_token_verify(refresh_token)
    if payload is None:
        raise InvalidInput("The refresh token is invalid or expired.", code="invalid_token")
    # A principal may only revoke its own refresh tokens.
    if tokens.refresh_token_subject(payload) != (actor.type, actor.id):
        raise InvalidInput("The refresh token is invalid or expired.", code="invalid_token")
    tokens.refresh_token_use(payload)
    tokens.token_family_revoke(tokens.refresh_token_family(payload))
    audit_record(event_type="identity.logout", action="revoke", resource=("user", actor.id), actor=actor)


def client_credentials_token(*, client_id: str, client_secret: str, actor: Actor) -> dict:
    """An access token (no refresh token) carrying the application's permissions."""
    subject = None
    app = Application.objects.filter(client_id=client_id).first()
    if app is not None:
        # Django's password hasher: a slow KDF, since client secrets are checked only at token time.
        if check_password(client_secret, app.client_secret_hash) and app.is_usable():
            subject = tokens.TokenSubject(
                "application", str(app.pk), app.name, frozenset(p for r in app.roles.all() for p in r.permissions)
            )
    else:
        subject = config_file.config_application_authenticate(client_id, client_secret)
        if subject is None:
            make_password(client_secret)
    if subject is None:
        client_failure_record(actor=actor, client_id=client_id, reason="invalid_client")
        raise InvalidClient("Client authentication failed.")
    with transaction.atomic():
        access = tokens.access_token_issue(subject)
        audit_record(
            event_type="identity.token",
            action="client_credentials",
            resource=("application", subject.actor_id),
            actor=Actor("application", subject.actor_id, actor.ip, subject.actor_name),
        )
    return {
        "access_token": str(access),
        "token_type": "Bearer",
        "expires_in": int(tokens.jwt_settings.ACCESS_TOKEN_LIFETIME.total_seconds()),
    }


# --- Roles ------------------------------------------------------------------------------------


def _clean_permissions(permissions) -> list[str]:
    if not isinstance(permissions, list | tuple) or not all(isinstance(p, str) and p for p in permissions):
        raise InvalidInput("permissions must be a list of permission strings.")
    unknown = sorted(set(permissions) - set(known_permissions()))
    if unknown:
        raise InvalidInput(f"Unknown permission strings: {', '.join(unknown)}.")
    return sorted(set(permissions))


def _unique_name(model, field: str, value: str, exclude_pk=None) -> None:
    qs = model.objects.filter(**{field: value})
    if exclude_pk is not None:
        qs = qs.exclude(pk=exclude_pk)
    if qs.exists():
        raise Conflict(f"A {model._meta.verbose_name} named {value!r} already exists.")


@transaction.atomic
def role_create(
    *,
    name: str,
    permissions: list[str],
    description: str = "",
    actor: Actor,
    caller_permissions: frozenset[str] | None,
) -> Role:
    _unique_name(Role, "name", name)
    permissions = _clean_permissions(permissions)
    _require_held(caller_permissions, permissions, _GRANT_REFUSED)
    role = Role.objects.create(name=name, permissions=permissions, description=description)
    audit_record(event_type="identity.role.created", action="create", resource=("role", str(role.pk)), actor=actor)
    return role


@transaction.atomic
def role_update(*, role: Role, actor: Actor, caller_permissions: frozenset[str] | None, **changes) -> Role:
    _require_wildcard_for(caller_permissions, role.permissions, "role")
    changed: list[str] = []
    if "name" in changes and changes["name"] != role.name:
        _unique_name(Role, "name", changes["name"], exclude_pk=role.pk)
        role.name = changes["name"]
        changed.append("name")
    if "permissions" in changes:
        previous = set(role.permissions or [])
        role.permissions = _clean_permissions(changes["permissions"])
        _require_held(caller_permissions, set(role.permissions) - previous, _GRANT_REFUSED)
        changed.append("permissions")
    if "description" in changes:
        role.description = changes["description"]
        changed.append("description")
    role.save()
    # Cached API-key principals carry role permissions; JWTs get them at their next refresh.
    invalidation.publish("roles")
    audit_record(
        event_type="identity.role.updated",
        action="update",
        resource=("role", str(role.pk)),
        actor=actor,
        context={"fields": changed},
    )
    return role


@transaction.atomic
def role_delete(*, role: Role, actor: Actor, caller_permissions: frozenset[str] | None) -> None:
    if role.name == "admin":
        raise Conflict("The built-in role 'admin' cannot be deleted.")
    _require_wildcard_for(caller_permissions, role.permissions, "role")
    pk = role.pk
    role.delete()
    invalidation.publish("roles")
    audit_record(event_type="identity.role.deleted", action="delete", resource=("role", str(pk)), actor=actor)


def _roles_by_name(names, caller_permissions: frozenset[str] | None, current=()) -> list[Role]:
    """The roles named; 403 if one added to `current` carries a permission the caller does not hold."""
    names = list(dict.fromkeys(names or []))
    roles = list(Role.objects.filter(name__in=names))
    missing = sorted(set(names) - {r.name for r in roles})
    if missing:
        raise InvalidInput(f"Unknown roles: {', '.join(missing)}.")
    kept = {role.pk for role in current}
    _require_held(caller_permissions, permissions_of_roles(r for r in roles if r.pk not in kept), _GRANT_REFUSED)
    return roles


# --- Users ------------------------------------------------------------------------------------


def _check_password_strength(password: str, user: User | None = None) -> None:
    try:
        validate_password(password, user)
    except ValidationError as exc:
        raise InvalidInput("The password is too weak.", details={"password": list(exc.messages)}) from exc


@transaction.atomic
def _refuse_file_name(kind: str, name: str) -> None:
    """409 when the identity file defines a user or application of this name (each identity lives in
    one place); 503 when the file cannot be read, so the name cannot be checked against it."""
    try:
        defined = config_file.file_defines(kind, name)
    except config_file.IdentityFileError as exc:
        raise Unavailable(
            f"ELSA_IDENTITY_FILE cannot be read, so the {kind} name cannot be checked against it; fix the file first.",
            code="identity_file_unavailable",
        ) from exc
    if defined:
        raise Conflict(f"A {kind} named {name!r} is defined in the identity file.")


def user_create(
    *,
    username: str,
    password: str,
    email: str = "",
    roles: list[str] | None = None,
    actor: Actor,
    caller_permissions: frozenset[str] | None,
) -> User:
    _unique_name(User, "username", username)
    _refuse_file_name("user", username)
    user = User(username=username, email=email)
    _check_password_strength(password, user)
    user.set_password(password)
    user.save()
    user.roles.set(_roles_by_name(roles, caller_permissions))
    invalidation.publish(f"user:{user.pk}")
    audit_record(event_type="identity.user.created", action="create", resource=("user", str(user.pk)), actor=actor)
    return user


@transaction.atomic
def user_update(*, user: User, actor: Actor, caller_permissions: frozenset[str] | None, **changes) -> User:
    _require_wildcard_for(caller_permissions, user.permissions, "user")
    if "password" in changes:
        # Setting a password is signing in as that user: only over permissions the caller holds.
        _require_held(caller_permissions, user.permissions, _TAKEOVER_REFUSED.format("user"))
    changed: list[str] = []
    for field in ("email", "is_active", "first_name", "last_name"):
        if field in changes:
            setattr(user, field, changes[field])
            changed.append(field)
    if "password" in changes:
        _check_password_strength(changes["password"], user)
        user.set_password(changes["password"])
        # A stolen refresh token must not outlive a password reset (access tokens run out within the hour).
        tokens.user_refresh_tokens_revoke(user.pk)
        changed.append("password")
    user.save()
    if "roles" in changes:
        user.roles.set(_roles_by_name(changes["roles"], caller_permissions, current=user.roles.all()))
        changed.append("roles")
    # A disabled user's access tokens are refused in every process within a second.
    invalidation.publish(f"user:{user.pk}")
    audit_record(
        event_type="identity.user.updated",
        action="update",
        resource=("user", str(user.pk)),
        actor=actor,
        context={"fields": changed},
    )
    return user


@transaction.atomic
def user_delete(*, user: User, actor: Actor, caller_permissions: frozenset[str] | None) -> None:
    _require_wildcard_for(caller_permissions, user.permissions, "user")
    pk = user.pk
    user.delete()
    invalidation.publish(f"user:{pk}")
    audit_record(event_type="identity.user.deleted", action="delete", resource=("user", str(pk)), actor=actor)


# --- Applications -----------------------------------------------------------------------------


def _application_permissions(application: Application) -> frozenset[str]:
    return permissions_of_roles(application.roles.all())


def _new_api_key(application: Application) -> str:
    new = api_key_generate()
    ApiKey.objects.create(application=application, key_id=new.key_id, salt=new.salt, key_hash=new.key_hash)
    return new.plaintext


@transaction.atomic
def application_create(
    *,
    name: str,
    roles: list[str] | None = None,
    expires_at: datetime | None = None,
    actor: Actor,
    caller_permissions: frozenset[str] | None,
) -> tuple[Application, str, str]:
    """(application, client_secret, api_key): the two secrets exist only in this return value."""
    _unique_name(Application, "name", name)
    _refuse_file_name("application", name)
    client_secret = secrets.token_urlsafe(32)
    try:
        with transaction.atomic():
            application = Application.objects.create(
                name=name,
                client_id=f"app_{secrets.token_hex(12)}",
                client_secret_hash=make_password(client_secret),
                expires_at=expires_at,
            )
    except IntegrityError as exc:
        raise Conflict(f"An application named {name!r} already exists.") from exc
    application.roles.set(_roles_by_name(roles, caller_permissions))
    api_key = _new_api_key(application)
    audit_record(
        event_type="identity.application.created",
        action="create",
        resource=("application", str(application.pk)),
        actor=actor,
    )
    return application, client_secret, api_key


@transaction.atomic
def application_rotate(
    *,
    application: Application,
    old_key_valid_until: datetime | None = None,
    rotate_client_secret: bool = False,
    actor: Actor,
    caller_permissions: frozenset[str] | None,
) -> tuple[Application, str, str | None]:
    """A new API key; the old keys stop now, or at `old_key_valid_until` (a grace period)."""
    # The new API key is returned to the caller: rotating is taking the application over.
    _require_held(caller_permissions, _application_permissions(application), _TAKEOVER_REFUSED.format("application"))
    now = timezone.now()
    if old_key_valid_until is not None and old_key_valid_until <= now:
        old_key_valid_until = None
    old = ApiKey.objects.filter(application=application, revoked_at__isnull=True)
    if old_key_valid_until is None:
        old.update(revoked_at=now)
    else:
        # Keep an earlier expiry if one was already set.
        for key in old:
            if key.expires_at is None or key.expires_at > old_key_valid_until:
                key.expires_at = old_key_valid_until
                key.save(update_fields=["expires_at"])
    api_key = _new_api_key(application)
    client_secret = None
    if rotate_client_secret:
        client_secret = secrets.token_urlsafe(32)
        application.client_secret_hash = make_password(client_secret)
        application.save(update_fields=["client_secret_hash"])
    invalidation.publish(f"application:{application.pk}")
    audit_record(
        event_type="identity.application.rotated",
        action="rotate",
        resource=("application", str(application.pk)),
        actor=actor,
        context={
            "grace_until": old_key_valid_until.isoformat() if old_key_valid_until else None,
            "client_secret_rotated": rotate_client_secret,
        },
    )
    return application, api_key, client_secret


@transaction.atomic
def application_set_enabled(
    *, application: Application, enabled: bool, actor: Actor, caller_permissions: frozenset[str] | None
) -> Application:
    _require_wildcard_for(caller_permissions, _application_permissions(application), "application")
    application.enabled = enabled
    application.save(update_fields=["enabled"])
    # Refused on the next request here and within a second in every other process.
    invalidation.publish(f"application:{application.pk}")
    audit_record(
        event_type="identity.application.enabled" if enabled else "identity.application.disabled",
        action="enable" if enabled else "disable",
        resource=("application", str(application.pk)),
        actor=actor,
    )
    return application


@transaction.atomic
def application_update(
    *, application: Application, actor: Actor, caller_permissions: frozenset[str] | None, **changes
) -> Application:
    _require_wildcard_for(caller_permissions, _application_permissions(application), "application")
    changed: list[str] = []
    if "name" in changes and changes["name"] != application.name:
        _unique_name(Application, "name", changes["name"], exclude_pk=application.pk)
        _refuse_file_name("application", changes["name"])
        application.name = changes["name"]
        changed.append("name")
    if "expires_at" in changes:
        application.expires_at = changes["expires_at"]
        changed.append("expires_at")
    application.save()
    if "roles" in changes:
        application.roles.set(_roles_by_name(changes["roles"], caller_permissions, current=application.roles.all()))
        changed.append("roles")
    invalidation.publish(f"application:{application.pk}")
    audit_record(
        event_type="identity.application.updated",
        action="update",
        resource=("application", str(application.pk)),
        actor=actor,
        context={"fields": changed},
    )
    return application


@transaction.atomic
def application_delete(*, application: Application, actor: Actor, caller_permissions: frozenset[str] | None) -> None:
    _require_wildcard_for(caller_permissions, _application_permissions(application), "application")
    pk = application.pk
    application.delete()
    invalidation.publish(f"application:{pk}")
    audit_record(
        event_type="identity.application.deleted", action="delete", resource=("application", str(pk)), actor=actor
    )


@transaction.atomic
def expired_tokens_flush() -> int:
    """Delete outstanding (and, by cascade, blacklisted) refresh tokens that have expired."""
    from rest_framework_simplejwt.token_blacklist.models import OutstandingToken

    # An expired refresh token fails verification on `exp` alone; its blacklist row is no longer needed.
    deleted, _ = OutstandingToken.objects.filter(expires_at__lte=timezone.now()).delete()
    return deleted
