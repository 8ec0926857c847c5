"""Retention: deleting old publications (and their attempts) so the ledger does not grow for ever.

A publication requested more than `older_than_days` ago is deleted unless, for its integration, it is

- the **latest accepted** one (`PublicationQuerySet.accepted`, newest by pk): what Kombo holds,
  the baseline of every diff and of the sync status "in sync" / "changed";
- the **latest** one whatever its status: it decides "publishing" / "last publish did not complete";
- **active** (`Publication.ACTIVE_STATUSES`): still on its way.

Safe while publishing goes on: a publication that may be deleted has a final status, and final
rows never change again; a newer publication only makes an older one "not the latest"; and an
accepted one is deleted only when a newer accepted one exists, so the newest accepted one never is.

Chunks of up to `chunk_size` publications, oldest first, each deleted in its own short
transaction: the attempts (`publication_id IN chunk`), then the publications (`id IN chunk`), two
plain DELETEs (`_raw_delete`). `QuerySet.delete()` would first load every publication, body and
all, to collect the CASCADE: measured on PostgreSQL, 2.7 times slower and transactions 3 times
longer. Which ids make a chunk is read before its transaction, which holds row locks only on
rows no one else writes (final publications and their attempts) for well under a second at the
default size (README, "Retention").
"""
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import router, transaction
from django.db.models import Count, Exists, Max, OuterRef, Subquery
from django.utils import timezone

from ..models import Integration, Publication, PublicationAttempt

# 2,000 publications: ~0.3 s per transaction (0.75 s at most) on a busy two-core machine, where
# 5,000 took up to 1.5 s (README, "Retention").
DEFAULT_CHUNK_SIZE = 2000


@dataclass(frozen=True)
class PruneResult:
    publications: int   # deleted (or that would be, on a dry run)
    attempts: int       # their attempts
    kept: int           # as old, kept by the rules above
    chunks: int
    cutoff: datetime
    dry_run: bool


def _not_latest(cutoff):
    """Old and final publications that are not their integration's latest: candidates, short of
    the latest accepted rule (_latest_accepted)."""
    newer = Publication.objects.filter(integration=OuterRef("integration"), pk__gt=OuterRef("pk"))
    return (Publication.objects
            .filter(requested_at__lt=cutoff)
            .exclude(status__in=Publication.ACTIVE_STATUSES)
            .filter(Exists(newer)))


def _latest_accepted(integration_ids):
    """The pk of the latest accepted publication of each of these integrations that has one: the
    same query as the sync status's baseline (IntegrationQuerySet.with_sync_state)."""
    latest = Publication.objects.accepted_of_outer()
    pks = (Integration.objects.filter(pk__in=integration_ids).order_by()
           .annotate(latest_accepted=Subquery(latest.values("pk")[:1]))
           .values_list("latest_accepted", flat=True))
    return {pk for pk in pks if pk is not None}


def _check_relations():
    """The DELETEs are plain SQL and cascade by hand to the attempts: refuse to run if anything
    else has come to refer to a publication (its rows would block or dangle)."""
    others = [f"{r.related_model._meta.label}.{r.field.name}" for r in Publication._meta.related_objects
              if r.related_model is not PublicationAttempt]
    if others:
        raise RuntimeError(f"publications_prune deletes attempts only, but {', '.join(others)} also "
                           f"refer(s) to publications: teach retention.py about it first.")


def publications_prune(*, older_than_days, dry_run=False, chunk_size=DEFAULT_CHUNK_SIZE, log=print,
                       now=None):
    """Delete the publications requested more than `older_than_days` days ago, and their attempts,
    except those the rules above keep; `log` gets one line per chunk and a total. With `dry_run`,
    count what would go and delete nothing."""
    if isinstance(older_than_days, bool) or not isinstance(older_than_days, int) or older_than_days < 1:
        raise ValueError(f"older_than_days must be a whole number of days, 1 or more (got {older_than_days!r}).")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a whole number, 1 or more (got {chunk_size!r}).")
    _check_relations()
    cutoff = (now or timezone.now()) - timedelta(days=older_than_days)
    using = router.db_for_write(Publication)
    verb = "Would delete" if dry_run else "Deleted"
    old = Publication.objects.filter(requested_at__lt=cutoff).aggregate(count=Count("pk"), last=Max("pk"))
    log(f"{'Dry run: ' if dry_run else ''}{old['count']} publication(s) requested before "
        f"{cutoff:%Y-%m-%d %H:%M:%S %Z}; keeping each integration's latest, latest accepted "
        f"and active ones.")
    # Newer rows are requested after the cutoff: the old ones all have a pk up to old["last"].
    candidates = (_not_latest(cutoff).filter(pk__lte=old["last"] or 0).order_by("pk")
                  .values_list("pk", "integration_id"))
    publications = attempts = chunks = 0
    after = 0
    while True:
        rows = list(candidates.filter(pk__gt=after)[:chunk_size])
        if not rows:
            break
        after = rows[-1][0]
        keep = _latest_accepted({integration_id for _, integration_id in rows})
        ids = [pk for pk, _ in rows if pk not in keep]
        if not ids:
            continue
        started = time.monotonic()
        if dry_run:
            removed_attempts = PublicationAttempt.objects.filter(publication_id__in=ids).count()
            removed = len(ids)
        else:
            with transaction.atomic(using=using):
                removed_attempts = PublicationAttempt.objects.filter(publication_id__in=ids)._raw_delete(using)
                removed = Publication.objects.filter(pk__in=ids)._raw_delete(using)
        seconds = time.monotonic() - started
        chunks += 1
        publications += removed
        attempts += removed_attempts
        log(f"Chunk {chunks}: {verb.lower()} {removed} publication(s) #{ids[0]}-#{ids[-1]} and "
            f"{removed_attempts} attempt(s) in {seconds:.3f} s.")
    log(f"{verb} {publications} publication(s) and {attempts} attempt(s) in {chunks} chunk(s); "
        f"kept {old['count'] - publications} as old.")
    return PruneResult(publications=publications, attempts=attempts, kept=old["count"] - publications,
                       chunks=chunks, cutoff=cutoff, dry_run=dry_run)
