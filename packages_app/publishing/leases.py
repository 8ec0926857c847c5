"""The integration lease: which run may talk to Kombo for an integration right now, and until
when. It keeps one request per integration in flight across every worker. The database's clock
decides expiry, so workers on skewed machines still agree.

A run that takes over an expired lease also revokes what the run before it still held: the
integration's rows left `sending` lose that run's token. So "the row carries this run's token"
means "this run holds the row under its integration's current lease", and a guarded write
(guards.py) checks one column instead of joining the integration.
"""
from datetime import timedelta

from django.conf import settings
from django.db import OperationalError, connection, transaction
from django.db.models import Q
from django.db.models.functions import Now

from ..models import Integration, Publication


def lease_seconds(task_time_limit=None):
    """Longer than what is left of the task's hard time limit: a live attempt never loses its
    lease under the prefork pool, and a stuck one has been killed by Celery before anyone else
    may take over. (Other pools do not enforce the limit; the guarded writes cover them.)"""
    return (settings.CELERY_TASK_TIME_LIMIT if task_time_limit is None else task_time_limit) + 10.0


def expired_or_free():
    return Q(publish_lease_until__isnull=True) | Q(publish_lease_until__lt=Now())


def leases_acquire(integration_ids, *, token, seconds):
    """Lease the integrations among `integration_ids` that nobody holds; returns those leased.

    Runs inside the caller's transaction. A row another transaction has locked (another worker's
    take, the admin saving that integration) counts as held: SKIP LOCKED never waits, so this can
    never deadlock with another multi-row writer.
    """
    if not integration_ids:
        return set()
    free = Integration.objects.filter(pk__in=integration_ids).filter(expired_or_free()).order_by()
    if connection.features.has_select_for_update_skip_locked:
        free = free.select_for_update(skip_locked=True)
    previous = dict(free.values_list("pk", "publish_lease_token"))
    taken_over = [pk for pk, held_by in previous.items() if held_by]
    if taken_over and not _revoke(taken_over):
        previous = {pk: held_by for pk, held_by in previous.items() if not held_by}
    if previous:
        Integration.objects.filter(pk__in=list(previous)).update(
            publish_lease_token=token, publish_lease_until=Now() + timedelta(seconds=seconds))
    return set(previous)


def _revoke(integration_ids):
    """Take the rows a run left sending under these expired leases from that run: that run is dead
    or past its time limit (a pool that does not enforce it), and a late answer of it must write
    nothing; this run's take, or the sweep, brings the rows back. False if another transaction
    holds one of them (another take reading it): never wait for it, which could deadlock with a
    take doing the same the other way round; the leases are left for a later message."""
    rows = Publication.objects.filter(integration_id__in=integration_ids, status=Publication.Status.SENDING).exclude(
        lease_token="")
    if connection.features.has_select_for_update_nowait:
        try:
            with transaction.atomic():  # a savepoint: a refused lock must not end the caller's transaction
                rows = Publication.objects.filter(pk__in=list(rows.select_for_update(nowait=True).values_list(
                    "pk", flat=True)))
        except OperationalError:
            return False
    rows.update(lease_token="")
    return True


def leases_release(integration_ids, *, token):
    """Give back this run's leases. By token: a run whose lease expired must not release the
    lease of the run after it."""
    if not integration_ids:
        return 0
    return Integration.objects.filter(pk__in=list(integration_ids), publish_lease_token=token).update(
        publish_lease_until=None, publish_lease_token="")
