"""HTTP edge of the audit app: search, read and verify events (permission read:audit-events).

audit knows no other app, except here: this module is the app's HTTP edge and imports identity's
HasPermission, the one permission class every endpoint declares. models, services, selectors and
verification stay independent of identity.
"""

from drf_spectacular.utils import extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from audit import selectors, verification
from audit.serializers import (
    AuditEventPageSerializer,
    AuditEventQuerySerializer,
    AuditEventSerializer,
    VerificationSerializer,
)
from identity.permissions import HasPermission

READ_AUDIT_EVENTS = HasPermission("read:audit-events")


class AuditEventListApi(APIView):
    """GET audit-events: filtered search with cursor pagination."""

    permission_classes = [READ_AUDIT_EVENTS]

    @extend_schema(
        operation_id="audit_events_list", parameters=[AuditEventQuerySerializer], responses=AuditEventPageSerializer
    )
    def get(self, request):
        query = AuditEventQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        params = query.validated_data
        items, next_cursor = selectors.audit_event_search(
            filters=params, cursor=params.get("cursor"), limit=params["limit"], order=params["order"]
        )
        return Response({"items": AuditEventSerializer(items, many=True).data, "next_cursor": next_cursor})


class AuditEventDetailApi(APIView):
    """GET audit-events/{id}: one event."""

    permission_classes = [READ_AUDIT_EVENTS]

    @extend_schema(operation_id="audit_events_retrieve", responses=AuditEventSerializer)
    def get(self, request, event_id: int):
        return Response(AuditEventSerializer(selectors.audit_event_get(event_id=event_id)).data)


class AuditEventVerifyApi(APIView):
    """GET audit-events/{id}/verify: recompute the chain segment holding this event, and say if the chain is fresh."""

    permission_classes = [READ_AUDIT_EVENTS]

    @extend_schema(operation_id="audit_events_verify", responses=VerificationSerializer)
    def get(self, request, event_id: int):
        # An id inside the chain is verified even if its row is gone: that is what tampering looks like.
        selectors.audit_event_in_chain(event_id=event_id)
        result = verification.verify_event(event_id)
        # A warning beside the result, not a failure of it: the event's segment is proven (or not)
        # whatever happened after it, but a client must learn that the chain's tail is not.
        freshness = verification.chain_freshness()
        newest = (
            None
            if freshness.newest_event_id is None
            else {"event_id": freshness.newest_event_id, "created": freshness.newest_created}
        )
        body = {
            "is_valid": result.is_valid,
            "first_invalid_id": result.first_invalid_id,
            "total_checked": result.total_checked,
            "reason": result.reason,
            "is_fresh": freshness.is_fresh,
            "newest_checkpoint": newest,
            "freshness_reason": freshness.reason,
        }
        return Response(VerificationSerializer(body).data)
