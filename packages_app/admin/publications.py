"""The read-only ledger: publications, their live status, and cancelling them."""
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from .. import publishing
from ..models import (
    Publication,
)
from .display import NO_CANCEL_REASON, PUBLISH_PERMISSION, cancel_summary, plural, publication_badge, publication_title
from .mixins import ReadOnlyAdminMixin


@admin.register(Publication)
class PublicationAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("id", "integration", "status_badge", "requested_at", "requested_by",
                    "package_count", "attempts", "http_status", "error_code", "warning_count")
    list_display_links = ("id", "status_badge")
    list_filter = ("status", "requested_at")
    search_fields = ("integration__name", "integration__kombo_integration_id", "error_code",
                     "error_message")
    list_select_related = ("integration", "requested_by")
    # Years of history: no count of every publication on every page.
    show_full_result_count = False
    # No date_hierarchy: its year links cost a DISTINCT over every matching row (0.7 s of a
    # 1 s page at a million publications); the requested-at filter offers the same periods.
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
