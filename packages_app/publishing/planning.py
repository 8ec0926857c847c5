"""Creating publications: what publishing an integration would send now (its plan), and the
transition that snapshots those bodies into new, queued Publication rows, all or none."""
from dataclasses import dataclass

from django.db import connection, transaction

from .. import payloads
from ..models import Integration, Publication
from . import queueing


class CatalogueChanged(Exception):
    """The catalogue changed between the preview staff saw and their confirmation."""

    def __init__(self, integrations):
        self.integrations = integrations
        names = ", ".join(str(i) for i in integrations)
        super().__init__(f"The packages of {names} changed since the preview.")


class IntegrationPaused(Exception):
    def __init__(self, integrations):
        self.integrations = integrations
        names = ", ".join(str(i) for i in integrations)
        super().__init__(f"{names} is paused: activate it before publishing.")


@dataclass
class PlannedPublication:
    """What publishing one integration would send now."""

    integration: Integration
    body: dict
    body_bytes: bytes
    sha256: str


def publication_plan(*, integration):
    body = integration.current_body()
    data = payloads.canonical_bytes(body)
    return PlannedPublication(integration, body, data, payloads.body_sha256(data))


def publication_plans(*, integrations):
    """publication_plan for many integrations at once, from plain values: each package's entry
    and bytes are built once, however many of the integrations offer it."""
    offered, rows = Integration.objects.filter(pk__any_of=[i.pk for i in integrations]).offered_packages()
    entries = {pk: payloads.package_entry(row) for pk, row in rows.items()}
    parts = {pk: payloads.entry_bytes(entry) for pk, entry in entries.items()}
    plans = []
    for integration in integrations:
        package_pks = sorted(offered[integration.pk], key=lambda pk: entries[pk]["id"])
        body = {"packages": [entries[pk] for pk in package_pks]}
        data = payloads.join_entries([parts[pk] for pk in package_pks])
        plans.append(PlannedPublication(integration, body, data, payloads.body_sha256(data)))
    return plans


def publications_create(*, integrations, requested_by=None, expected_sha256=None):
    """Snapshot and queue one publication per integration, all or none.

    `expected_sha256` maps integration pk to the body hash staff confirmed; if the catalogue gives
    another body now, nothing is created and CatalogueChanged names the integrations concerned.
    The tasks are queued only after the transaction commits.
    """
    ids = sorted({i.pk for i in integrations})
    with transaction.atomic():
        # Locking the integrations serialises concurrent publishes of one integration, so the
        # order of publication ids is the order of the snapshots.
        locked = list(Integration.objects.select_for_update(of=("self",)).filter(pk__in=ids).order_by("pk"))
        paused = [i for i in locked if not i.is_active]
        if paused:
            raise IntegrationPaused(paused)
        plans = publication_plans(integrations=locked)
        if expected_sha256 is not None:
            changed = [p.integration for p in plans
                       if expected_sha256.get(p.integration.pk) != p.sha256]
            if changed:
                raise CatalogueChanged(changed)
        publications = _insert([
            # Where it goes (target_*) is filled from the integration read under the lock
            # (PlaceOfIntegrationField): a list counts for that place only.
            Publication(integration=plan.integration, requested_by=requested_by,
                        body=plan.body_bytes.decode("utf-8"), body_sha256=plan.sha256,
                        package_count=len(plan.body["packages"]))
            for plan in plans
        ])
        for publication in publications:
            publication.enqueued = None  # set by the on-commit callback
        transaction.on_commit(lambda: _enqueue_all(publications))
    return publications


def _insert(publications):
    """Insert new Publication rows, ids in the order given; returns them with their ids.

    On PostgreSQL the rows go through COPY, with ids drawn from the table's sequence first: the
    same rows as bulk_create, but a publish of 5,000 bodies of 50 packages takes about a second
    instead of five (bulk_create builds and parses one statement of some fifty megabytes). Every
    column's value is what the model's own field gives (defaults, auto_now_add, JSON)."""
    if connection.vendor != "postgresql" or not publications:
        return Publication.objects.bulk_create(publications)
    meta = Publication._meta
    fields = [f for f in meta.concrete_fields if not f.primary_key]
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute("SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s)",
                       [meta.db_table, meta.pk.column, len(publications)])
        ids = sorted(row[0] for row in cursor.fetchall())
        columns = ", ".join(quote(f.column) for f in [meta.pk, *fields])
        prepared = _PreparedValues()
        with cursor.cursor.copy(f"COPY {quote(meta.db_table)} ({columns}) FROM STDIN") as copy:
            for pk, publication in zip(ids, publications):
                publication.pk = pk
                copy.write_row([pk, *(prepared.get(f, f.pre_save(publication, True)) for f in fields)])
    for publication in publications:
        publication._state.adding = False
        publication._state.db = connection.alias
    return publications


class _PreparedValues:
    """field.get_db_prep_save, once per field and value: most of a new publication's columns hold
    the same default in every row (JSON and dates cost the most to prepare; 0.6 s for 5,000 rows
    prepared one by one)."""

    def __init__(self):
        self._done = {}

    def get(self, field, value):
        try:
            key = (field.attname, value if not isinstance(value, (list, dict)) else repr(value))
            return self._done[key]
        except KeyError:
            self._done[key] = prepared = field.get_db_prep_save(value, connection)
            return prepared
        except TypeError:  # unhashable
            return field.get_db_prep_save(value, connection)


def _enqueue_all(publications):
    queued = set(queueing.publications_enqueue_new(publication_ids=[p.pk for p in publications]))
    for publication in publications:
        publication.enqueued = publication.pk in queued
