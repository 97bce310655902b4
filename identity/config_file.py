"""Read-only identities from ELSA_IDENTITY_FILE, in the shape of Elsa's `Identity` section."""

import hmac
import json
import logging
import os
import threading
from collections import Counter
from dataclasses import dataclass, field

from django.conf import settings
from django.contrib.auth.hashers import check_password

from identity import invalidation
from identity.apikeys import api_key_hash
from identity.principals import Principal

ID_PREFIX = "config:"
# Tags every verification-cache entry built from the file: a new version of the file drops them all.
FILE_TAG = "identity-file"
logger = logging.getLogger("elsa.identity")


class IdentityFileError(ValueError):
    """The identity file cannot be read or does not have the expected shape."""


@dataclass(frozen=True)
class ConfigRole:
    name: str
    permissions: tuple[str, ...]


@dataclass(frozen=True)
class ConfigUser:
    name: str
    hashed_password: str
    roles: tuple[str, ...]


@dataclass(frozen=True)
class ConfigApplication:
    name: str
    client_id: str
    hashed_client_secret: str
    hashed_api_key: str
    api_key_salt: str
    roles: tuple[str, ...]


@dataclass(frozen=True)
class IdentityFile:
    users: dict[str, ConfigUser] = field(default_factory=dict)
    roles: dict[str, ConfigRole] = field(default_factory=dict)
    applications: dict[str, ConfigApplication] = field(default_factory=dict)  # by client id


_EMPTY = IdentityFile()
_cache: dict[tuple[str, int], IdentityFile] = {}
_lock = threading.Lock()


def _items(section: dict, name: str) -> list[dict]:
    value = section.get(name, [])
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise IdentityFileError(f"'{name}' must be a list of objects.")
    return value


def _str(item: dict, key: str, *, required: bool = True) -> str:
    value = item.get(key, "")
    if not isinstance(value, str) or (required and not value):
        raise IdentityFileError(f"Each entry needs a string '{key}'.")
    return value


def _roles(item: dict) -> tuple[str, ...]:
    roles = item.get("Roles", [])
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise IdentityFileError("'Roles' must be a list of role names.")
    return tuple(roles)


def _duplicates(kind: str, names) -> list[str]:
    counts = Counter(names)
    return [f"{kind} {name!r}" for name, count in counts.items() if count > 1]


def parse_identity_file(data) -> IdentityFile:
    """Users, Roles and Applications, at the top level or under "Identity"."""
    if not isinstance(data, dict):
        raise IdentityFileError("The identity file must hold a JSON object.")
    section = data.get("Identity", data)
    roles = []
    for item in _items(section, "Roles"):
        perms = item.get("Permissions", [])
        if not isinstance(perms, list) or not all(isinstance(p, str) for p in perms):
            raise IdentityFileError("'Permissions' must be a list of strings.")
        roles.append(ConfigRole(_str(item, "Name"), tuple(perms)))
    # Elsa stores hash and salt apart; hash_secret's hash already embeds its salt (Django format).
    users = [
        ConfigUser(_str(item, "Name"), _str(item, "HashedPassword"), _roles(item)) for item in _items(section, "Users")
    ]
    applications = [
        ConfigApplication(
            name=_str(item, "Name"),
            client_id=_str(item, "ClientId"),
            hashed_client_secret=_str(item, "HashedClientSecret", required=False),
            hashed_api_key=_str(item, "HashedApiKey", required=False),
            api_key_salt=_str(item, "HashedApiKeySalt", required=False),
            roles=_roles(item),
        )
        for item in _items(section, "Applications")
    ]
    # Two entries of one name would silently replace each other (which one wins is the file's
    # order, not the operator's intent), and an application name is how the admin, the audit log
    # and identity.E001 tell applications apart: refuse the whole file, naming every duplicate.
    duplicates = [
        *_duplicates("role", (r.name for r in roles)),
        *_duplicates("user", (u.name for u in users)),
        *_duplicates("application client id", (a.client_id for a in applications)),
        *_duplicates("application name", (a.name for a in applications)),
    ]
    if duplicates:
        raise IdentityFileError(f"The identity file defines more than once: {', '.join(duplicates)}.")
    return IdentityFile(
        users={u.name: u for u in users},
        roles={r.name: r for r in roles},
        applications={a.client_id: a for a in applications},
    )


def identity_file() -> IdentityFile:
    """The parsed ELSA_IDENTITY_FILE (empty when unset); re-read only when the file changes."""
    path = getattr(settings, "ELSA_IDENTITY_FILE", "")
    if not path:
        return _EMPTY
    try:
        key = (path, os.stat(path).st_mtime_ns)
    except OSError as exc:
        if _cache:
            _forget_version()
        raise IdentityFileError(f"ELSA_IDENTITY_FILE {path} cannot be read.") from exc
    cached = _cache.get(key)
    if cached is not None:
        return cached
    with _lock:
        cached = _cache.get(key)
        if cached is not None:
            return cached  # another thread read this version meanwhile
        # Whatever the previous version granted (or refused) is dropped, even if this one is broken.
        _forget_version()
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
        except (OSError, ValueError) as exc:
            raise IdentityFileError(f"ELSA_IDENTITY_FILE {path} is not readable JSON.") from exc
        parsed = parse_identity_file(data)
        _cache[key] = parsed
        return parsed


def _forget_version() -> None:
    # Each process reads the file itself, so a local invalidation is enough: no push needed.
    _cache.clear()
    invalidation.cache.invalidate({FILE_TAG})


def identity_file_refresh() -> None:
    """Notice a new version of the file now (one stat), dropping every principal cached from the old one."""
    try:
        identity_file()
    except IdentityFileError:
        pass  # usable_identity_file() logs it when the file's identities are looked up


_vetted: dict[tuple[str, int], bool] = {}


def usable_identity_file() -> IdentityFile:
    """The identity file for authentication: empty while it overlaps the database (identity.E001).

    The system check refuses such a start-up (check, migrate, runserver); a server started without
    checks (plain gunicorn) still refuses to let either copy of a duplicated identity in through
    the file. Vetted once per process and file version.
    """
    try:
        config = identity_file()
    except IdentityFileError as exc:
        # identity.E002 reports it at start-up; at request time a broken file grants nobody. The
        # reason names the path, a key or a duplicated name, never a hash.
        logger.error("ELSA_IDENTITY_FILE cannot be used; its identities are refused: %s", exc)
        return _EMPTY
    if config is _EMPTY:
        return config
    path = settings.ELSA_IDENTITY_FILE
    key = (path, os.stat(path).st_mtime_ns)
    if key not in _vetted:
        conflicts = conflicts_with_database()
        if conflicts:
            logger.error("ELSA_IDENTITY_FILE overlaps the database; its identities are refused: %s", conflicts)
        _vetted.clear()
        _vetted[key] = not conflicts
    return config if _vetted[key] else _EMPTY


def role_permissions(role_names) -> frozenset[str]:
    """Permissions of roles named in the file: its own Roles, else the database roles of that name."""
    from identity.models import Role

    config = identity_file()
    permissions = {p for name in role_names if name in config.roles for p in config.roles[name].permissions}
    missing = [name for name in role_names if name not in config.roles]
    if missing:
        for perms in Role.objects.filter(name__in=missing).values_list("permissions", flat=True):
            permissions.update(perms or [])
    return frozenset(permissions)


def config_user_authenticate(username: str, password: str):
    from identity.tokens import TokenSubject

    user = usable_identity_file().users.get(username)
    if user is None or not check_password(password, user.hashed_password):
        return None
    return TokenSubject("user", ID_PREFIX + user.name, user.name, role_permissions(user.roles))


def config_application_authenticate(client_id: str, client_secret: str):
    from identity.tokens import TokenSubject

    app = usable_identity_file().applications.get(client_id)
    if app is None or not app.hashed_client_secret or not check_password(client_secret, app.hashed_client_secret):
        return None
    return TokenSubject("application", ID_PREFIX + app.client_id, app.name, role_permissions(app.roles))


def config_api_key_principal(key: str) -> Principal | None:
    """The configured application whose HMAC-hashed API key matches `key`."""
    config = usable_identity_file()
    for app in config.applications.values():
        if not app.hashed_api_key:
            continue
        # HMAC per configured application (microseconds each) in constant time per comparison.
        if hmac.compare_digest(api_key_hash(key, app.api_key_salt), app.hashed_api_key):
            return _config_app_principal(app)
    return None


def _config_app_principal(app: ConfigApplication) -> Principal:
    invalidation.listener.ensure_started()
    cache_key = f"config-app:{app.client_id}"
    principal = invalidation.cache.get(cache_key)
    if principal is None:
        generation = invalidation.cache.generation
        principal = Principal(
            "application", ID_PREFIX + app.client_id, app.name, role_permissions(app.roles), source="apikey"
        )
        invalidation.cache.put(cache_key, principal, tags={"roles", FILE_TAG}, if_generation=generation)
    return principal


def config_principal_exists(actor_type: str, actor_id: str) -> bool:
    name = actor_id.removeprefix(ID_PREFIX)
    config = usable_identity_file()
    return name in (config.users if actor_type == "user" else config.applications)


def file_defines(kind: str, name: str) -> bool:
    """Whether the identity file defines a user ("user") or an application ("application") of this name.

    IdentityFileError when the file cannot be used: then nothing can be checked against it.
    """
    config = identity_file()
    if kind == "user":
        return name in config.users
    return any(app.name == name for app in config.applications.values())


def conflicts_with_database() -> list[str]:
    """Names and client ids defined both in the file and in the database (refused at start-up)."""
    from identity.models import Application, Role, User

    config = identity_file()
    found = []
    for name in User.objects.filter(username__in=list(config.users)).values_list("username", flat=True):
        found.append(f"user {name!r}")
    apps = Application.objects.filter(name__in=[a.name for a in config.applications.values()]).values_list(
        "name", flat=True
    )
    found.extend(f"application name {name!r}" for name in apps)
    ids = Application.objects.filter(client_id__in=list(config.applications)).values_list("client_id", flat=True)
    found.extend(f"application client id {cid!r}" for cid in ids)
    # A role defined identically in both places (e.g. Elsa's default `admin` with `*`) is harmless.
    for role in Role.objects.filter(name__in=list(config.roles)):
        if sorted(role.permissions or []) != sorted(config.roles[role.name].permissions):
            found.append(f"role {role.name!r}")
    return found
