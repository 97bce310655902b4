"""URLs of the bookmarks app (under /elsa/api/)."""

from django.urls import path

from bookmarks import api

urlpatterns = [
    path("bookmarks/resume", api.ResumeView.as_view(), name="bookmarks-resume"),
    path("bookmarks/<uuid:bookmark_id>/tokens", api.BookmarkTokenIssueView.as_view(), name="bookmark-tokens"),
    path("bookmarks/<uuid:bookmark_id>/revoke", api.BookmarkRevokeView.as_view(), name="bookmark-revoke"),
    path(
        "workflow-instances/<uuid:instance_id>/bookmarks",
        api.InstanceBookmarkListView.as_view(),
        name="workflow-instance-bookmarks",
    ),
]
