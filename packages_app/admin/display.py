"""What the admin shows of publications and sync status: badges, status texts, plurals."""
from django.utils import timezone
from django.utils.html import format_html

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
