"""The publish flow of the integrations admin: the action, the confirmation page and the confirm.

What staff saw travels as a preview stored server-side, in their session: the selected ids and
the body hash of each integration as the page first showed it. The page and its form carry only
the preview's id and the digest of those hashes, so both are the same size for one integration
or five thousand (Django refuses a form of more than DATA_UPLOAD_MAX_NUMBER_FIELDS fields, and
gunicorn a request line of more than 4,094 bytes).

What Kombo would delete comes from publish_review (Kombo's current list and open orders, where
they can be read): the stored preview keeps its digest too, so a confirm after Kombo's list or
orders changed is refused like one after the catalogue changed.
"""
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.http import urlencode
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext

from .. import publishing, selectors
from ..models import Integration
from ..publish_review import publish_review
from .mixins import PublishPermissionMixin
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
SHOW_CHOICES = (("changes", gettext_lazy("With changes")), ("removals", gettext_lazy("With removals")),
                ("skipped", gettext_lazy("Skipped")), ("all", gettext_lazy("All")))


def removal_tick_text(packages, integrations):
    """The error shown at the removal tick when it was left unticked."""
    return _("Tick the box to confirm that Kombo will mark %(packages)s deleted (or send an empty list) "
             "for %(integrations)s.") % {
        "packages": ngettext("%(count)s package", "%(count)s packages", packages) % {"count": f"{packages:,}"},
        "integrations": ngettext("%(count)s integration", "%(count)s integrations", integrations) % {
            "count": f"{integrations:,}"},
    }


def names_text(integrations):
    names = [str(i) for i in integrations[:NAMED_UP_TO]]
    rest = len(integrations) - len(names)
    if not rest:
        return ", ".join(names)
    return ngettext("%(names)s and %(count)d other integration", "%(names)s and %(count)d other integrations",
                    rest) % {"names": ", ".join(names), "count": rest}


def changed_text(integrations):
    """CatalogueChanged's message, naming at most NAMED_UP_TO integrations."""
    return _("The packages of %(names)s changed since the preview.") % {"names": names_text(integrations)}


def paused_text(integrations):
    if len(integrations) <= NAMED_UP_TO:
        # As publishing.IntegrationPaused says it.
        return _("%(names)s is paused: activate it before publishing.") % {"names": names_text(integrations)}
    return _("%(names)s are paused: activate them before publishing.") % {"names": names_text(integrations)}


class PublishFlowMixin(PublishPermissionMixin):
    """For IntegrationAdmin: "Publish selected integrations to Kombo…", the confirmation page at
    admin:packages_app_integration_publish and its confirm. Publishing needs
    packages_app.publish_integration; every change goes through `publishing`."""

    @admin.action(description=gettext_lazy("Publish selected integrations to Kombo…"), permissions=["publish"])
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
        review = publish_review(previews)
        removals = review.removals_key
        notices = []
        shown = {p.integration.pk: p.plan.sha256 for p in previews}
        if stored is None:
            stored = shown_preview(request, previews, removals=removals)
        elif stored.sha256 is None:
            # Opened by the action and first shown now: these are the hashes staff confirm.
            stored = preview_save(request, StoredPreview(stored.token, sorted(shown), shown, stored.created, removals))
        elif any(stored.sha256.get(pk) != sha for pk, sha in shown.items()):
            changed = [p.integration for p in previews if stored.sha256.get(p.integration.pk) != p.plan.sha256]
            notices.append(_("%(changed)s The totals and changes below are as they are now.") % {
                "changed": changed_text(changed)})
            stored = shown_preview(request, previews, removals=removals)
        elif stored.removals != removals:
            notices.append(_("What Kombo holds changed since this preview was first shown (its packages or "
                             "their open orders): the removals below are as they are now."))
            stored = shown_preview(request, previews, removals=removals)
        return self._confirmation_page(request, review, stored, notices=notices)

    def _requested_ids(self, source):
        if source.get("out_of_sync"):
            return list(selectors.out_of_sync_integrations().values_list("pk", flat=True))
        return [int(i) for i in (p.strip() for p in source.get("ids", "").split(","))
                if i.isascii() and i.isdigit()]

    def _preview_gone(self, request):
        self.message_user(request, _("This publish preview is no longer available (it expired or was replaced "
                                     "by newer ones). Nothing was published: select the integrations again."),
                          messages.WARNING)
        return HttpResponseRedirect(reverse("admin:packages_app_integration_changelist"))

    def _nothing_to_publish(self, request):
        self.message_user(request, _("No integrations to publish."), messages.WARNING)
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
        review = publish_review(previews, publish_anyway=publish_anyway)
        summary = review.summary
        if not summary.chosen:
            self.message_user(request, _("Nothing to publish: every selected integration is in sync "
                                         "or paused. Tick “publish anyway” to send them again."), messages.WARNING)
            return HttpResponseRedirect(reverse("admin:packages_app_integration_changelist"))

        errors, removal_error, changed_meanwhile = [], "", True
        changed = [p.integration for p in summary.chosen if expected.get(p.integration.pk) != p.plan.sha256]
        if not page_is_current:
            errors.append(_("This confirmation page is out of date: the catalogue changed while it was "
                            "open. Nothing was published. Read the new changes below and confirm again."))
        elif changed:
            errors.append(_("%(changed)s Nothing was published. Read the new changes below and "
                            "confirm again.") % {"changed": changed_text(changed)})
        elif stored is not None and stored.removals != review.removals_key:
            errors.append(_("What Kombo holds changed since the preview (packages added or removed at Kombo, "
                            "or their open orders). Nothing was published. Read the removals below and "
                            "confirm again."))
        elif summary.risky and request.POST.get("confirm_removals") != str(summary.removal_total):
            changed_meanwhile = False
            removal_error = removal_tick_text(summary.removal_total, len(summary.risky)) + _orders_text(review)
        else:
            try:
                publications = publishing.publications_create(
                    integrations=[p.integration for p in summary.chosen], requested_by=request.user,
                    expected_sha256={p.integration.pk: expected.get(p.integration.pk) for p in summary.chosen},
                )
            except publishing.CatalogueChanged as exc:
                errors.append(_("%(changed)s Nothing was published. Read the new changes below and "
                                "confirm again.") % {"changed": changed_text(exc.integrations)})
            except publishing.IntegrationPaused as exc:
                errors.append(_("%(paused)s Nothing was published.") % {"paused": paused_text(exc.integrations)})
            else:
                if stored is not None:
                    preview_discard(request, stored.token)
                return self._after_publish(request, publications, len(previews))
            previews = selectors.integrations_preview(Integration.objects.filter(pk__in=ids))
            review = publish_review(previews, publish_anyway=publish_anyway)

        if changed_meanwhile or stored is None:
            # What the page below shows, to confirm again.
            stored = shown_preview(request, previews, removals=review.removals_key)
        return self._confirmation_page(request, review, stored, errors=errors, removal_error=removal_error,
                                       publish_anyway=publish_anyway)

    def _after_publish(self, request, publications, selected):
        count = len(publications)
        skipped = selected - count
        text = ngettext("Queued %(count)s publication to Kombo.", "Queued %(count)s publications to Kombo.",
                        count) % {"count": f"{count:,}"}
        if skipped:
            text += " " + ngettext("Skipped %(count)s integration (in sync or paused).",
                                   "Skipped %(count)s integrations (in sync or paused).", skipped) % {
                "count": f"{skipped:,}"}
        self.message_user(request, text, messages.SUCCESS)
        not_queued = [p for p in publications if p.enqueued is False]
        if not_queued:
            self.message_user(request, ngettext(
                "The task queue is unreachable right now: %(count)s publication is saved and will be sent "
                "automatically as soon as it is back. No need to publish again.",
                "The task queue is unreachable right now: %(count)s publications are saved and will be sent "
                "automatically as soon as it is back. No need to publish again.",
                len(not_queued)) % {"count": f"{len(not_queued):,}"}, messages.WARNING)
        if count == 1:
            return HttpResponseRedirect(
                reverse("admin:packages_app_publication_change", args=[publications[0].pk])
            )
        return HttpResponseRedirect(reverse("admin:packages_app_integration_changelist"))

    def _confirmation_page(self, request, review, stored, *, errors=(), removal_error="", notices=(),
                           publish_anyway=False):
        summary, previews = review.summary, review.previews
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
            "title": _("Publish to Kombo"),
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
            "removal_error": removal_error,
            "notices": notices,
            "publish_anyway": publish_anyway,
            "removal_total": summary.removal_total,
            "needs_removal_confirmation": summary.needs_removal_confirmation,
            "review": review,
            "compared": _compared_notice(review),
            "tick_heading": review.tick_heading if summary.risky else "",
            "tick_orders": _tick_orders_text(review),
            "any_in_sync": bool(summary.in_sync),
            "api_key_status": publishing.api_key_status(),
        }
        return TemplateResponse(request, "admin/packages_app/integration/publish_confirmation.html", context)


def _outline(p):
    """One integration's changes in a line, zeros left out: [(text, is a removal)]."""
    if p.paused:
        return [(_("paused, skipped"), False)]
    if p.in_sync:
        return [(_("no changes, skipped"), False)]
    parts = [] if p.previously_published else [(_("first publish"), False)]
    if p.diff.added:
        parts.append((_("%(count)d to add") % {"count": len(p.diff.added)}, False))
    if p.diff.changed:
        parts.append((_("%(count)d to change") % {"count": len(p.diff.changed)}, False))
    if p.diff.removed:
        parts.append((_("%(count)d to remove") % {"count": len(p.diff.removed)}, True))
        kombo_only = len(p.kombo_only_removed)
        if kombo_only:
            parts.append((ngettext("%(count)s only at Kombo", "%(count)s only at Kombo", kombo_only)
                          % {"count": kombo_only}, True))
        if p.open_orders_total:
            parts.append((ngettext("%(count)s open order", "%(count)s open orders", p.open_orders_total)
                          % {"count": f"{p.open_orders_total:,}"}, True))
        elif p.orders_unknown:
            parts.append((_("open orders not read"), True))
    if p.sends_empty_list:
        parts.append((_("an empty list"), True))
    return parts


def _totals(summary):
    """The figures the page opens with: (figure, label, css class)."""
    in_sync, paused = len(summary.in_sync), len(summary.paused)
    return [
        (f"{summary.count:,}", ngettext("integration", "integrations", summary.count), "selected"),
        (f"{len(summary.chosen):,}", _("to publish"), "publish"),
        (f"{summary.additions:,}", ngettext("package addition", "package additions", summary.additions), "added"),
        (f"{summary.changes:,}", ngettext("package change", "package changes", summary.changes), "changed"),
        (f"{summary.removals:,}", ngettext("package removal", "package removals", summary.removals),
         "removed" if summary.removals else "none"),
        (f"{0 if summary.publish_anyway else in_sync:,}", _("skipped: in sync"), "skip"),
        (f"{paused:,}", _("skipped: paused"), "skip"),
    ]


def _compared_notice(review):
    """What the page compares with, for the whole selection: (text, css kind)."""
    if not review.read:
        return (_("Compared with what we last published: Kombo’s current lists were not read because "
                  "%(reason)s") % {"reason": review.not_read_reason}, "not-read")
    unread, read = len(review.unread), sum(1 for p in review.previews if p.compared_with_kombo)
    if not unread:
        return (ngettext("Compared with Kombo’s current list, read just now.",
                         "Compared with Kombo’s current lists, read just now for all %(count)s integrations.",
                         read) % {"count": f"{read:,}"}, "read")
    total = unread + read
    return (ngettext(
        "Kombo’s current list could not be read for %(unread)s of %(total)s integration: it is "
        "compared with what we last published, and says why below. Publishing still works.",
        "Kombo’s current list could not be read for %(unread)s of %(total)s integrations: those are "
        "compared with what we last published, and each says why below. Publishing still works.",
        total) % {"unread": f"{unread:,}", "total": f"{total:,}"}, "not-read")


def _tick_orders_text(review):
    """What the tick's label adds: packages only Kombo had, open orders or that they were not read."""
    parts = []
    if review.kombo_only_total:
        parts.append(ngettext("including %(count)s package only Kombo had",
                              "including %(count)s packages only Kombo had",
                              review.kombo_only_total) % {"count": f"{review.kombo_only_total:,}"})
    if review.open_orders_total:
        parts.append(ngettext("with %(count)s open order on them", "with %(count)s open orders on them",
                              review.open_orders_total) % {"count": f"{review.open_orders_total:,}"})
    if review.orders_unknown:
        parts.append(ngettext("open orders not read for %(count)s integration",
                              "open orders not read for %(count)s integrations",
                              len(review.orders_unknown)) % {"count": f"{len(review.orders_unknown):,}"})
    return "; ".join(parts)


def _orders_text(review):
    text = _tick_orders_text(review)
    return f" ({text}.)" if text else ""
