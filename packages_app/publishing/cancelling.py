"""Stopping publishing: staff's "Cancel publishing" on chosen publications, and pausing an
integration, which cancels whatever it has on its way. Both end in the cancel transition."""
from django.db import transaction

from ..models import Integration, Publication
from . import transitions
from .transitions import PAUSED_REASON


def publications_cancel(*, publication_ids, cancelled_by=None, reason="Cancelled by staff."):
    """Cancel publications: those not in flight end now; one in flight ends as cancelled when its
    request returns, keeping Kombo's answer. Returns (ended now, ending after their request)."""
    return transitions.cancel(publication_ids, reason=reason, cancelled_by=cancelled_by)


def integration_publications_cancel(*, integration_ids, cancelled_by=None, reason=PAUSED_REASON):
    """Cancel every active publication of these integrations (see publications_cancel)."""
    active = Publication.objects.filter(integration_id__in=list(integration_ids),
                                        status__in=Publication.ACTIVE_STATUSES)
    return publications_cancel(publication_ids=list(active.values_list("pk", flat=True)),
                               cancelled_by=cancelled_by, reason=reason)


def integrations_pause(*, integration_ids, paused_by=None):
    """Pause integrations and cancel what they have on its way. Returns (paused, ended, ending)."""
    integration_ids = list(integration_ids)
    with transaction.atomic():
        paused = Integration.objects.filter(pk__in=list(integration_ids), is_active=True).update(is_active=False)
        ended, ending = integration_publications_cancel(integration_ids=integration_ids, cancelled_by=paused_by)
    return paused, ended, ending
