"""Reads shared by the admin and the commands: previews of what a publish would change, the
integrations out of sync, and the drift between Kombo's list, our ledger and the catalogue."""
from dataclasses import dataclass

from django.conf import settings
from django.db.models import OuterRef, Subquery

from . import diff
from .models import Integration, Publication, SyncStatus
from .publishing.client import integration_base_url, kombo_client
from .publishing.planning import PlannedPublication, publication_plan


@dataclass
class IntegrationPreview:
    integration: Integration
    plan: PlannedPublication
    diff: diff.BodyDiff
    sync_status: str
    last_published_at: object
    previously_published: bool

    @property
    def in_sync(self):
        """Kombo already has exactly this list: publishing would change nothing."""
        return self.previously_published and not self.diff.has_changes

    @property
    def paused(self):
        return not self.integration.is_active

    @property
    def needs_removal_confirmation(self):
        """Emptying the list, or removing half or more of it (or many), needs an explicit tick."""
        removed = len(self.diff.removed)
        if not self.plan.body["packages"]:
            return True
        if removed == 0:
            return False
        return (removed * 2 >= self.diff.previous_count
                or removed > settings.KOMBO_REMOVAL_CONFIRMATION_THRESHOLD)


def integrations_preview(integrations_qs):
    """One preview per integration, in a constant number of queries."""
    last_succeeded = Publication.objects.filter(integration=OuterRef("pk")).accepted().order_by("-pk")
    integrations = list(
        integrations_qs.with_sync_state()
        .annotate(last_succeeded_pk=Subquery(last_succeeded.values("pk")[:1]))
        .order_by("name", "pk")
    )
    bodies = dict(
        Publication.objects.filter(
            pk__in=[i.last_succeeded_pk for i in integrations if i.last_succeeded_pk]
        ).values_list("integration_id", "body")
    )
    previews = []
    for integration in integrations:
        plan = publication_plan(integration=integration)
        previous = Publication(body=bodies[integration.pk]).body_dict() if integration.pk in bodies else None
        previews.append(IntegrationPreview(
            integration=integration,
            plan=plan,
            diff=diff.diff_bodies(previous, plan.body),
            sync_status=integration.sync_status,
            last_published_at=integration.last_published_at,
            previously_published=previous is not None,
        ))
    return previews


def out_of_sync_integrations():
    """Active integrations whose catalogue differs from what Kombo last accepted (or never did)."""
    integrations = Integration.objects.filter(is_active=True).with_sync_state()
    # Sync status is derived in Python from the prefetched packages: constant queries.
    wanted = {SyncStatus.CHANGED, SyncStatus.NEVER_PUBLISHED, SyncStatus.FAILED}
    return Integration.objects.filter(pk__in=[i.pk for i in integrations if i.sync_status in wanted])


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
    last = integration.publications.accepted().order_by("-pk").first()
    published = {p["id"]: p for p in (last.body_dict()["packages"] if last else [])}
    catalogue = {p["id"]: p for p in integration.current_body()["packages"]}
    at_kombo = {str(p.get("id")): p for p in kombo_packages}
    rows = [
        DriftRow(pid, at_kombo.get(pid), published.get(pid), catalogue.get(pid))
        for pid in sorted(set(at_kombo) | set(published) | set(catalogue))
    ]
    return DriftReport(integration, rows, last)
