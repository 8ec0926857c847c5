"""Integrations: sync status, pausing, drift; the publish action and its confirmation page (publish.py)."""
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import path
from django.utils.translation import gettext, gettext_lazy as _, ngettext

from .. import kombo, publishing, selectors
from ..forms import IntegrationForm
from ..models import (
    Integration,
    Publication,
    SyncStatus,
    integration_tool,
)
from .display import (
    STATUS_BADGE_COLOURS,
    SYNC_BADGE_COLOURS,
    badge,
    cancel_summary,
    publication_badge,
    when,
)
from .mixins import ChangeHistoryWithValuesMixin, PublishedIntegrationDeletionMixin
from .publish import PublishFlowMixin
from .widgets import SafeAutocompleteMixin


# Why publications on their way were cancelled when staff moved the integration (the take says
# the same of any it finds built for another place).
MOVED_REASON = publishing.transitions.MOVED_REASON


class SyncStatusFilter(admin.SimpleListFilter):
    """selectors.integrations_in_sync_status: the same rule (selectors.sync_status_of) as the column."""

    title = _("sync status")
    parameter_name = "sync"

    def lookups(self, request, model_admin):
        return SyncStatus.choices

    def queryset(self, request, queryset):
        if self.value() not in SyncStatus.values:
            return queryset
        return selectors.integrations_in_sync_status(queryset, {self.value()})


@admin.register(Integration)
class IntegrationAdmin(SafeAutocompleteMixin, PublishFlowMixin, ChangeHistoryWithValuesMixin,
                       PublishedIntegrationDeletionMixin,
                       admin.ModelAdmin):
    list_display = ("name", "kombo_integration_id", "region", "is_active", "package_total",
                    "sync_status_badge", "last_published")
    list_filter = (SyncStatusFilter, "region", "is_active", "plans", "created_by_webhook")
    # A package id finds the integrations that offer it themselves (Django adds the DISTINCT).
    search_fields = ("name", "kombo_integration_id", "packages__package_id")
    # A search box over the catalogue, not a list of every package: the page stays fast with
    # ten thousand of them.
    autocomplete_fields = ("plans", "packages")
    # Django would count the whole table on every page to show "N total"; at scale that count
    # is the slowest query of the page.
    show_full_result_count = False
    actions = ("publish_selected", "pause_selected")
    form = IntegrationForm
    fieldsets = (
        # confirm_move is a hidden field unless a save moves a published integration (forms.py).
        (None, {"fields": ("name", "kombo_integration_id", "region", "confirm_move", "is_active")}),
        (_("Packages offered"), {"fields": ("plans", "packages")}),
    )
    change_form_template = "admin/packages_app/integration/change_form.html"
    change_list_template = "admin/packages_app/integration/change_list.html"

    def get_queryset(self, request):
        return super().get_queryset(request).with_sync_state()

    def has_delete_permission(self, request, obj=None):
        # Publications are the ledger and outlive nothing they describe: an integration that
        # has been published is paused, never deleted.
        if obj is not None and obj.publications.exists():
            return False
        return super().has_delete_permission(request, obj)

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        field = super().formfield_for_dbfield(db_field, request, **kwargs)
        if db_field.name == "is_active" and field is not None:
            field.help_text = gettext("%(help)s Pausing also cancels the publications it has on "
                                      "their way to Kombo.") % {"help": field.help_text}
        return field

    @admin.display(description=_("packages"))
    def package_total(self, obj):
        return len(obj.packages_offered())  # its own and its plans', prefetched by with_sync_state()

    @admin.display(description=_("sync status"))
    def sync_status_badge(self, obj):
        status = SyncStatus(obj.sync_status)
        if status == SyncStatus.FAILED and obj.latest_publication_status == Publication.Status.CANCELLED:
            # Still not at Kombo, but stopped on purpose (a cancel, a pause): grey, not an alarm.
            return badge(status.label, STATUS_BADGE_COLOURS[Publication.Status.CANCELLED],
                         f"sync-{status.value} sync-cancelled")
        return badge(status.label, SYNC_BADGE_COLOURS[status], f"sync-{status.value}")

    @admin.display(description=_("last published"), ordering="last_published_at")
    def last_published(self, obj):
        if not obj.last_published_at:
            return "—"
        return when(obj.last_published_at)

    # Pausing -------------------------------------------------------------------------------
    @admin.action(description=_("Pause publishing"), permissions=["change"])
    def pause_selected(self, request, queryset):
        """Pause the integrations and cancel what they have on its way (publishing does both)."""
        ids = list(queryset.values_list("pk", flat=True))
        were_active = list(Integration.objects.filter(pk__in=ids, is_active=True))
        paused, ended, ending = publishing.integrations_pause(integration_ids=ids, paused_by=request.user)
        if not (paused or ended or ending):
            self.message_user(request, ngettext("Nothing to pause: the selected integration was already paused.",
                                                "Nothing to pause: the selected integrations were already paused.",
                                                len(ids)), messages.WARNING)
            return
        for integration in were_active:
            self.log_change(request, integration, "Paused with the “Pause publishing” action.")
        parts = [ngettext("%(count)d integration paused.", "%(count)d integrations paused.",
                          paused) % {"count": paused}] if paused else []
        parts.append(cancel_summary(ended, ending) or gettext("Nothing was on its way to Kombo."))
        if len(ids) > paused:
            already = len(ids) - paused
            parts.append(ngettext("%(count)d other selected integration was already paused.",
                                  "%(count)d other selected integrations were already paused.",
                                  already) % {"count": already})
        self.message_user(request, " ".join(parts), messages.SUCCESS)

    def save_model(self, request, obj, form, change):
        old_place = (form.initial.get("kombo_integration_id"), form.initial.get("region"))
        super().save_model(request, obj, form, change)
        if change and old_place != (obj.kombo_integration_id, obj.region):
            # Built for the old place: they must not reach the new one, nor count there. (The
            # admin's save is one transaction, and creating publications locks the integration,
            # so none for the new place exists yet.)
            on_their_way = Publication.objects.filter(
                integration=obj, status__in=Publication.ACTIVE_STATUSES).exclude(
                target_kombo_integration_id=obj.kombo_integration_id, target_region=obj.region)
            obj.cancelled_by_move = publishing.publications_cancel(
                publication_ids=list(on_their_way.values_list("pk", flat=True)),
                cancelled_by=request.user, reason=MOVED_REASON)
        if change and "is_active" in form.changed_data and form.initial.get("is_active") and not obj.is_active:
            # Paused by this save: what it had on its way must not reach Kombo.
            obj.cancelled_by_pause = publishing.integration_publications_cancel(
                integration_ids=[obj.pk], cancelled_by=request.user)

    def response_change(self, request, obj):
        response = super().response_change(request, obj)  # "... was changed successfully." first
        if getattr(obj, "cancelled_by_move", None) and any(obj.cancelled_by_move):
            self.message_user(request, gettext("%(name)s moved: %(summary)s") % {
                "name": obj.name, "summary": cancel_summary(*obj.cancelled_by_move)}, messages.WARNING)
        if hasattr(obj, "cancelled_by_pause"):
            summary = cancel_summary(*obj.cancelled_by_pause)
            self.message_user(request, gettext("Publishing to Kombo is paused for %(name)s: %(summary)s") % {
                                  "name": obj.name, "summary": summary or gettext("nothing was on its way.")},
                              messages.SUCCESS if summary else messages.INFO)
        return response

    def get_urls(self):
        return [
            path("publish/", self.admin_site.admin_view(self.publish_view),
                 name="packages_app_integration_publish"),
            path("<int:pk>/compare/", self.admin_site.admin_view(self.compare_view),
                 name="packages_app_integration_compare"),
            path("<int:pk>/publications-live/", self.admin_site.admin_view(self.publications_live_view),
                 name="packages_app_integration_publications_live"),
            path("<int:pk>/manual-import/<int:publication_pk>/", self.admin_site.admin_view(self.manual_import_view),
                 name="packages_app_integration_manual_import"),
        ] + super().get_urls()

    def compare_view(self, request, pk):
        """Drift check: what Kombo has now, what we last published, what the catalogue says."""
        integration = get_object_or_404(Integration.objects.prefetch_related("packages"), pk=pk)
        # It calls Kombo with the API key: for those who edit or publish, not mere viewers.
        if not (self.has_change_permission(request, integration) or self.has_publish_permission(request)):
            raise PermissionDenied
        report, error = None, None
        try:
            report = selectors.integration_drift(integration=integration)
        except kombo.KomboError as exc:
            error = exc
        context = {
            **self.admin_site.each_context(request),
            "title": gettext("Compare %(name)s with Kombo") % {"name": integration.name},
            "opts": self.model._meta,
            "original": integration,
            "report": report,
            "error": error,
        }
        return TemplateResponse(request, "admin/packages_app/integration/compare.html", context)

    def _publications_context(self, integration_pk):
        publications = list(
            Publication.objects.filter(integration_id=integration_pk).select_related("requested_by")[:20]
        )
        return {
            "recent_publications": [{"publication": p, "badge": publication_badge(p)} for p in publications],
            "publications_final": all(p.is_final for p in publications),
        }

    def publications_live_view(self, request, pk):
        """The publications table of one integration, for the page's poll."""
        integration = get_object_or_404(Integration, pk=pk)
        if not (self.has_view_or_change_permission(request, integration)
                and request.user.has_perm("packages_app.view_publication")):
            raise PermissionDenied
        context = self._publications_context(pk)
        html = render_to_string("admin/packages_app/integration/_publications.html", context, request)
        return JsonResponse({"final": context["publications_final"], "html": html})

    def manual_import_view(self, request, pk, publication_pk):
        """The CSV a customer whose ATS takes packages by hand imports: name and reference id of
        each package of a list Kombo took (that publication's, exactly as sent)."""
        publication = get_object_or_404(Publication.objects.select_related("integration"),
                                        pk=publication_pk, integration_id=pk)
        if not (self.has_view_or_change_permission(request, publication.integration)
                and request.user.has_perm("packages_app.view_publication")):
            raise PermissionDenied
        if not publication.was_accepted:
            # Kombo did not take it: the customer would import a list that is not at Kombo.
            raise Http404(gettext("Kombo did not take this publication's list: there is nothing to import."))
        response = HttpResponse(selectors.manual_import_csv(publication=publication),
                                content_type="text/csv; charset=utf-8")
        tool = integration_tool(publication.target_kombo_integration_id) or "ats"
        response["Content-Disposition"] = (f'attachment; filename="packages-{tool}-'
                                           f'integration{pk}-publication{publication.pk}.csv"')
        return response

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = {
            **(extra_context or {}),
            "can_publish": self.has_publish_permission(request),
            "api_key_status": publishing.api_key_status(),
            "can_compare": self.has_change_permission(request) or self.has_publish_permission(request),
            **(self._publications_context(object_id)
               if str(object_id).isdigit() and request.user.has_perm("packages_app.view_publication")
               else {}),
            **(self._manual_import_context(object_id)
               if str(object_id).isdigit() and request.user.has_perm("packages_app.view_publication")
               else {}),
        }
        return super().change_view(request, object_id, form_url, extra_context)

    def _manual_import_context(self, integration_pk):
        """For a tool whose customers import packages by hand: the list Kombo holds, to send them."""
        integration = Integration.objects.filter(pk=integration_pk).first()
        if integration is None or not integration.needs_manual_import:
            return {}
        return {"manual_import_publication": selectors.latest_accepted_publication(integration=integration)}
