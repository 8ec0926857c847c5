"""Reads shared by the admin and the commands: previews of what a publish would change, the
integrations out of sync, and the drift between Kombo's list, our ledger and the catalogue."""
import hashlib
import json
from dataclasses import dataclass

from django.conf import settings
from django.db.models import Q, Subquery

from . import diff, payloads
from .models import (SYNC_STAGE_PUBLISHED, AssessmentPackage, CatalogueRevision, Integration, IntegrationCatalogueHash, Plan,
                     Publication, SyncStatus, integration_tool, is_manual_import_tool)
from .publishing.client import integration_base_url, kombo_client
from .publishing.planning import PlannedPublication, publication_plans


@dataclass
class IntegrationPreview:
    integration: Integration
    plan: PlannedPublication
    diff: diff.BodyDiff
    last_published_at: object
    previously_published: bool

    @property
    def sync_status(self):
        return self.integration.sync_status

    @property
    def in_sync(self):
        """Kombo already has exactly this list: publishing would change nothing."""
        return self.previously_published and not self.diff.has_changes

    @property
    def paused(self):
        return not self.integration.is_active

    @property
    def sends_empty_list(self):
        return not self.plan.body["packages"]

    @property
    def needs_removal_confirmation(self):
        """Emptying the list, or removing half or more of it (or many), needs an explicit tick."""
        removed = len(self.diff.removed)
        if self.sends_empty_list:
            return True
        if removed == 0:
            return False
        return (removed * 2 >= self.diff.previous_count
                or removed > settings.KOMBO_REMOVAL_CONFIRMATION_THRESHOLD)


def integrations_preview(integrations_qs):
    """One preview per integration, in name order, in a constant number of queries.

    Built from plain values, not model instances per package: each package is encoded once
    (publication_plans), the body Kombo holds is read and parsed once per distinct hash, and each
    distinct (held, next) pair of bodies is diffed once, however many integrations share it; an
    integration in sync needs no body read at all. Thousands of integrations take about a second.
    """
    accepted = Publication.objects.accepted_of_outer()
    integrations = list(
        integrations_qs.with_sync_state(packages=False)  # the plans read the packages as values
        .annotate(last_succeeded_pk=Subquery(accepted.values("pk")[:1]))
        .order_by("name", "pk")
    )
    plans = publication_plans(integrations=integrations)
    held_pks = {}  # body hash -> one accepted publication with that body
    for integration, plan in zip(integrations, plans):
        held = integration.last_succeeded_sha256
        if held is not None and held != plan.sha256:
            held_pks.setdefault(held, integration.last_succeeded_pk)
    held_bodies = {
        sha: payloads.parse_body(body)
        for sha, body in Publication.objects.filter(pk__in=list(held_pks.values()))
        .values_list("body_sha256", "body")
    }
    diffs = {}
    previews = []
    for integration, plan in zip(integrations, plans):
        held = integration.last_succeeded_sha256
        key = (held, plan.sha256)
        if key not in diffs:
            if held == plan.sha256:  # the same bytes: every package unchanged, nothing to compare
                count = len(plan.body["packages"])
                diffs[key] = diff.BodyDiff(unchanged_count=count, previous_count=count, next_count=count)
            else:
                previous = None if held is None else held_bodies.get(held) or _held_body(integration)
                diffs[key] = diff.diff_bodies(previous, plan.body)
        _knows_its_hash(integration, plan)
        previews.append(IntegrationPreview(
            integration=integration,
            plan=plan,
            diff=diffs[key],
            last_published_at=integration.last_published_at,
            previously_published=held is not None,
        ))
    return previews


def _held_body(integration):
    """The body Kombo holds, read alone (its publication was pruned between two reads)."""
    held = latest_accepted_publication(integration=integration)
    return held.body_dict() if held else None


def _knows_its_hash(integration, plan):
    """The plan's hash is the integration's current one: its sync_status (models) needs no query
    for the packages then."""
    integration.current_sha256 = lambda: plan.sha256


def plans_digest(sha256_by_pk):
    """One hash over what a preview shows: sha256 of the sorted (integration pk, body sha256)
    pairs. Equal digests mean every integration would be sent exactly the previewed body."""
    lines = "".join(f"{pk}:{sha}\n" for pk, sha in sorted(sha256_by_pk.items()))
    return hashlib.sha256(lines.encode("ascii")).hexdigest()


@dataclass
class RemovalGroup:
    """Integrations that need the removal tick and lose the same packages (or are sent an empty
    list): a package retired from everyone is one group, however many integrations offered it."""

    removed: tuple            # package entries, as Kombo holds them
    empty_list: bool
    previews: list


@dataclass
class RemovedPackage:
    """A package Kombo will mark deleted for integrations that do not need the tick."""

    entry: dict               # as Kombo holds it (for the first of them)
    previews: list


@dataclass
class PublishSummary:
    """What confirming a preview would do, in totals: what the confirmation page and the command
    print first, however many integrations are selected."""

    previews: list
    publish_anyway: bool = False

    def __post_init__(self):
        self.paused = [p for p in self.previews if p.paused]
        self.in_sync = [p for p in self.previews if p.in_sync and not p.paused]
        self.chosen = [p for p in self.previews if not p.paused and (self.publish_anyway or not p.in_sync)]
        changing = [p for p in self.chosen if not p.in_sync]
        self.risky = [p for p in changing if p.needs_removal_confirmation]
        self.additions = sum(len(p.diff.added) for p in changing)
        self.changes = sum(len(p.diff.changed) for p in changing)
        self.removals = sum(len(p.diff.removed) for p in changing)
        self.removal_total = sum(len(p.diff.removed) for p in self.risky)
        groups = {}
        for p in self.risky:
            key = (tuple((r["id"], r.get("type"), r.get("name")) for r in p.diff.removed), p.sends_empty_list)
            groups.setdefault(key, RemovalGroup(tuple(p.diff.removed), p.sends_empty_list, [])).previews.append(p)
        self.tick_groups = sorted(groups.values(), key=lambda g: -len(g.previews))
        # The other removals by package: as many rows as the catalogue has packages at most.
        packages = {}
        for p in changing:
            if not p.needs_removal_confirmation:
                for entry in p.diff.removed:
                    packages.setdefault(entry["id"], RemovedPackage(entry, [])).previews.append(p)
        self.other_removals = sorted(packages.values(), key=lambda r: (-len(r.previews), r.entry["id"]))
        self.other_removal_integrations = len({p.integration.pk for r in self.other_removals for p in r.previews})

    @property
    def count(self):
        return len(self.previews)

    @property
    def needs_removal_confirmation(self):
        return bool(self.risky)

    @property
    def skipped(self):
        return len(self.previews) - len(self.chosen)


OUT_OF_SYNC = {SyncStatus.CHANGED, SyncStatus.NEVER_PUBLISHED, SyncStatus.FAILED}


def sync_status_of(integration):
    """The one rule for an integration's sync status (Integration.sync_status, the list's column,
    its filter, the out-of-sync selection), from what with_sync_state() annotates: its latest
    publication and latest accepted one at its current Kombo id and region, and its current hash.
    A list Kombo holds for a tool whose customers import packages by hand is not "in sync" yet:
    it waits for the customer's import (KOMBO_MANUAL_IMPORT_TOOLS)."""
    if integration.sync_stage != SYNC_STAGE_PUBLISHED:
        return SyncStatus(integration.sync_stage)  # publishing, failed, never published
    if integration.last_succeeded_sha256 == integration.current_sha256():
        return SyncStatus.AWAITING_IMPORT if integration.needs_manual_import else SyncStatus.IN_SYNC
    return SyncStatus.CHANGED


def integrations_with_sync_status(queryset, *, stages=None):
    """The integrations of `queryset` (those at one of `stages` of the sync stage, if given) with
    their sync status ready, in constant queries and no package model instances: the plans give
    each current hash from plain values, for the integrations whose status needs it."""
    # A fresh queryset over the same rows: the caller's may carry annotations of its own.
    rows = (Integration.objects.filter(pk__in=queryset.values("pk")).with_sync_state(dates=False, packages=False)
            .order_by())
    if stages is not None:
        rows = rows.filter(sync_stage__in=stages)
    integrations = [_StatusRow(**values) for values in rows.values(*_StatusRow.READ)]
    # Every integration Kombo holds a list of: its status, or whether it needs a publish.
    published = [i for i in integrations if i.last_succeeded_sha256 is not None]
    for integration, sha256 in zip(published, current_hashes(published)):
        integration.current = sha256
    return integrations


@dataclass
class _StatusRow:
    """What sync_status_of reads of an integration, as plain values: no model instance (nor its
    dates) for each of thousands of integrations."""

    READ = ("pk", "kombo_integration_id", "sync_stage", "last_succeeded_sha256")

    pk: int
    kombo_integration_id: str
    sync_stage: str
    last_succeeded_sha256: str | None
    current: str | None = None

    @property
    def needs_manual_import(self):
        return is_manual_import_tool(self.kombo_integration_id)

    def current_sha256(self):
        return self.current

    @property
    def sync_status(self):
        return sync_status_of(self)


def current_hashes(integrations):
    """Each integration's current body hash (the plans' hash: publication_plans, the one rule),
    in order. Those computed at the catalogue's current revision come from
    IntegrationCatalogueHash; the others are computed and stored for the next reader. A catalogue
    write moves the revision in its own transaction (database triggers), so a stored hash is never
    read after the catalogue it was computed from has changed."""
    revision = CatalogueRevision.objects.filter(pk=1).values_list("number", flat=True).first()
    stored = IntegrationCatalogueHash.objects.filter(revision=revision,
                                                     integration_id__any_of=[i.pk for i in integrations])
    known = {} if revision is None else dict(stored.values_list("integration_id", "sha256"))
    stale = [i for i in integrations if i.pk not in known]
    computed = {plan.integration.pk: plan.sha256 for plan in publication_plans(integrations=stale)} if stale else {}
    if computed and revision is not None:
        # Computed from a catalogue at least as new as `revision` (read first): if it moved on
        # meanwhile, these rows are simply stale at once.
        IntegrationCatalogueHash.objects.bulk_create(
            [IntegrationCatalogueHash(integration_id=pk, sha256=sha, revision=revision) for pk, sha in computed.items()],
            update_conflicts=True, unique_fields=["integration"], update_fields=["sha256", "revision"],
            batch_size=2000)
    return [known.get(i.pk) or computed[i.pk] for i in integrations]


def integrations_in_sync_status(queryset, statuses):
    """`queryset` narrowed to the integrations whose sync status is one of `statuses`. Publishing,
    failed and never published are decided by the database alone; the others need each current
    hash, of the integrations Kombo holds a list of."""
    stages = {s if s in _STAGES_THE_DATABASE_DECIDES else SYNC_STAGE_PUBLISHED for s in statuses}
    # Narrowed in SQL only to the stages the database decides alone (few rows): a WHERE on the
    # stage costs its subqueries a second time, more than it saves when most rows match.
    narrowed = None if SYNC_STAGE_PUBLISHED in stages else stages
    matching = [i.pk for i in integrations_with_sync_status(queryset, stages=narrowed)
                if sync_status_of(i) in statuses]
    return queryset.filter(pk__any_of=matching)


_STAGES_THE_DATABASE_DECIDES = {SyncStatus.PUBLISHING, SyncStatus.FAILED, SyncStatus.NEVER_PUBLISHED}


# --- connectors whose customers import packages by hand ----------------------------------------

# The columns of the file the customer imports, per tool: Workday's as Kombo's own export names
# them ("Generate Available Packages List"); the others name and reference id plainly.
MANUAL_IMPORT_COLUMNS = {"workday": ("Test Name", "Reference ID Value")}
DEFAULT_MANUAL_IMPORT_COLUMNS = ("Name", "Reference ID")


def manual_import_csv(*, publication):
    """The packages of an accepted publication as the customer enters them in an ATS that takes
    packages by hand: name and reference id (the package id orders will refer to), one a row,
    in the order sent. Exactly the list Kombo took, not the catalogue of today."""
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    tool = integration_tool(publication.target_kombo_integration_id)
    writer.writerow(MANUAL_IMPORT_COLUMNS.get(tool, DEFAULT_MANUAL_IMPORT_COLUMNS))
    for entry in publication.body_dict()["packages"]:
        writer.writerow([entry["name"], entry["id"]])
    # A byte order mark: Excel, where customers open it first, then reads UTF-8 names right.
    return "\ufeff" + out.getvalue()


def latest_accepted_publication(*, integration):
    """What Kombo holds for this integration at its current Kombo id and region; None if nothing."""
    return integration.publications.accepted().order_by("-pk").first()


# --- what a change would remove at Kombo -------------------------------------------------------

def integrations_holding_package(*, package, package_id=None):
    """The integrations that offer `package` and whose list at Kombo (their latest accepted
    publication at their current id and region) has it under `package_id` (its id as saved):
    changing that id removes the package there and adds a new one.

    An integration in sync has at Kombo exactly the body the catalogue gives it now, which holds
    the package under its saved id: no body is read for it. Only the others' latest accepted
    bodies are searched (reading hundreds of 10 kB bodies was most of the package page's time)."""
    saved_id = AssessmentPackage.objects.filter(pk=package.pk).values_list("package_id", flat=True).first()
    package_id = package_id or saved_id
    offering = Integration.objects.filter(
        Q(pk__in=Integration.packages.through.objects.filter(assessmentpackage_id=package.pk)
          .values("integration_id"))
        | Q(plans__in=Plan.packages.through.objects.filter(assessmentpackage_id=package.pk)
            .values("plan_id")))
    rows = integrations_with_sync_status(offering)
    held = set()
    if package_id == saved_id:
        held = {r.pk for r in rows if r.sync_status in (SyncStatus.IN_SYNC, SyncStatus.AWAITING_IMPORT)}
    to_read = [r.pk for r in rows if r.last_succeeded_sha256 is not None and r.pk not in held]
    if to_read:
        baseline = Publication.objects.accepted_of_outer().values("pk")[:1]
        # The body is canonical JSON (payloads): the id appears as "id":"<id>" in it, and a quote
        # inside any value is escaped, so nothing else matches.
        needle = '"id":' + json.dumps(package_id, ensure_ascii=False)
        held |= set(Publication.objects.filter(
            pk__in=Integration.objects.filter(pk__any_of=to_read).order_by().annotate(b=Subquery(baseline)).values("b"),
            body__contains=needle).values_list("integration_id", flat=True))
    return list(Integration.objects.filter(pk__any_of=list(held)).order_by("name", "pk"))


def integration_has_been_published(*, integration):
    """Kombo holds a list from us for this integration at its current Kombo id and region."""
    return integration.pk is not None and integration.publications.accepted().exists()


def needs_publish(integration):
    """Whether the catalogue's list differs from the one Kombo last accepted at the integration's
    current place (or Kombo never accepted one there). A publish that failed after Kombo had
    accepted the same list before leaves nothing to send."""
    return integration.last_succeeded_sha256 is None or integration.last_succeeded_sha256 != integration.current_sha256()


def out_of_sync_integrations():
    """Active integrations that "Publish all out-of-sync" publishes: out of sync (changed, never
    published, last publish did not complete) and with something Kombo does not hold yet."""
    active = Integration.objects.filter(is_active=True)
    return active.filter(pk__any_of=[i.pk for i in integrations_with_sync_status(active)
                                 if sync_status_of(i) in OUT_OF_SYNC and needs_publish(i)])


def out_of_sync_previews():
    """The previews of out_of_sync_integrations(), in one pass over the active integrations: the
    same rule, so the page lists nothing the publish then skips as in sync."""
    return [p for p in integrations_preview(Integration.objects.filter(is_active=True))
            if p.sync_status in OUT_OF_SYNC and not p.in_sync]


@dataclass
class DriftRow:
    package_id: str
    kombo: dict | None       # what Kombo has now (type/updated_at may be null)
    published: dict | None   # what we last published successfully
    catalogue: dict | None   # what the catalogue says now

    def _same(self, a, b):
        if a is None or b is None:
            return a is None and b is None
        return all((a.get(f) or None) == (b.get(f) or None) for f in ("type", "name", "description")
                   if not (f == "type" and (a.get(f) is None or b.get(f) is None)))

    @property
    def kombo_matches_published(self):
        return self._same(self.kombo, self.published)

    @property
    def catalogue_matches_published(self):
        return self._same(self.catalogue, self.published)

    @property
    def all_agree(self):
        return self.kombo_matches_published and self.catalogue_matches_published

    @property
    def cells(self):
        """(value, differs from last published) for the three columns, in display order."""
        return [
            (self.kombo, not self.kombo_matches_published),
            (self.published, False),
            (self.catalogue, not self.catalogue_matches_published),
        ]


@dataclass
class DriftReport:
    integration: Integration
    rows: list
    last_publication: Publication | None

    @property
    def kombo_drifted(self):
        return any(not r.kombo_matches_published for r in self.rows)

    @property
    def catalogue_changed(self):
        return any(not r.catalogue_matches_published for r in self.rows)


def integration_drift(*, integration):
    """Kombo's current list (GET), our last succeeded body and the catalogue, side by side.
    Raises KomboError when Kombo cannot be read."""
    kombo_packages = kombo_client().get_packages(
        base_url=integration_base_url(integration),
        integration_id=integration.kombo_integration_id,
    )
    last = latest_accepted_publication(integration=integration)
    published = {p["id"]: p for p in (last.body_dict()["packages"] if last else [])}
    catalogue = {p["id"]: p for p in integration.current_body()["packages"]}
    at_kombo = {str(p.get("id")): p for p in kombo_packages}
    rows = [
        DriftRow(pid, at_kombo.get(pid), published.get(pid), catalogue.get(pid))
        for pid in sorted(set(at_kombo) | set(published) | set(catalogue))
    ]
    return DriftReport(integration, rows, last)
