"""Identity data: users (the custom user model from the first migration)."""

from django.contrib.auth.models import AbstractUser


class User(AbstractUser):
    """A person who signs in to the API or the admin."""
