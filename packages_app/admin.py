"""The admin: catalogue, integrations, the publish confirmation page and the read-only ledger.

No business logic here: every change goes through `publishing`, every preview through `selectors`.
"""
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.db.models import Count
from django.http import HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode

from . import catalogue_io, history, kombo, publishing, selectors
from .forms import CatalogueImportForm
from .models import (
    AssessmentPackage,
    Integration,
    Publication,
    SyncStatus,
)

PUBLISH_PERMISSION = "packages_app.publish_integration"

SYNC_BADGE_COLOURS = {
    SyncStatus.NEVER_PUBLISHED: "#666",
    SyncStatus.IN_SYNC: "#1b7f3b",
    SyncStatus.CHANGED: "#b26a00",
    SyncStatus.PUBLISHING: "#1f5fa8",
    SyncStatus.FAILED: "#b00020",
}
STATUS_BADGE_COLOURS = {
    Publication.Status.QUEUED: "#1f5fa8",
    Publication.Status.SENDING: "#1f5fa8",
    Publication.Status.RETRYING: "#b26a00",
    Publication.Status.WAITING: "#b26a00",
    Publication.Status.SUCCEEDED: "#1b7f3b",
    Publication.Status.FAILED: "#b00020",
    Publication.Status.SUPERSEDED: "#666",
    # Grey like superseded: staff chose to stop it, nothing went wrong.
    Publication.Status.CANCELLED: "#666",
}
# What the cancel form sends when staff leave the reason empty (shown as "Cancelled: ...").
NO_CANCEL_REASON = "No reason given."


def badge(text, colour, css_class=""):
    return format_html(
        '<span class="kombo-badge {}" style="display:inline-block;padding:1px 8px;border-radius:9px;'
        'color:#fff;background:{};font-size:11px;white-space:nowrap">{}</span>',
        css_class, colour, text,
    )


def publication_status_text(publication):
    """"retrying: attempt 3 of 8, next try at 16:32:10 UTC" and the like."""
    from django.conf import settings

    status = publication.status
    if status == Publication.Status.RETRYING and publication.next_attempt_at:
        when = timezone.localtime(publication.next_attempt_at).strftime("%H:%M:%S %Z")
        return (f"Retrying: attempt {publication.attempts + 1} of {settings.KOMBO_MAX_ATTEMPTS}, "
                f"next try at {when}")
    if status == Publication.Status.WAITING and publication.next_attempt_at:
        when = timezone.localtime(publication.next_attempt_at).strftime("%Y-%m-%d %H:%M %Z")
        return f"Waiting for the customer's first sync; next try at {when}"
    if status == Publication.Status.SENDING:
        if publication.cancel_requested_at:
            return f"Sending (attempt {publication.attempts}), cancel requested"
        return f"Sending (attempt {publication.attempts})"
    return publication.get_status_display()


def publication_title(publication):
    """"Publication #260 of Acme Corp": the customer, not the integration's database id."""
    return f"Publication #{publication.pk} of {publication.integration.name}"


def publication_badge(publication):
    return badge(publication_status_text(publication), STATUS_BADGE_COLOURS[publication.status],
                 f"status-{publication.status}")


def plural(count, singular, plural_form=None):
    """"1 publication", "2 publications"."""
    return f"{count} {singular if count == 1 else (plural_form or singular + 's')}"


def cancel_summary(ended, ending):
    """What a cancel did, in staff's words: "2 publications cancelled. 1 publication is in flight:
    it ends as cancelled when its request returns." Empty when it did nothing."""
    parts = []
    if ended:
        parts.append(f"{plural(ended, 'publication')} cancelled.")
    if ending == 1:
        parts.append("1 publication is in flight: it ends as cancelled when its request returns.")
    elif ending:
        parts.append(f"{ending} publications are in flight: they end as cancelled when their requests return.")
    return " ".join(parts)


# --- history ---------------------------------------------------------------------------------

class ChangeHistoryWithValuesMixin:
    """The History page says what changed, old and new, not only which fields."""

    def construct_change_message(self, request, form, formsets, add=False):
        if add or not form.changed_data:
            return super().construct_change_message(request, form, formsets, add)
        changes = {}
        for name in form.changed_data:
            old, new = form.initial.get(name), form.cleaned_data.get(name)
            if hasattr(new, "all") or isinstance(old, (list, tuple)):
                before = {str(getattr(o, "package_id", o)) for o in (old or [])}
                after = {str(getattr(o, "package_id", o)) for o in (new.all() if hasattr(new, "all") else new or [])}
                added, removed = sorted(after - before), sorted(before - after)
                changes[name] = (
                    "removed " + ", ".join(removed) if removed else "",
                    "added " + ", ".join(added) if added else "",
                )
                continue
            changes[name] = (old if old is not None else "", new if new is not None else "")
        return f"Changed in the admin: {history.describe_changes(changes)}."


# --- catalogue ------------------------------------------------------------------------------

@admin.register(AssessmentPackage)
class AssessmentPackageAdmin(ChangeHistoryWithValuesMixin, admin.ModelAdmin):
    list_display = ("package_id", "name", "type", "offered_by", "updated_at")
    list_display_links = ("package_id", "name")
    list_filter = ("type",)
    search_fields = ("package_id", "name", "description")
    readonly_fields = ("integrations_offering", "created_at", "updated_at")
    fields = ("package_id", "type", "name", "description", "integrations_offering",
              "created_at", "updated_at")

    change_list_template = "admin/packages_app/assessmentpackage/change_list.html"

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(integration_count=Count("integrations"))

    def get_urls(self):
        return [
            path("import/", self.admin_site.admin_view(self.import_view),
                 name="packages_app_assessmentpackage_import"),
            path("export/", self.admin_site.admin_view(self.export_view),
                 name="packages_app_assessmentpackage_export"),
        ] + super().get_urls()

    def has_import_permission(self, request):
        return self.has_add_permission(request) and self.has_change_permission(request)

    def changelist_view(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "can_import": self.has_import_permission(request)}
        return super().changelist_view(request, extra_context)

    def export_view(self, request):
        """The whole catalogue as JSON (Kombo's request shape) or CSV, as a download."""
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        fmt = request.GET.get("format", "json")
        if fmt not in ("json", "csv"):
            fmt = "json"
        content = catalogue_io.export_json() if fmt == "json" else catalogue_io.export_csv()
        content_type = "application/json" if fmt == "json" else "text/csv"
        response = HttpResponse(content, content_type=f"{content_type}; charset=utf-8")
        stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
        response["Content-Disposition"] = f'attachment; filename="packages-{stamp}.{fmt}"'
        return response

    def import_view(self, request):
        """Upload a JSON or CSV catalogue: every row is checked first; one bad row, nothing written."""
        if not self.has_import_permission(request):
            raise PermissionDenied
        form = CatalogueImportForm(request.POST or None, request.FILES or None)
        result = None
        if request.method == "POST" and form.is_valid():
            upload = form.cleaned_data["file"]
            fmt = form.cleaned_data["format"] or None
            try:
                result = catalogue_io.catalogue_import(
                    data=upload.read(), filename=upload.name, fmt=fmt, user=request.user,
                    via=f"import of {upload.name}",
                )
            except catalogue_io.ImportFormatError as exc:
                form.add_error("file", str(exc))
            else:
                if result.ok:
                    self.message_user(request, f"Imported {upload.name}: {result.summary()}", messages.SUCCESS)
                    return HttpResponseRedirect(reverse("admin:packages_app_assessmentpackage_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "title": "Import packages",
            "opts": self.model._meta,
            "form": form,
            "result": result,
        }
        return TemplateResponse(request, "admin/packages_app/assessmentpackage/import.html", context)

    @admin.display(description="offered by", ordering="integration_count")
    def offered_by(self, obj):
        count = obj.integration_count
        return f"{count} integration{'s' if count != 1 else ''}"

    @admin.display(description="offered by")
    def integrations_offering(self, obj):
        if not obj.pk:
            return "—"
        integrations = obj.integrations.order_by("name")
        if not integrations:
            return "No integration offers this package yet."
        return format_html_join(
            ", ", '<a href="{}">{}</a>',
            ((reverse("admin:packages_app_integration_change", args=[i.pk]), str(i))
             for i in integrations),
        )


# --- integrations ---------------------------------------------------------------------------

class SyncStatusFilter(admin.SimpleListFilter):
    title = "sync status"
    parameter_name = "sync"

    def lookups(self, request, model_admin):
        return SyncStatus.choices

    def queryset(self, request, queryset):
        if self.value() not in SyncStatus.values:
            return queryset
        annotated = Integration.objects.with_sync_state().filter(pk__in=queryset.values("pk"))
        matching = [i.pk for i in annotated if i.sync_status == self.value()]
        return queryset.filter(pk__in=matching)


@admin.register(Integration)
class IntegrationAdmin(ChangeHistoryWithValuesMixin, admin.ModelAdmin):
    list_display = ("name", "kombo_integration_id", "region", "is_active", "package_total",
                    "sync_status_badge", "last_published")
    list_filter = (SyncStatusFilter, "region", "is_active")
    search_fields = ("name", "kombo_integration_id")
    filter_horizontal = ("packages",)
    actions = ("publish_selected", "pause_selected")
    fieldsets = (
        (None, {"fields": ("name", "kombo_integration_id", "region", "is_active")}),
        ("Packages offered", {"fields": ("packages",)}),
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
            field.help_text = (f"{field.help_text} Pausing also cancels the publications it has on "
                               "their way to Kombo.")
        return field

    @admin.display(description="packages")
    def package_total(self, obj):
        return len(obj.packages.all())  # prefetched by with_sync_state()

    @admin.display(description="sync status")
    def sync_status_badge(self, obj):
        status = SyncStatus(obj.sync_status)
        if status == SyncStatus.FAILED and obj.latest_publication_status == Publication.Status.CANCELLED:
            # Still not at Kombo, but stopped on purpose (a cancel, a pause): grey, not an alarm.
            return badge(status.label, STATUS_BADGE_COLOURS[Publication.Status.CANCELLED],
                         f"sync-{status.value} sync-cancelled")
        return badge(status.label, SYNC_BADGE_COLOURS[status], f"sync-{status.value}")

    @admin.display(description="last published", ordering="last_published_at")
    def last_published(self, obj):
        if not obj.last_published_at:
            return "—"
        return timezone.localtime(obj.last_published_at).strftime("%d %b %Y %H:%M")

    # Publishing ---------------------------------------------------------------------------
    def has_publish_permission(self, request):
        return request.user.has_perm(PUBLISH_PERMISSION)

    @admin.action(description="Publish selected integrations to Kombo…", permissions=["publish"])
    def publish_selected(self, request, queryset):
        ids = ",".join(str(pk) for pk in queryset.values_list("pk", flat=True))
        return HttpResponseRedirect(
            reverse("admin:packages_app_integration_publish") + "?" + urlencode({"ids": ids})
        )

    # Pausing -------------------------------------------------------------------------------
    @admin.action(description="Pause publishing", permissions=["change"])
    def pause_selected(self, request, queryset):
        """Pause the integrations and cancel what they have on its way (publishing does both)."""
        ids = list(queryset.values_list("pk", flat=True))
        were_active = list(Integration.objects.filter(pk__in=ids, is_active=True))
        paused, ended, ending = publishing.integrations_pause(integration_ids=ids, paused_by=request.user)
        if not (paused or ended or ending):
            self.message_user(request, "Nothing to pause: the selected integration"
                              f"{' was' if len(ids) == 1 else 's were'} already paused.", messages.WARNING)
            return
        for integration in were_active:
            self.log_change(request, integration, "Paused with the “Pause publishing” action.")
        parts = [f"{plural(paused, 'integration')} paused."] if paused else []
        parts.append(cancel_summary(ended, ending) or "Nothing was on its way to Kombo.")
        if len(ids) > paused:
            already = len(ids) - paused
            parts.append(f"{plural(already, 'other selected integration')} "
                         f"{'was' if already == 1 else 'were'} already paused.")
        self.message_user(request, " ".join(parts), messages.SUCCESS)

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if change and "is_active" in form.changed_data and form.initial.get("is_active") and not obj.is_active:
            # Paused by this save: what it had on its way must not reach Kombo.
            obj.cancelled_by_pause = publishing.integration_publications_cancel(
                integration_ids=[obj.pk], cancelled_by=request.user)

    def response_change(self, request, obj):
        response = super().response_change(request, obj)  # "... was changed successfully." first
        if hasattr(obj, "cancelled_by_pause"):
            summary = cancel_summary(*obj.cancelled_by_pause)
            self.message_user(request, f"Publishing to Kombo is paused for {obj.name}: "
                              f"{summary or 'nothing was on its way.'}",
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
            "title": f"Compare {integration.name} with Kombo",
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

    def publish_view(self, request):
        """GET: what publishing would change. POST (post=yes): create the publications."""
        if not self.has_publish_permission(request):
            raise PermissionDenied
        source = request.POST if request.method == "POST" else request.GET
        if source.get("out_of_sync"):
            queryset = selectors.out_of_sync_integrations()
        else:
            ids = [int(i) for i in (p.strip() for p in source.get("ids", "").split(","))
                   if i.isascii() and i.isdigit()]
            queryset = Integration.objects.filter(pk__in=ids)
        previews = selectors.integrations_preview(queryset)
        changelist_url = reverse("admin:packages_app_integration_changelist")
        if not previews:
            self.message_user(request, "No integrations to publish.", messages.WARNING)
            return HttpResponseRedirect(changelist_url)

        errors = []
        if request.method == "POST" and request.POST.get("post") == "yes":
            response = self._publish_confirmed(request, previews, errors)
            if response is not None:
                return response
            previews = selectors.integrations_preview(queryset)  # fresh diff after a refusal

        context = {
            **self.admin_site.each_context(request),
            "title": "Publish to Kombo",
            "opts": self.model._meta,
            "previews": previews,
            "errors": errors,
            "ids": ",".join(str(p.integration.pk) for p in previews),
            "out_of_sync": bool(source.get("out_of_sync")),
            "publish_anyway": request.POST.get("publish_anyway") == "on",
            "removal_total": sum(len(p.diff.removed) for p in self._risky(previews)),
            "needs_removal_confirmation": bool(self._risky(previews)),
            "any_in_sync": any(p.in_sync and not p.paused for p in previews),
            "api_key_status": publishing.api_key_status(),
        }
        return TemplateResponse(request, "admin/packages_app/integration/publish_confirmation.html", context)

    @staticmethod
    def _risky(previews):
        """Previews whose publish removes many packages or sends an empty list."""
        return [p for p in previews
                if p.needs_removal_confirmation and not p.paused and not p.in_sync]

    def _publish_confirmed(self, request, previews, errors):
        publish_anyway = request.POST.get("publish_anyway") == "on"
        chosen = [p for p in previews if not p.paused and (publish_anyway or not p.in_sync)]
        if not chosen:
            self.message_user(request, "Nothing to publish: every selected integration is in sync "
                              "or paused. Tick “publish anyway” to send them again.", messages.WARNING)
            return HttpResponseRedirect(reverse("admin:packages_app_integration_changelist"))
        risky = self._risky(chosen)
        removal_total = sum(len(p.diff.removed) for p in risky)
        if risky and request.POST.get("confirm_removals") != str(removal_total):
            errors.append(
                f"Tick the box to confirm that Kombo will mark {removal_total} package(s) deleted "
                f"(or send an empty list) for {len(risky)} integration(s)."
            )
            return None
        expected = {}
        for p in chosen:
            value = request.POST.get(f"sha256-{p.integration.pk}")
            expected[p.integration.pk] = value
        try:
            publications = publishing.publications_create(
                integrations=[p.integration for p in chosen], requested_by=request.user,
                expected_sha256=expected,
            )
        except publishing.CatalogueChanged as exc:
            errors.append(f"{exc} Nothing was published. Read the new changes below and confirm again.")
            return None
        except publishing.IntegrationPaused as exc:
            errors.append(f"{exc} Nothing was published.")
            return None

        count = len(publications)
        skipped = len(previews) - count
        text = f"Queued {count} publication{'s' if count != 1 else ''} to Kombo."
        if skipped:
            text += f" Skipped {skipped} integration{'s' if skipped != 1 else ''} (in sync or paused)."
        self.message_user(request, text, messages.SUCCESS)
        not_queued = [p for p in publications if p.enqueued is False]
        if not_queued:
            self.message_user(
                request,
                f"The task queue is unreachable right now: {len(not_queued)} publication(s) are saved "
                "and will be sent automatically as soon as it is back. No need to publish again.",
                messages.WARNING,
            )
        if count == 1:
            return HttpResponseRedirect(
                reverse("admin:packages_app_publication_change", args=[publications[0].pk])
            )
        return HttpResponseRedirect(reverse("admin:packages_app_integration_changelist"))

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = {
            **(extra_context or {}),
            "can_publish": self.has_publish_permission(request),
            "api_key_status": publishing.api_key_status(),
            "can_compare": self.has_change_permission(request) or self.has_publish_permission(request),
            **(self._publications_context(object_id)
               if str(object_id).isdigit() and request.user.has_perm("packages_app.view_publication")
               else {}),
        }
        return super().change_view(request, object_id, form_url, extra_context)


# --- the ledger -----------------------------------------------------------------------------

@admin.register(Publication)
class PublicationAdmin(admin.ModelAdmin):
    list_display = ("id", "integration", "status_badge", "requested_at", "requested_by",
                    "package_count", "attempts", "http_status", "error_code", "warning_count")
    list_display_links = ("id", "status_badge")
    list_filter = ("status", "requested_at")
    search_fields = ("integration__name", "integration__kombo_integration_id", "error_code",
                     "error_message")
    list_select_related = ("integration", "requested_by")
    date_hierarchy = "requested_at"
    # What changes while a publication runs is in the live box above the form (it polls);
    # the fields below never change once the publication exists.
    fieldsets = (
        (None, {"fields": ("integration", "requested_by", "requested_at")}),
        ("What was sent", {"fields": ("package_count", "body_sha256", "pretty_body")}),
    )
    readonly_fields = ("integration", "requested_by", "requested_at", "package_count",
                       "body_sha256", "pretty_body")
    change_form_template = "admin/packages_app/publication/change_form.html"
    actions = ("cancel_selected",)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj):
        return publication_badge(obj)

    @admin.display(description="warnings")
    def warning_count(self, obj):
        return len(obj.warnings or [])

    @admin.display(description="body")
    def pretty_body(self, obj):
        import json

        return format_html("<pre style='max-height:30em;overflow:auto'>{}</pre>",
                           json.dumps(obj.body_dict(), indent=2, ensure_ascii=False))

    def get_urls(self):
        return [
            path("<int:pk>/live/", self.admin_site.admin_view(self.live_view),
                 name="packages_app_publication_live"),
            path("<int:pk>/cancel/", self.admin_site.admin_view(self.cancel_view),
                 name="packages_app_publication_cancel"),
        ] + super().get_urls()

    # Cancelling ----------------------------------------------------------------------------
    # Publishing's rule, not a role of its own: who may send a list may stop one.
    def has_publish_permission(self, request):
        return request.user.has_perm(PUBLISH_PERMISSION)

    @staticmethod
    def _cancellable(publication):
        """Active, and not already asked to stop (a cancel of one in flight is asked only once)."""
        return (publication.status in Publication.ACTIVE_STATUSES
                and not (publication.status == Publication.Status.SENDING and publication.cancel_requested_at))

    @admin.action(description="Cancel publishing…", permissions=["publish"])
    def cancel_selected(self, request, queryset):
        """As delete_selected: a confirmation page first, then the cancel on post=yes."""
        publications = list(queryset.select_related("integration", "requested_by", "cancelled_by"))
        if request.POST.get("post") == "yes":
            self._cancel(request, publications)
            return None  # back to the list, its filters kept
        return self._cancel_confirmation(request, publications, from_list=True)

    def cancel_view(self, request, pk):
        """The change page's button: GET the confirmation, POST (post=yes) the cancel."""
        publication = get_object_or_404(
            Publication.objects.select_related("integration", "requested_by", "cancelled_by"), pk=pk)
        if not (self.has_view_permission(request, publication) and self.has_publish_permission(request)):
            raise PermissionDenied
        change_url = reverse("admin:packages_app_publication_change", args=[pk])
        if request.method == "POST" and request.POST.get("post") == "yes":
            self._cancel(request, [publication])
            return HttpResponseRedirect(change_url)
        return self._cancel_confirmation(request, [publication], from_list=False) or HttpResponseRedirect(change_url)

    def _nothing_to_cancel(self, request, publications):
        count = len(publications)
        asked = [p for p in publications if p.status == Publication.Status.SENDING and p.cancel_requested_at]
        if asked:
            ends = ("it ends when its request returns" if len(asked) == 1
                    else "they end when their requests return")
            text = (f"Nothing more to cancel: cancelling was already requested for "
                    f"{plural(len(asked), 'publication')} in flight; {ends}.")
        else:
            text = ("Nothing to cancel: the selected publication had already ended." if count == 1 else
                    "Nothing to cancel: the selected publications had already ended.")
        self.message_user(request, text, messages.WARNING)

    def _cancel_confirmation(self, request, publications, *, from_list):
        """The page that says what a cancel would do; None (and a warning) when it would do nothing."""
        chosen = [p for p in publications if self._cancellable(p)]
        if not chosen:
            self._nothing_to_cancel(request, publications)
            return None
        rows = [{"publication": p, "badge": publication_badge(p)} for p in publications]
        context = {
            **self.admin_site.each_context(request),
            "title": "Cancel publishing",
            "opts": self.model._meta,
            "resting": [r for r in rows if r["publication"].status in Publication.RESTING_STATUSES],
            "in_flight": [r for r in rows if self._cancellable(r["publication"])
                          and r["publication"].status == Publication.Status.SENDING],
            "left": [r for r in rows if not self._cancellable(r["publication"])],
            "chosen": chosen,
            "from_list": from_list,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "publication_title": publication_title(publications[0]),
            "back_url": (request.get_full_path() if from_list
                         else reverse("admin:packages_app_publication_change", args=[publications[0].pk])),
            "reason_max_length": Publication._meta.get_field("cancel_reason").max_length,
            "no_reason": NO_CANCEL_REASON,
        }
        return TemplateResponse(request, "admin/packages_app/publication/cancel_confirmation.html", context)

    def _cancel(self, request, publications):
        ids = [p.pk for p in publications]
        # Asked before this request: told apart from those that had ended, in the message.
        asked_before = Publication.objects.filter(pk__in=ids, status=Publication.Status.SENDING,
                                                  cancel_requested_at__isnull=False).count()
        max_length = Publication._meta.get_field("cancel_reason").max_length
        reason = " ".join(request.POST.get("reason", "").split())[:max_length] or NO_CANCEL_REASON
        ended, ending = publishing.publications_cancel(publication_ids=ids, cancelled_by=request.user,
                                                       reason=reason)
        if not (ended or ending):
            self._nothing_to_cancel(request, list(Publication.objects.filter(pk__in=ids)))
            return
        parts = [cancel_summary(ended, ending)]
        had_ended = len(ids) - ended - ending - asked_before
        if had_ended > 0:
            parts.append(f"{plural(had_ended, 'other selected publication')} had already ended.")
        if asked_before:
            parts.append(f"{plural(asked_before, 'other publication')} in flight "
                         f"{'was' if asked_before == 1 else 'were'} already being cancelled.")
        self.message_user(request, " ".join(parts), messages.SUCCESS)

    def _live_html(self, request, publication):
        can_publish = request.user.has_perm(PUBLISH_PERMISSION)
        return render_to_string("admin/packages_app/publication/_live.html", {
            "publication": publication,
            "attempts": list(publication.attempt_log.all()),
            "badge": publication_badge(publication),
            "can_publish": can_publish,
            "can_cancel": can_publish and self._cancellable(publication),
        }, request)

    def live_view(self, request, pk):
        """The status box of one publication, for the page's poll."""
        publication = get_object_or_404(Publication.objects.select_related("cancelled_by"), pk=pk)
        if not self.has_view_permission(request, publication):
            raise PermissionDenied
        return JsonResponse({"final": publication.is_final, "status": publication.status,
                             "html": self._live_html(request, publication)})

    def change_view(self, request, object_id, form_url="", extra_context=None):
        publication = (Publication.objects.select_related("integration", "cancelled_by").filter(pk=object_id).first()
                       if str(object_id).isdigit() else None)
        extra_context = {
            **(extra_context or {}),
            # The heading and the breadcrumbs name the customer: "#260 of 368" reads like a count.
            **({"subtitle": publication_title(publication)} if publication else {}),
            "can_publish": request.user.has_perm(PUBLISH_PERMISSION),
            "live_html": self._live_html(request, publication) if publication else "",
            # From the same read as the box: the admin reads `original` separately, and a
            # publication that ends in between would leave a stale box that never polls.
            "live_final": publication.is_final if publication else True,
        }
        return super().change_view(request, object_id, form_url, extra_context)

