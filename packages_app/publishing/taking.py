"""The take: the one transition into `sending`. For a set of publication ids, in one transaction,
it reads them (locked), decides each by the rules below, holds the integrations' leases of those
it will send, ends on the way what needs no request (superseded, cancelled, failed), marks the
rest sending under this run's token and opens their attempt rows. A batch of ten costs the same
five statements as a single publication.

The rules, in order, for one publication:
  final                                        -> left alone
  left `sending` by a run that is gone         -> decided like the others, under the lease, and
                                                  its unfinished attempt counted as lost
  cancel requested, its integration paused, or
  its integration moved to another Kombo id or
  region since it was made                     -> cancelled
  retrying/waiting and not due yet             -> left alone (an early message)
  a newer publication of its integration       -> superseded
  no API key, or KOMBO_MAX_ATTEMPTS spent      -> failed
  otherwise                                    -> taken, if its integration's lease is free
"""
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Exists, F, OuterRef, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from ..models import Publication, PublicationAttempt
from . import guards, outcomes, transitions
from .leases import leases_acquire, leases_release

Status = Publication.Status

# A message that arrives a little before its publication's next_attempt_at still runs.
EARLY_ARRIVAL_SLACK_SECONDS = 1.0
# Why a publication was not taken, besides its own status.
MISSING, BUSY = "missing", "busy"
RESTING = Publication.RESTING_STATUSES
NO_KEY_REASON = ("KOMBO_API_KEY is not set in the worker's environment. Set it, restart the "
                 "worker, and publish again.")


@dataclass
class Taken:
    """A publication this run holds: what sending it needs, and what undoing the take needs."""

    publication_id: int
    integration_id: int
    kombo_integration_id: str
    region: str
    body: str
    attempt_id: int
    number: int            # the attempt's number
    spent: int             # attempts counted against KOMBO_MAX_ATTEMPTS, this one included
    started_at: object     # when the publication's first attempt began
    previous: tuple = ()   # (status, next_attempt_at, started_at) before the take


@dataclass
class TakeResult:
    taken: list = field(default_factory=list)     # Taken, in the order asked
    untaken: dict = field(default_factory=dict)   # id -> its status now, MISSING or BUSY


def take(publication_ids, *, token, lease_seconds):
    """Take what can be sent among `publication_ids` (distinct, in order) for the run `token`."""
    ids = list(dict.fromkeys(publication_ids))
    now = timezone.now()
    result = TakeResult()
    with transaction.atomic():
        rows = _read(ids)
        for pk in ids:
            if pk not in rows:
                result.untaken[pk] = MISSING
        if len(rows) < len(ids):
            # Skipped because another transaction holds the row (another run's take, a cancel).
            locked = Publication.objects.filter(pk__in=[pk for pk in ids if pk not in rows])
            result.untaken |= {pk: BUSY for pk in locked.values_list("pk", flat=True)}
        decided = {pk: _decide(row, now) for pk, row in rows.items()}
        needs_lease = [pk for pk in ids if decided.get(pk) == "send" or
                       (pk in rows and rows[pk]["status"] == Status.SENDING)]
        first_of = {}
        for pk in needs_lease:
            first_of.setdefault(rows[pk]["integration_id"], pk)
        held = leases_acquire(list(first_of), token=token, seconds=lease_seconds)
        under_lease = [pk for pk in needs_lease
                       if rows[pk]["integration_id"] in held and first_of[rows[pk]["integration_id"]] == pk]
        for pk in needs_lease:
            if pk not in under_lease:
                # A row sending under its integration's current lease is in flight: its run
                # records it (or, if that run is dead, the sweep brings it back once the lease
                # expires). Anything else waits for the lease.
                row = rows[pk]
                in_flight = (row["status"] == Status.SENDING and row["lease_token"] != ""
                             and row["lease_token"] == row["integration_lease_token"])
                result.untaken[pk] = Status.SENDING if in_flight else BUSY

        # Whoever left these sending is gone: this run holds their integration's lease.
        _close_lost_attempts([pk for pk in under_lease if rows[pk]["status"] == Status.SENDING], now)
        resting = [pk for pk in rows if rows[pk]["status"] in Publication.RESTING_STATUSES]
        for verdict in ("cancel", "supersede", "fail"):
            chosen = [pk for pk in rows if decided[pk].startswith(verdict)
                      and (pk in resting or pk in under_lease)]
            _end(verdict, chosen, rows, decided, token=token, resting=resting)
            result.untaken |= {pk: _status(verdict) for pk in chosen}
        for pk in rows:
            if decided[pk] == "leave":
                result.untaken[pk] = rows[pk]["status"]

        to_send = [pk for pk in under_lease if decided[pk] == "send"]
        result.taken = _claim(to_send, rows, token=token, now=now)
        claimed = {t.publication_id for t in result.taken}
        idle = {rows[pk]["integration_id"] for pk in under_lease if pk not in claimed}
        leases_release(idle, token=token)
    return result


def _read(ids):
    """The rows and what deciding needs, locked; rows another transaction holds are skipped."""
    newer = Publication.objects.filter(integration_id=OuterRef("integration_id"), pk__gt=OuterRef("pk"))
    spent = (PublicationAttempt.objects.filter(publication_id=OuterRef("pk"))
             .exclude(outcome=outcomes.SYNC_PENDING).order_by().values("publication_id")
             .annotate(n=Count("pk")).values("n")[:1])
    rows = Publication.objects.filter(pk__in=ids)
    if connection.features.has_select_for_update_skip_locked:
        rows = rows.select_for_update(of=("self",), skip_locked=True)
    rows = rows.annotate(
        has_newer=Exists(newer), spent=Coalesce(Subquery(spent), 0),
        integration_active=F("integration__is_active"),
        integration_kombo_id=F("integration__kombo_integration_id"), integration_region=F("integration__region"),
        integration_lease_token=F("integration__publish_lease_token"),
    ).values("pk", "integration_id", "status", "next_attempt_at", "started_at", "attempts", "body",
             "cancel_requested_at", "failure_reason", "lease_token", "has_newer", "spent",
             "integration_active", "target_kombo_integration_id", "target_region", "integration_kombo_id", "integration_region",
             "integration_lease_token")
    return {row["pk"]: row for row in rows}


def _decide(row, now):
    """"leave", "cancel", "supersede", "fail:<reason>" or "send" (see the module's docstring)."""
    status = row["status"]
    if status in Publication.FINAL_STATUSES:
        return "leave"
    if row["cancel_requested_at"] is not None:
        return "cancel:"  # with the reason staff gave
    if not row["integration_active"]:
        return "cancel:" + transitions.PAUSED_REASON
    if (row["integration_kombo_id"], row["integration_region"]) != (row["target_kombo_integration_id"],
                                                                   row["target_region"]):
        # Built for the place it had: it must neither reach the new one nor count there.
        return "cancel:" + transitions.MOVED_REASON
    due_by = now + timedelta(seconds=EARLY_ARRIVAL_SLACK_SECONDS)
    if status in (Status.RETRYING, Status.WAITING) and row["next_attempt_at"] and row["next_attempt_at"] > due_by:
        return "leave"
    if row["has_newer"]:
        return "supersede"
    if not settings.KOMBO_API_KEY:
        return "fail:" + NO_KEY_REASON
    if row["spent"] >= settings.KOMBO_MAX_ATTEMPTS:
        # Lost attempts (killed workers, time limits) count too: a publication that kills its
        # worker every time must end, not loop.
        return f"fail:Gave up after {row['spent']} attempts. Last error: " + (
            row["failure_reason"] or "the worker stopped during the attempt")
    return "send"


def _status(verdict):
    return {"cancel": Status.CANCELLED, "supersede": Status.SUPERSEDED, "fail": Status.FAILED}[verdict]


def _end(verdict, chosen, rows, decided, *, token, resting):
    """End `chosen` without a request: resting rows by their status alone, rows left sending by a
    dead run under this run's lease."""
    for group, lease_token in (([pk for pk in chosen if pk in resting], None),
                               ([pk for pk in chosen if pk not in resting], token)):
        if not group:
            continue
        if verdict == "supersede":
            transitions.superseded(group, token=lease_token)
            continue
        by_reason = {}
        for pk in group:
            by_reason.setdefault(decided[pk].split(":", 1)[1], []).append(pk)
        for reason, pks in by_reason.items():
            if verdict == "cancel":
                # A cancel staff asked for keeps its own reason (None here).
                transitions.cancelled(pks, token=lease_token, reason=reason or None)
            else:
                transitions.failed(pks, token=lease_token, reason=reason)


def _close_lost_attempts(ids, now):
    if ids:
        PublicationAttempt.objects.filter(publication_id__in=ids, finished_at__isnull=True).update(
            finished_at=now, outcome=outcomes.LOST, message="The worker stopped during this attempt.")


def _claim(ids, rows, *, token, now):
    """Mark `ids` sending under `token` and open their attempts: two statements for all."""
    if not ids:
        return []
    expect = {rows[pk]["status"] for pk in ids}
    # Read locked in this transaction, their integrations leased in it: the status they were read
    # in is the whole guard.
    guards.write(guards.guarded(ids, expect=expect), ids, action="taken",
                 status=Status.SENDING, attempts=F("attempts") + 1,
                 started_at=Coalesce(F("started_at"), Value(now)), next_attempt_at=None, lease_token=token)
    # The rows were read locked under this lease: the guard matched them all (SQLite: one writer).
    attempts = PublicationAttempt.objects.bulk_create([
        PublicationAttempt(publication_id=pk, number=rows[pk]["attempts"] + 1, started_at=now,
                           outcome="", error_code="", message="")
        for pk in ids
    ])
    return [
        Taken(publication_id=pk, integration_id=rows[pk]["integration_id"],
              kombo_integration_id=rows[pk]["target_kombo_integration_id"], region=rows[pk]["target_region"],
              body=rows[pk]["body"], attempt_id=attempt.pk, number=rows[pk]["attempts"] + 1,
              spent=rows[pk]["spent"] + 1, started_at=rows[pk]["started_at"] or now,
              # A row a dead run left sending goes back as queued: its lost attempt is closed.
              previous=(Status.QUEUED if rows[pk]["status"] == Status.SENDING else rows[pk]["status"],
                        rows[pk]["next_attempt_at"], rows[pk]["started_at"]))
        for pk, attempt in zip(ids, attempts)
    ]
