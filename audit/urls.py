"""URLs of the audit app (mounted under /elsa/api/)."""

from django.urls import path

from audit import api

urlpatterns = [
    path("audit-events", api.AuditEventListApi.as_view(), name="audit-event-list"),
    path("audit-events/<int:event_id>", api.AuditEventDetailApi.as_view(), name="audit-event-detail"),
    path("audit-events/<int:event_id>/verify", api.AuditEventVerifyApi.as_view(), name="audit-event-verify"),
]
