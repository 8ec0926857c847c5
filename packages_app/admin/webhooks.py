"""Received Kombo webhooks: a read-only log of what arrived and what came of it."""
import json

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from ..models import WebhookEvent
from .display import badge, when
from .mixins import ReadOnlyAdminMixin

OUTCOME_COLOURS = {
    WebhookEvent.Outcome.RECEIVED: "#1f5fa8",
    WebhookEvent.Outcome.CREATED: "#1b7f3b",
    WebhookEvent.Outcome.PUBLISHED: "#1b7f3b",
    WebhookEvent.Outcome.UNCHANGED: "#666",
    WebhookEvent.Outcome.PAUSED: "#b26a00",
    WebhookEvent.Outcome.IGNORED: "#666",
    WebhookEvent.Outcome.FAILED: "#b00020",
}


@admin.register(WebhookEvent)
class WebhookEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("received", "event_type", "event_id", "outcome_badge", "integration_name")
    list_display_links = ("received", "event_id")
    list_filter = ("type", "outcome")
    search_fields = ("event_id", "integration__name", "integration__kombo_integration_id")
    list_select_related = ("integration",)
    show_full_result_count = False
    date_hierarchy = "received_at"
    fields = ("event_id", "type", "received_at", "outcome_badge", "processed_at", "integration_link",
              "detail", "error", "pretty_payload")
    readonly_fields = fields

    @admin.display(description=_("received"), ordering="received_at")
    def received(self, obj):
        return when(obj.received_at)

    @admin.display(description=_("type"), ordering="type")
    def event_type(self, obj):
        return format_html('<span style="white-space:nowrap">{}</span>', obj.type)

    @admin.display(description=_("integration"), ordering="integration__name")
    def integration_name(self, obj):
        """The customer's name, linked; the Kombo id (long) in the tooltip."""
        if obj.integration is None:
            return "—"
        return format_html('<a href="{}" title="{}">{}</a>',
                           reverse("admin:packages_app_integration_change", args=[obj.integration_id]),
                           obj.integration.kombo_integration_id, obj.integration.name)

    @admin.display(description=_("outcome"), ordering="outcome")
    def outcome_badge(self, obj):
        outcome = WebhookEvent.Outcome(obj.outcome)
        return badge(outcome.label, OUTCOME_COLOURS[outcome], f"webhook-{outcome.value}")

    @admin.display(description=_("integration"), ordering="integration__name")
    def integration_link(self, obj):
        if obj.integration is None:
            return "—"
        return format_html('<a href="{}">{}</a>',
                           reverse("admin:packages_app_integration_change", args=[obj.integration_id]),
                           obj.integration)

    @admin.display(description=_("payload"))
    def pretty_payload(self, obj):
        return format_html("<pre style='max-height:30em;overflow:auto'>{}</pre>",
                           json.dumps(obj.payload, indent=2, ensure_ascii=False))
