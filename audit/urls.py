"""URLs of the audit app."""

urlpatterns: list = []
