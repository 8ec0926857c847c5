"""Plans: named sets of packages that integrations offer together, and publishing their
integrations (through the integrations' own confirmation page)."""
from django.contrib import admin, messages
from django.db.models import Count
from django.urls import reverse
from django.utils.html import format_html
from django.utils.http import urlencode
from django.utils.translation import gettext, gettext_lazy as _, ngettext

from ..models import Integration, Plan
from .mixins import ChangeHistoryWithValuesMixin, PublishPermissionMixin
from .widgets import SafeAutocompleteMixin


@admin.register(Plan)
class PlanAdmin(SafeAutocompleteMixin, PublishPermissionMixin, ChangeHistoryWithValuesMixin, admin.ModelAdmin):
    list_display = ("name", "is_default", "package_count", "integration_count", "updated_at")
    list_filter = ("is_default",)
    search_fields = ("name", "description", "packages__package_id", "packages__name")
    autocomplete_fields = ("packages",)
    readonly_fields = ("integrations_on_plan", "created_at", "updated_at")
    fields = ("name", "description", "is_default", "packages", "integrations_on_plan",
              "created_at", "updated_at")
    actions = ("publish_integrations",)

    def get_queryset(self, request):
        # Two counts over two joins: distinct, or each would multiply the other.
        return super().get_queryset(request).annotate(
            package_total=Count("packages", distinct=True),
            integration_total=Count("integrations", distinct=True),
        )

    @admin.display(description=_("packages"), ordering="package_total")
    def package_count(self, obj):
        return obj.package_total

    @admin.display(description=_("integrations"), ordering="integration_total")
    def integration_count(self, obj):
        if not obj.integration_total:
            return "0"
        url = reverse("admin:packages_app_integration_changelist") + "?" + urlencode({"plans__id__exact": obj.pk})
        return format_html('<a href="{}">{}</a>', url, obj.integration_total)

    @admin.display(description=_("integrations on this plan"))
    def integrations_on_plan(self, obj):
        if not obj.pk:
            return "—"
        count = obj.integrations.count()
        if not count:
            return gettext("No integration is on this plan yet.")
        url = reverse("admin:packages_app_integration_changelist") + "?" + urlencode({"plans__id__exact": obj.pk})
        return format_html(gettext('<a href="{url}">{integrations}</a> (changing this plan\'s packages makes '
                                   'each of them out of sync until it is published)'),
                           url=url, integrations=ngettext("%(count)d integration", "%(count)d integrations",
                                                          count) % {"count": count})

    # Publishing ---------------------------------------------------------------------------
    @admin.action(description=_("Publish the integrations of these plans…"), permissions=["publish"])
    def publish_integrations(self, request, queryset):
        """The integrations of the selected plans, on the same confirmation page as every publish."""
        integrations = Integration.objects.filter(plans__in=queryset).distinct()
        if not integrations.exists():
            self.message_user(request, ngettext("No integration is on the selected plan: nothing to publish.",
                                                "No integration is on the selected plans: nothing to publish.",
                                                queryset.count()), messages.WARNING)
            return None
        # The integrations action's own entry point: the preview, the confirmation page, the
        # removal tick and the guards are the integrations admin's, whatever the count.
        return self.admin_site.get_model_admin(Integration).publish_selected(request, integrations)
