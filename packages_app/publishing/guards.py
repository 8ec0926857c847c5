"""The one way a publication row is written: a guarded UPDATE that names the statuses it expects
and, for a run holding a lease, that run's token on the row (a run taking over an expired lease
clears the token of the rows the run before it left sending: leases.py). A write that matches fewer rows than it named
changes nothing for the others and says why in the log, so a run that lost its claim (its lease
ran out and another run took over, staff cancelled, a newer publication superseded it) can never
undo what happened meanwhile. Every value is cut to its column first, on every database."""
import logging

from django.db import models

from ..models import Publication

logger = logging.getLogger(__name__)


def guarded(ids, *, expect, token=None):
    """The rows among `ids` that are in a status of `expect` and, with `token`, still taken by that
    run: the publication carries the token (which it loses when another run takes over its
    integration's lease)."""
    rows = Publication.objects.filter(pk__in=list(ids), status__in=list(expect))
    if token is not None:
        rows = rows.filter(lease_token=token)
    return rows


def leased(ids, *, expect, token):
    """Rows in `expect` whose integration this run leases now, whoever took the row before (a
    run that holds the lease may end a row a dead run left sending)."""
    return Publication.objects.filter(pk__in=list(ids), status__in=list(expect),
                                      integration__publish_lease_token=token)


def write(rows, ids, *, action, explain=True, **values):
    """UPDATE `rows` (a guarded queryset over `ids`) with `values`; returns how many matched and
    logs the ids that did not, with their status now."""
    ids = list(ids)
    if not ids:
        return 0
    matched = rows.update(**fit(Publication, values))
    if matched < len(ids) and explain:
        explain_unmatched(ids, action=action)
    return matched


def explain_unmatched(ids, *, action):
    now = dict(Publication.objects.filter(pk__in=ids).values_list("pk", "status"))
    for pk in ids:
        if pk in now:
            logger.info("Publication %s not %s: it is %s now, or this run no longer holds its lease.",
                        pk, action, now[pk])


def fit(model, values):
    """`values` with every plain string cut to its column's max_length: PostgreSQL refuses what
    SQLite would store, and a refusal after the request was sent would leave the row sending."""
    fitted = {}
    for name, value in values.items():
        if isinstance(value, str):
            field = model._meta.get_field(name)
            if isinstance(field, models.CharField) and field.max_length and len(value) > field.max_length:
                value = value[:field.max_length - 1] + "…"
        fitted[name] = value
    return fitted
