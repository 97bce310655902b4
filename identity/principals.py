"""The authenticated principal put on request.user by every identity authentication class."""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Principal:
    """A user or application with its permission strings; `*` grants every permission."""

    actor_type: str  # "user" or "application"
    actor_id: str
    actor_name: str
    permissions: frozenset[str] = field(default_factory=frozenset)
    # How the principal proved itself: "apikey", "jwt", "oidc" (for audit context and /me).
    source: str = ""

    is_authenticated = True
    is_anonymous = False
    is_active = True

    @property
    def pk(self) -> str:
        return self.actor_id

    @property
    def username(self) -> str:
        return self.actor_name

    def has_permission(self, permission: str) -> bool:
        return "*" in self.permissions or permission in self.permissions

    def __str__(self) -> str:
        return f"{self.actor_type}:{self.actor_name}"
