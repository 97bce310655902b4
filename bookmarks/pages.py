"""Human-facing pages of the bookmarks app (the approval page)."""

urlpatterns: list = []
