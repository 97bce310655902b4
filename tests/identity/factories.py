"""Identity test data: roles, users, applications with real API keys, and auth headers."""

import secrets

import factory
from django.contrib.auth.hashers import make_password

from identity.apikeys import api_key_generate
from identity.models import ApiKey, Application, Role, User


class RoleFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Role

    name = factory.Sequence(lambda n: f"role-{n}-{secrets.token_hex(3)}")
    permissions = factory.LazyFunction(list)


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user-{n}-{secrets.token_hex(3)}")
    password = factory.LazyFunction(lambda: make_password("correct horse battery staple"))

    @factory.post_generation
    def roles(self, create, extracted, **kwargs):
        if create and extracted:
            self.roles.set(extracted)


PASSWORD = "correct horse battery staple"


def application_with_key(*permissions: str, name: str | None = None, **fields) -> tuple[Application, str]:
    """A real application holding a role with `permissions`, and the plaintext of its API key."""
    role = RoleFactory(permissions=list(permissions))
    application = Application.objects.create(
        name=name or f"app-{secrets.token_hex(4)}",
        client_id=f"app_{secrets.token_hex(12)}",
        client_secret_hash=make_password(secrets.token_urlsafe(16)),
        **fields,
    )
    application.roles.set([role])
    new = api_key_generate()
    ApiKey.objects.create(application=application, key_id=new.key_id, salt=new.salt, key_hash=new.key_hash)
    return application, new.plaintext


def principal_headers(*permissions: str) -> dict:
    """HTTP headers authenticating as a fresh application holding exactly `permissions`."""
    _, key = application_with_key(*permissions)
    return {"HTTP_AUTHORIZATION": f"ApiKey {key}"}
