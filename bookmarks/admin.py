"""Admin of bookmarks: read-only rows with revoke and clear-soft-block actions (each audited by its service)."""

from django.contrib import admin, messages

from audit.actors import actor_from_request
from audit.admin import AuditedModelAdmin
from bookmarks import services
from bookmarks.models import Bookmark, ResumeToken


class ReadOnlyFieldsMixin:
    """Rows change only through the actions below, which call the services (one path per change)."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in self.model._meta.fields]


class ResumeTokenInline(ReadOnlyFieldsMixin, admin.TabularInline):
    model = ResumeToken
    extra = 0
    can_delete = False
    fields = ("id", "fingerprint", "created_at", "expires_at", "revoked_at")


@admin.register(Bookmark)
class BookmarkAdmin(ReadOnlyFieldsMixin, AuditedModelAdmin):
    audit_resource_type = "bookmark"
    list_display = (
        "id",
        "instance",
        "activity_id",
        "status",
        "expires_at",
        "auto_burn",
        "resume_count",
        "failure_count",
        "soft_blocked_at",
    )
    list_filter = ("status", "auto_burn", "on_expiry")
    search_fields = ("id", "instance__id", "activity_id")
    inlines = [ResumeTokenInline]
    actions = ["revoke_bookmarks", "clear_soft_blocks"]

    @admin.action(permissions=["change"], description="Revoke the selected bookmarks (every token stops working)")
    def revoke_bookmarks(self, request, queryset):
        actor = actor_from_request(request)
        count = 0
        for bookmark in queryset:
            if bookmark.is_active:
                services.bookmark_revoke(bookmark=bookmark, actor=actor)
                count += 1
        self.message_user(request, f"Revoked {count} bookmark(s).", messages.SUCCESS)

    @admin.action(permissions=["change"], description="Clear the soft block of the selected bookmarks")
    def clear_soft_blocks(self, request, queryset):
        actor = actor_from_request(request)
        count = 0
        for bookmark in queryset.filter(soft_blocked_at__isnull=False):
            services.bookmark_clear_soft_block(bookmark=bookmark, actor=actor)
            count += 1
        self.message_user(request, f"Cleared {count} soft block(s).", messages.SUCCESS)


@admin.register(ResumeToken)
class ResumeTokenAdmin(ReadOnlyFieldsMixin, AuditedModelAdmin):
    audit_resource_type = "bookmark-token"
    list_display = ("id", "bookmark", "fingerprint", "created_at", "expires_at", "revoked_at")
    search_fields = ("id", "fingerprint", "bookmark__id")
    actions = ["revoke_tokens"]

    @admin.action(permissions=["change"], description="Revoke the selected tokens (denied until they expire)")
    def revoke_tokens(self, request, queryset):
        actor = actor_from_request(request)
        count = 0
        for token in queryset.filter(revoked_at__isnull=True):
            services.resume_token_revoke(token=token, actor=actor)
            count += 1
        self.message_user(request, f"Revoked {count} token(s).", messages.SUCCESS)
