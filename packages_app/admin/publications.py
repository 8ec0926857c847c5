"""The read-only ledger: publications, their live status, and cancelling them."""
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.widgets import AutocompleteSelect
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.utils.text import Truncator
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.utils.translation import ngettext

from .. import publishing
from ..models import (
    Integration,
    Publication,
)
from .display import (
    NO_CANCEL_REASON,
    PUBLISH_PERMISSION,
    cancel_summary,
    publication_badge,
    publication_title,
    when,
)
from .mixins import PublishPermissionMixin, ReadOnlyAdminMixin
from .pagination import CappedCountPaginator
from .widgets import is_db_id


class IntegrationFilter(admin.SimpleListFilter):
    """By integration, for 5,000 of them: a search box (the integrations' autocomplete), not a
    list of every name. Reads the integration page's link, `?integration__id__exact=<pk>`, and
    names the one chosen."""

    title = gettext_lazy("integration")
    parameter_name = "integration__id__exact"
    field_path = "integration"  # as Django's field filters say which field they filter
    template = "admin/packages_app/publication/integration_filter.html"

    def _chosen(self):
        """The integration chosen, read once a request (lookups() and queryset() both ask)."""
        if not hasattr(self, "_chosen_integration"):
            value = self.value()
            self._chosen_integration = (Integration.objects.filter(pk=value).only("name").first()
                                        if value and is_db_id(value) else None)
        return self._chosen_integration

    def lookups(self, request, model_admin):
        chosen = self._chosen()
        return [(str(chosen.pk), chosen.name)] if chosen else []

    def has_output(self):
        return True  # the search box, even before one is chosen

    def queryset(self, request, queryset):
        if self.value() is None:
            return queryset
        chosen = self._chosen()
        return queryset.filter(integration_id=chosen.pk) if chosen else queryset.none()


class WarningsFilter(admin.SimpleListFilter):
    title = gettext_lazy("Kombo's warnings")
    parameter_name = "warnings"
    field_path = "warnings"

    def lookups(self, request, model_admin):
        return [("yes", _("With warnings")), ("no", _("Without warnings"))]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.exclude(warnings=[])
        if self.value() == "no":
            return queryset.filter(warnings=[])
        return queryset


@admin.register(Publication)
class PublicationAdmin(ReadOnlyAdminMixin, PublishPermissionMixin, admin.ModelAdmin):
    # Fits 1,280 px beside the filters: short status badges (the whole text as their tooltip), the
    # integration by name (its Kombo id as the tooltip), who asked under when, long error codes
    # wrapped. The attempts are on each publication's page (and in a retrying one's badge).
    list_display = ("id", "integration_name", "status_badge", "requested", "packages", "http",
                    "error", "warning_count")
    list_display_links = ("id", "status_badge")
    list_filter = (IntegrationFilter, "status", WarningsFilter, "requested_at")
    search_fields = ("integration__name", "integration__kombo_integration_id", "error_code",
                     "error_message")
    list_select_related = ("integration", "requested_by")
    # Years of history: no count of every publication on every page, and the matching ones
    # counted up to a cap.
    show_full_result_count = False
    paginator = CappedCountPaginator
    # No date_hierarchy: its year links cost a DISTINCT over every matching row (0.7 s of a
    # 1 s page at a million publications); the requested-at filter offers the same periods.
    # What changes while a publication runs is in the live box above the form (it polls);
    # the fields below never change once the publication exists.
    readonly_fields = ("integration", "target_kombo_integration_id", "target_region", "requested_by",
                       "requested_at", "package_count", "body_sha256", "pretty_body")
    change_form_template = "admin/packages_app/publication/change_form.html"
    actions = ("cancel_selected",)

    def get_queryset(self, request):
        rows = super().get_queryset(request)
        if request.resolver_match and request.resolver_match.url_name == "packages_app_publication_changelist":
            # The list shows none of the bodies (10 kB each at 50 packages): not read at all.
            rows = rows.defer("body", "response_body", "rate_limit_headers")
        return rows

    @property
    def media(self):
        # The integration filter's search box is Django's autocomplete widget.
        return super().media + AutocompleteSelect(Publication._meta.get_field("integration"), self.admin_site).media

    def get_fieldsets(self, request, obj=None):
        return (
            (None, {"fields": ("integration", "target_kombo_integration_id", "target_region", "requested_by",
                               "requested_at")}),
            (self.body_heading(obj), {"fields": ("package_count", "body_sha256", "pretty_body")}),
        )

    @staticmethod
    def body_heading(publication):
        """"What was sent" only when a request went out: a superseded or cancelled one never left."""
        if publication is None or publication.attempts or publication.http_status or publication.was_accepted:
            return _("What was sent")
        if publication.is_final:
            return _("What would have been sent (never sent)")
        return _("What will be sent")

    @admin.display(description=gettext_lazy("integration"), ordering="integration__name")
    def integration_name(self, obj):
        return format_html('<span title="{}">{}</span>', obj.integration.kombo_integration_id, obj.integration.name)

    @admin.display(description=gettext_lazy("status"), ordering="status")
    def status_badge(self, obj):
        return publication_badge(obj, short=True)

    @admin.display(description=gettext_lazy("requested"), ordering="requested_at")
    def requested(self, obj):
        return format_html('<span style="white-space:nowrap">{}</span><br><small>{}</small>', when(obj.requested_at),
                           _("by %(user)s") % {"user": obj.requested_by} if obj.requested_by else _("by a script"))

    @admin.display(description=gettext_lazy("packages"), ordering="package_count")
    def packages(self, obj):
        return obj.package_count

    @admin.display(description=gettext_lazy("HTTP"), ordering="http_status")
    def http(self, obj):
        return obj.http_status

    @admin.display(description=gettext_lazy("error"), ordering="error_code")
    def error(self, obj):
        if not obj.error_code:
            return ""
        # "PLATFORM.<wbr>INTEGRATION_NOT_FOUND": wrapped at its dots, not anywhere.
        code = format_html_join(mark_safe(".<wbr>"), "{}", ((part,) for part in Truncator(obj.error_code).chars(60).split(".")))
        return format_html('<span class="kombo-error-code" title="{}" style="display:inline-block;max-width:14em;'
                           'overflow-wrap:anywhere">{}</span>', obj.error_message or obj.error_code, code)

    @admin.display(description=gettext_lazy("warnings"))
    def warning_count(self, obj):
        warnings = obj.warnings or []
        if not warnings:
            return "0"
        return format_html('<strong class="kombo-warning-count" title="{}" style="color:#8a5300">{}</strong>',
                           "\n".join(map(str, warnings)), len(warnings))

    @admin.display(description=gettext_lazy("body"))
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
    @staticmethod
    def _cancellable(publication):
        """Active, and not already asked to stop (a cancel of one in flight is asked only once)."""
        return (publication.status in Publication.ACTIVE_STATUSES
                and not (publication.status == Publication.Status.SENDING and publication.cancel_requested_at))

    @admin.action(description=gettext_lazy("Cancel publishing…"), permissions=["publish"])
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
            text = ngettext(
                "Nothing more to cancel: cancelling was already requested for %(count)d publication in "
                "flight; it ends when its request returns.",
                "Nothing more to cancel: cancelling was already requested for %(count)d publications in "
                "flight; they end when their requests return.", len(asked)) % {"count": len(asked)}
        else:
            text = ngettext("Nothing to cancel: the selected publication had already ended.",
                            "Nothing to cancel: the selected publications had already ended.", count)
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
            "title": _("Cancel publishing"),
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
            parts.append(ngettext("%(count)d other selected publication had already ended.",
                                  "%(count)d other selected publications had already ended.",
                                  had_ended) % {"count": had_ended})
        if asked_before:
            parts.append(ngettext("%(count)d other publication in flight was already being cancelled.",
                                  "%(count)d other publications in flight were already being cancelled.",
                                  asked_before) % {"count": asked_before})
        self.message_user(request, " ".join(parts), messages.SUCCESS)

    def _live_html(self, request, publication):
        can_publish = request.user.has_perm(PUBLISH_PERMISSION)
        return render_to_string("admin/packages_app/publication/_live.html", {
            "publication": publication,
            "attempts": list(publication.attempt_log.all()),
            "badge": publication_badge(publication),
            "can_publish": can_publish,
            "can_cancel": can_publish and self._cancellable(publication),
            "successor": self._successor(publication),
        }, request)

    @staticmethod
    def _successor(publication):
        """For a superseded publication: the next one of its integration (newest wins, so a newer
        one was taken instead of it)."""
        if publication.status != Publication.Status.SUPERSEDED:
            return None
        return (Publication.objects.filter(integration_id=publication.integration_id, pk__gt=publication.pk)
                .order_by("pk").only("pk", "status", "integration_id").first())

    def history_view(self, request, object_id, extra_context=None):
        # A publication is never edited: its story is its own page (the History button is hidden).
        if not str(object_id).isdigit():
            return super().history_view(request, object_id, extra_context)
        return HttpResponseRedirect(reverse("admin:packages_app_publication_change", args=[object_id]))

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
