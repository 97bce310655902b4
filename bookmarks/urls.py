"""URLs of the bookmarks app."""

urlpatterns: list = []
