"""What the admin shows of publications and sync status: badges, status texts, counts."""
from datetime import datetime

from django.utils import formats, timezone
from django.utils.dateparse import parse_datetime
from django.utils.html import format_html
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext

from ..models import (
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
    SyncStatus.AWAITING_IMPORT: "#6a4c93",
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
# Short words for the lists, where a long status would push the other columns off the page; the
# whole text is the badge's tooltip (and is shown in full on the publication's page).
SHORT_STATUS = {
    Publication.Status.WAITING: gettext_lazy("Waiting for first sync"),
    Publication.Status.SUPERSEDED: gettext_lazy("Superseded"),
}


def when(value):
    """A date and time as staff read it everywhere: "2026-12-01 08:19 UTC", in the site's time zone
    (the DATETIME_FORMAT of kombo_admin/formats, which templates use too). Takes a datetime or an
    ISO 8601 string (as Kombo sends them); anything else is returned as it came, "" for None."""
    if value in (None, ""):
        return ""
    if isinstance(value, str):
        parsed = parse_datetime(value.replace("Z", "+00:00")) if value else None
        if parsed is None:
            return value
        value = parsed
    if not isinstance(value, datetime):
        return str(value)
    if timezone.is_naive(value):
        value = timezone.make_aware(value, timezone.get_default_timezone())
    return formats.date_format(timezone.localtime(value), "DATETIME_FORMAT")


def duration_text(delta):
    """"15 minutes", "1 hour", "1 hour 30 minutes" for a timedelta (the lockout page)."""
    minutes = max(0, round(delta.total_seconds() / 60))
    hours, minutes = divmod(minutes, 60)
    parts = []
    if hours:
        parts.append(ngettext("%(count)d hour", "%(count)d hours", hours) % {"count": hours})
    if minutes or not hours:
        parts.append(ngettext("%(count)d minute", "%(count)d minutes", minutes) % {"count": minutes})
    return " ".join(parts)


def badge(text, colour, css_class="", title=""):
    return format_html(
        '<span class="kombo-badge {}" style="display:inline-block;padding:1px 8px;border-radius:9px;'
        'color:#fff;background:{};font-size:11px;white-space:nowrap"{}>{}</span>',
        css_class, colour, format_html(' title="{}"', title) if title else "", text,
    )


def publication_status_text(publication):
    """"Retrying: attempt 3 of 8, next try at 2026-12-01 16:32 UTC" and the like."""
    from django.conf import settings

    status = publication.status
    if status == Publication.Status.RETRYING and publication.next_attempt_at:
        return _("Retrying: attempt %(attempt)d of %(max)d, next try at %(when)s") % {
            "attempt": publication.attempts + 1, "max": settings.KOMBO_MAX_ATTEMPTS,
            "when": when(publication.next_attempt_at)}
    if status == Publication.Status.WAITING and publication.next_attempt_at:
        return _("Waiting for the customer's first sync; next try at %(when)s") % {
            "when": when(publication.next_attempt_at)}
    if status == Publication.Status.SENDING:
        if publication.cancel_requested_at:
            return _("Sending (attempt %(attempt)d), cancel requested") % {"attempt": publication.attempts}
        return _("Sending (attempt %(attempt)d)") % {"attempt": publication.attempts}
    return publication.get_status_display()


def publication_short_status(publication):
    """A few words for a list's column: "Retrying (3 of 8)", "Waiting for first sync"."""
    from django.conf import settings

    status = publication.status
    if status == Publication.Status.RETRYING:
        return _("Retrying (%(attempt)d of %(max)d)") % {"attempt": publication.attempts + 1,
                                                          "max": settings.KOMBO_MAX_ATTEMPTS}
    if status == Publication.Status.SENDING:
        return _("Sending, cancel requested") if publication.cancel_requested_at else _("Sending")
    return str(SHORT_STATUS.get(status) or publication.get_status_display())


def publication_title(publication):
    """"Publication #260 of Acme Corp": the customer, not the integration's database id."""
    return _("Publication #%(pk)s of %(name)s") % {"pk": publication.pk, "name": publication.integration.name}


def publication_badge(publication, short=False):
    """The status as a coloured badge; `short` for lists (the whole text is then its tooltip)."""
    text = publication_status_text(publication)
    return badge(publication_short_status(publication) if short else text,
                 STATUS_BADGE_COLOURS[publication.status], f"status-{publication.status}",
                 title=text if short else "")


def cancel_summary(ended, ending):
    """What a cancel did, in staff's words: "2 publications cancelled. 1 publication is in flight:
    it ends as cancelled when its request returns." Empty when it did nothing."""
    parts = []
    if ended:
        parts.append(ngettext("%(count)d publication cancelled.", "%(count)d publications cancelled.",
                              ended) % {"count": ended})
    if ending:
        parts.append(ngettext(
            "%(count)d publication is in flight: it ends as cancelled when its request returns.",
            "%(count)d publications are in flight: they end as cancelled when their requests return.",
            ending) % {"count": ending})
    return " ".join(parts)
