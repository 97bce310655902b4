"""URLs of the identity app."""

urlpatterns: list = []
