"""The publish flow of the integrations admin: the action, the confirmation page and the confirm.

What staff saw travels as a preview stored server-side, in their session: the selected ids and
the body hash of each integration as the page first showed it. The page and its form carry only
the preview's id and the digest of those hashes, so both are the same size for one integration
or five thousand (Django refuses a form of more than DATA_UPLOAD_MAX_NUMBER_FIELDS fields, and
gunicorn a request line of more than 4,094 bytes).
"""
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.http import urlencode

from .. import publishing, selectors
from ..models import Integration
from .display import PUBLISH_PERMISSION, plural
from .publish_previews import (
    StoredPreview,
    preview_discard,
    preview_load,
    preview_new,
    preview_save,
    shown_preview,
)

PER_PAGE = 50
# Up to this many integrations, the details are shown unfolded.
OPEN_UP_TO = 10
# An error names this many integrations, then counts the rest.
NAMED_UP_TO = 10
SHOW_CHOICES = (("changes", "With changes"), ("removals", "With removals"), ("skipped", "Skipped"),
                ("all", "All"))


def names_text(integrations):
    names = [str(i) for i in integrations[:NAMED_UP_TO]]
    rest = len(integrations) - len(names)
    return ", ".join(names) + (f" and {plural(rest, 'other integration')}" if rest else "")


def changed_text(integrations):
    """CatalogueChanged's message, naming at most NAMED_UP_TO integrations."""
    if len(integrations) <= NAMED_UP_TO:
        return str(publishing.CatalogueChanged(integrations))
    return f"The packages of {names_text(integrations)} changed since the preview."


def paused_text(integrations):
    if len(integrations) <= NAMED_UP_TO:
        return str(publishing.IntegrationPaused(integrations))
    return f"{names_text(integrations)} are paused: activate them before publishing."


class PublishFlowMixin:
    """For IntegrationAdmin: "Publish selected integrations to Kombo…", the confirmation page at
    admin:packages_app_integration_publish and its confirm. Publishing needs
    packages_app.publish_integration; every change goes through `publishing`."""

    def has_publish_permission(self, request):
        return request.user.has_perm(PUBLISH_PERMISSION)

    @admin.action(description="Publish selected integrations to Kombo…", permissions=["publish"])
    def publish_selected(self, request, queryset):
        # Select all across pages gives every integration the filters match: the ids are stored
        # server-side, the page is opened by the preview's id alone.
        ids = list(queryset.order_by().values_list("pk", flat=True))
        preview = preview_save(request, preview_new(ids))
        return HttpResponseRedirect(
            reverse("admin:packages_app_integration_publish") + "?" + urlencode({"preview": preview.token}))

    def publish_view(self, request):
        """GET: what publishing would change (`?preview=`, or for links `?ids=` a few ids or
        `?out_of_sync=1`). POST with post=yes: create the publications."""
        if not self.has_publish_permission(request):
            raise PermissionDenied
        if request.method == "POST" and request.POST.get("post") == "yes":
            return self._publish_confirmed(request)
        source = request.POST if request.method == "POST" else request.GET
        stored = None
        if "preview" in source:
            stored = preview_load(request, source["preview"])
            if stored is None:
                return self._preview_gone(request)
            previews = selectors.integrations_preview(Integration.objects.filter(pk__in=stored.ids))
        elif source.get("out_of_sync"):
            previews = selectors.out_of_sync_previews()
        else:
            previews = selectors.integrations_preview(Integration.objects.filter(pk__in=self._requested_ids(source)))
        if not previews:
            return self._nothing_to_publish(request)
        notices = []
        shown = {p.integration.pk: p.plan.sha256 for p in previews}
        if stored is None:
            stored = shown_preview(request, previews)
        elif stored.sha256 is None:
            # Opened by the action and first shown now: these are the hashes staff confirm.
            stored = preview_save(request, StoredPreview(stored.token, sorted(shown), shown, stored.created))
        elif any(stored.sha256.get(pk) != sha for pk, sha in shown.items()):
            changed = [p.integration for p in previews if stored.sha256.get(p.integration.pk) != p.plan.sha256]
            notices.append(f"{changed_text(changed)} The totals and changes below are as they are now.")
            stored = shown_preview(request, previews)
        return self._confirmation_page(request, previews, stored, notices=notices)

    def _requested_ids(self, source):
        if source.get("out_of_sync"):
            return list(selectors.out_of_sync_integrations().values_list("pk", flat=True))
        return [int(i) for i in (p.strip() for p in source.get("ids", "").split(","))
                if i.isascii() and i.isdigit()]

    def _preview_gone(self, request):
        self.message_user(request, "This publish preview is no longer available (it expired or was replaced "
                          "by newer ones). Nothing was published: select the integrations again.", messages.WARNING)
        return HttpResponseRedirect(reverse("admin:packages_app_integration_changelist"))

    def _nothing_to_publish(self, request):
        self.message_user(request, "No integrations to publish.", messages.WARNING)
        return HttpResponseRedirect(reverse("admin:packages_app_integration_changelist"))

    def _publish_confirmed(self, request):
        publish_anyway = request.POST.get("publish_anyway") == "on"
        token = request.POST.get("preview")
        if token is not None:
            stored = preview_load(request, token)
            if stored is None or stored.sha256 is None:
                return self._preview_gone(request)
            ids, expected = stored.ids, stored.sha256
            page_is_current = request.POST.get("digest") == stored.digest
        else:
            # A form of the former kind, or a script: each integration's hash in its own field.
            stored = None
            ids = self._requested_ids(request.POST)
            expected = {pk: request.POST.get(f"sha256-{pk}") for pk in ids}
            page_is_current = True
        previews = selectors.integrations_preview(Integration.objects.filter(pk__in=ids))
        if not previews:
            return self._nothing_to_publish(request)
        summary = selectors.PublishSummary(previews, publish_anyway)
        if not summary.chosen:
            self.message_user(request, "Nothing to publish: every selected integration is in sync "
                              "or paused. Tick “publish anyway” to send them again.", messages.WARNING)
            return HttpResponseRedirect(reverse("admin:packages_app_integration_changelist"))

        errors, changed_meanwhile = [], True
        changed = [p.integration for p in summary.chosen if expected.get(p.integration.pk) != p.plan.sha256]
        if not page_is_current:
            errors.append("This confirmation page is out of date: the catalogue changed while it was "
                          "open. Nothing was published. Read the new changes below and confirm again.")
        elif changed:
            errors.append(f"{changed_text(changed)} Nothing was published. Read the new changes below and "
                          "confirm again.")
        elif summary.risky and request.POST.get("confirm_removals") != str(summary.removal_total):
            changed_meanwhile = False
            errors.append(
                f"Tick the box to confirm that Kombo will mark {summary.removal_total} package(s) deleted "
                f"(or send an empty list) for {len(summary.risky)} integration(s)."
            )
        else:
            try:
                publications = publishing.publications_create(
                    integrations=[p.integration for p in summary.chosen], requested_by=request.user,
                    expected_sha256={p.integration.pk: expected.get(p.integration.pk) for p in summary.chosen},
                )
            except publishing.CatalogueChanged as exc:
                errors.append(f"{changed_text(exc.integrations)} Nothing was published. Read the new changes "
                              "below and confirm again.")
            except publishing.IntegrationPaused as exc:
                errors.append(f"{paused_text(exc.integrations)} Nothing was published.")
            else:
                if stored is not None:
                    preview_discard(request, stored.token)
                return self._published(request, publications, len(previews))
            previews = selectors.integrations_preview(Integration.objects.filter(pk__in=ids))

        if changed_meanwhile or stored is None:
            stored = shown_preview(request, previews)  # what the page below shows, to confirm again
        return self._confirmation_page(request, previews, stored, errors=errors, publish_anyway=publish_anyway)

    def _published(self, request, publications, selected):
        count = len(publications)
        skipped = selected - count
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

    def _confirmation_page(self, request, previews, stored, *, errors=(), notices=(), publish_anyway=False):
        summary = selectors.PublishSummary(previews, publish_anyway)
        lists = {
            "all": previews,
            "changes": [p for p in previews if not p.paused and not p.in_sync],
            "removals": [p for p in previews if not p.paused and not p.in_sync
                         and (p.diff.removed or p.sends_empty_list)],
            "skipped": [p for p in previews if p.paused or p.in_sync],
        }
        # Past one page, the details open on what will change rather than on what is skipped.
        default = "changes" if len(previews) > PER_PAGE and lists["changes"] else "all"
        show = request.GET.get("show") if request.GET.get("show") in lists else default
        page = Paginator(lists[show], PER_PAGE).get_page(request.GET.get("page"))
        base = reverse("admin:packages_app_integration_publish")

        def link(**params):
            return base + "?" + urlencode({"preview": stored.token, "show": show, **params})

        context = {
            **self.admin_site.each_context(request),
            "title": "Publish to Kombo",
            "opts": self.model._meta,
            "summary": summary,
            "totals": _totals(summary),
            "previews": list(page.object_list),  # this page's
            "rows": [(p, _outline(p)) for p in page.object_list],
            "page": page,
            "paginated": page.paginator.num_pages > 1,
            "page_links": [(n, link(page=n) if isinstance(n, int) else None)
                           for n in page.paginator.get_elided_page_range(page.number, on_each_side=2, on_ends=1)],
            "previous_link": link(page=page.previous_page_number()) if page.has_previous() else None,
            "next_link": link(page=page.next_page_number()) if page.has_next() else None,
            "show": show,
            "show_links": [(key, label, f"{len(lists[key]):,}", base + "?" + urlencode({"preview": stored.token, "show": key}))
                           for key, label in SHOW_CHOICES] if len(previews) > PER_PAGE else [],
            "counts": {"listed": f"{page.paginator.count:,}", "chosen": f"{len(summary.chosen):,}",
                       "skipped": f"{summary.skipped:,}", "in_sync": f"{len(summary.in_sync):,}",
                       "risky": f"{len(summary.risky):,}", "removal_total": f"{summary.removal_total:,}"},
            "open_details": len(previews) <= OPEN_UP_TO,
            "preview": stored,
            "errors": errors,
            "notices": notices,
            "publish_anyway": publish_anyway,
            "removal_total": summary.removal_total,
            "needs_removal_confirmation": summary.needs_removal_confirmation,
            "any_in_sync": bool(summary.in_sync),
            "api_key_status": publishing.api_key_status(),
        }
        return TemplateResponse(request, "admin/packages_app/integration/publish_confirmation.html", context)


def _outline(p):
    """One integration's changes in a line, zeros left out: [(text, is a removal)]."""
    if p.paused:
        return [("paused, skipped", False)]
    if p.in_sync:
        return [("no changes, skipped", False)]
    parts = [] if p.previously_published else [("first publish", False)]
    for items, verb in ((p.diff.added, "to add"), (p.diff.changed, "to change")):
        if items:
            parts.append((f"{len(items)} {verb}", False))
    if p.diff.removed:
        parts.append((f"{len(p.diff.removed)} to remove", True))
    if p.sends_empty_list:
        parts.append(("an empty list", True))
    return parts


def _totals(summary):
    """The figures the page opens with: (figure, label, css class)."""
    in_sync, paused = len(summary.in_sync), len(summary.paused)
    return [
        (f"{summary.count:,}", "integration" if summary.count == 1 else "integrations", "selected"),
        (f"{len(summary.chosen):,}", "to publish", "publish"),
        (f"{summary.additions:,}", "package addition" if summary.additions == 1 else "package additions", "added"),
        (f"{summary.changes:,}", "package change" if summary.changes == 1 else "package changes", "changed"),
        (f"{summary.removals:,}", "package removal" if summary.removals == 1 else "package removals",
         "removed" if summary.removals else "none"),
        (f"{0 if summary.publish_anyway else in_sync:,}", "skipped: in sync", "skip"),
        (f"{paused:,}", "skipped: paused", "skip"),
    ]
