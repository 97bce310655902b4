"""URLs of the workflows app."""

urlpatterns: list = []
