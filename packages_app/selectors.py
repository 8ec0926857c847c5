"""Reads shared by the admin and the commands: previews of what a publish would change."""
from dataclasses import dataclass

from django.conf import settings
from django.db.models import OuterRef, Subquery

from . import diff, services
from .models import Integration, Publication, SyncStatus


@dataclass
class IntegrationPreview:
    integration: Integration
    plan: services.PlannedPublication
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
    last_succeeded = Publication.objects.filter(
        integration=OuterRef("pk"), status=Publication.Status.SUCCEEDED
    ).order_by("-pk")
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
        plan = services.publication_plan(integration=integration)
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
