"""Handing publications to the broker: messages of one or several publication ids, sent by task
name (this package never imports the tasks module, so tasks -> publishing is the only direction),
and the note of when each row was last queued, which the sweep reads."""
import logging
import math
from datetime import timedelta

from celery import current_app
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from ..models import Publication

logger = logging.getLogger(__name__)

EXECUTE_ONE_TASK = "packages_app.tasks.publish_publication"
EXECUTE_MANY_TASK = "packages_app.tasks.publish_publications"
SWEEP_TASK = "packages_app.tasks.sweep_publications"
ENQUEUE_TASK = "packages_app.tasks.enqueue_publications"

# A message the broker did not take is tried once more, 0.2 s later; then the sweep sends it.
SEND_RETRY_POLICY = {"max_retries": 1, "interval_start": 0.2, "interval_step": 0.2}
# Messages scheduled further ahead than this are not sent to the broker at all: the sweep
# enqueues the publication when it is due. It keeps long waits out of worker memory and well
# inside the broker's visibility timeout.
MAX_COUNTDOWN_SECONDS = 600
# Rows whose enqueued_at is written in one UPDATE while a long list is being queued.
ENQUEUED_AT_CHUNK = 100
# Messages shrink as what is left to queue shrinks (guided self-scheduling): large ones while there
# is plenty, then smaller ones, so that the worker processes finish together instead of a few
# working through the last large messages while the others wait.
TAPER = 8


def publications_enqueue(*, publication_ids, countdown=None, followed_by=0):
    """Hand publications to the broker, in order, over one connection; returns the ids queued.

    They travel up to KOMBO_PUBLISH_BATCH_SIZE to a message, fewer towards the end (see
    message_sizes; a single one goes as its own task; `followed_by` more are queued right after
    these, so these do not shrink). If the broker is unreachable the rows stay as they are and the
    periodic sweep sends them later: nothing is lost. After the first failure the rest are left to
    the sweep too, rather than make staff wait for every one to fail in turn.
    """
    ids = list(publication_ids)
    eta = timezone.now() + timedelta(seconds=countdown or 0)
    queued, marked, start = [], 0, 0
    try:
        with current_app.producer_or_acquire() as producer:
            for size in message_sizes(len(ids), followed_by=followed_by):
                batch = ids[start:start + size]
                start += size
                if marked < start:
                    # Noted before their messages go, not after: a worker already taking them
                    # would find the rows locked by this note and put its message off.
                    _mark_enqueued(ids[marked:marked + max(ENQUEUED_AT_CHUNK, size)], eta)
                    marked += max(ENQUEUED_AT_CHUNK, size)
                name, args = (EXECUTE_ONE_TASK, batch) if len(batch) == 1 else (EXECUTE_MANY_TASK, [batch])
                current_app.send_task(
                    name, args=args, countdown=countdown, producer=producer, retry=True,
                    retry_policy=SEND_RETRY_POLICY,
                )
                queued += batch
    except Exception as exc:  # any broker or transport failure
        logger.warning(
            "%s publication(s) are saved but could not be queued (%s: %s); the sweep will send them.",
            len(ids) - len(queued), type(exc).__name__, exc,
        )
        # Noted but never sent: the sweep must see them as never queued.
        unsent = ids[len(queued):marked]
        if unsent:
            Publication.objects.filter(pk__in=unsent, enqueued_at=eta).update(enqueued_at=None)
    return queued


def publications_enqueue_new(*, publication_ids):
    """Queue the publications one publish just created. The first KOMBO_ENQUEUE_FAN_OUT_ABOVE are
    queued here (publications_enqueue), so that workers start at once; the rest travel as one
    message to a worker, which queues them behind these: staff's request does not wait for
    hundreds of broker round trips (0.7 s for 5,000). Returns the ids now on their way; those the
    broker did not take are left to the sweep."""
    ids = list(publication_ids)
    head, rest = ids[:settings.KOMBO_ENQUEUE_FAN_OUT_ABOVE], ids[settings.KOMBO_ENQUEUE_FAN_OUT_ABOVE:]
    queued = publications_enqueue(publication_ids=head, followed_by=len(rest))
    if not rest or len(queued) < len(head):
        return queued  # the broker failed: the rest go with the sweep, like the head's remainder
    eta = timezone.now()
    _mark_enqueued(rest, eta)  # before the message goes (see publications_enqueue)
    try:
        current_app.send_task(ENQUEUE_TASK, args=[rest], retry=True,
                              retry_policy=SEND_RETRY_POLICY)
    except Exception as exc:  # any broker or transport failure
        logger.warning("%s publication(s) are saved but could not be queued (%s: %s); the sweep will send "
                       "them.", len(rest), type(exc).__name__, exc)
        Publication.objects.filter(pk__in=rest, enqueued_at=eta).update(enqueued_at=None)
        return queued
    return queued + rest


def publication_enqueue(*, publication_id, countdown=None):
    """Queue one publication (see publications_enqueue); True if the broker took it."""
    return bool(publications_enqueue(publication_ids=[publication_id], countdown=countdown))


def message_sizes(count, largest=None, *, followed_by=0):
    """How many publications each message carries, in order, for `count` queued together (and
    `followed_by` more queued right after them)."""
    largest = largest or settings.KOMBO_PUBLISH_BATCH_SIZE
    sizes = []
    while count > 0:
        size = max(1, min(largest, count, math.ceil((count + followed_by) / TAPER)))
        sizes.append(size)
        count -= size
    return sizes


def countdown_within_cap(seconds):
    """A countdown the broker may hold: longer waits are left to the sweep (None: not queued)."""
    return seconds if seconds <= MAX_COUNTDOWN_SECONDS else None


def _mark_enqueued(publication_ids, eta):
    """Note when the rows were queued, skipping any a worker is writing at this moment (it is
    executing them already): waiting for its locks while it waits for ours could deadlock. A
    database without SKIP LOCKED (SQLite) has one writer at a time: a plain UPDATE waits its turn."""
    rows = Publication.objects.filter(pk__in=publication_ids)
    if not connection.features.has_select_for_update_skip_locked:
        rows.update(enqueued_at=eta)
        return
    with transaction.atomic():
        free = rows.select_for_update(skip_locked=True).values_list("pk", flat=True)
        Publication.objects.filter(pk__in=list(free)).update(enqueued_at=eta)
