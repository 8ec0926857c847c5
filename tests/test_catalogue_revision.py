"""The catalogue revision and the hashes it keeps current: every write to the catalogue's tables
moves the revision, by whatever path, so the sync-status filters never read a stale hash; with
nothing changed they build no body at all."""
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from packages_app import publishing, selectors
from packages_app.models import (AssessmentPackage, CatalogueRevision, Integration, IntegrationCatalogueHash,
                                 Plan, Publication, SyncStatus)

pytestmark = pytest.mark.django_db


def revision():
    return CatalogueRevision.objects.get(pk=1).number


def in_sync_ids():
    return set(selectors.integrations_in_sync_status(Integration.objects.all(), {SyncStatus.IN_SYNC})
               .values_list("pk", flat=True))


@pytest.fixture
def two_in_sync(make_package, make_integration, no_broker):
    packages = [make_package("1001"), make_package("1002")]
    integrations = [make_integration(packages, kombo_integration_id=f"recruitee:Rev{i}") for i in range(2)]
    for publication in publishing.publications_create(integrations=integrations):
        Publication.objects.filter(pk=publication.pk).update(status="succeeded", http_status=200)
    return packages, integrations


@pytest.mark.parametrize("write", [
    "package saved", "package updated by a queryset", "package deleted", "link removed", "link added",
    "plan linked", "plan's packages changed", "plain SQL",
])
def test_every_catalogue_write_moves_the_revision_and_the_filter_sees_it(two_in_sync, write, make_package):
    (first, second), (acme, beta) = two_in_sync
    assert in_sync_ids() == {acme.pk, beta.pk}  # computed, then stored at this revision
    assert IntegrationCatalogueHash.objects.filter(revision=revision()).count() == 2
    before = revision()
    if write == "package saved":
        first.name = "Renamed"
        first.save()
    elif write == "package updated by a queryset":
        AssessmentPackage.objects.filter(pk=first.pk).update(description="Changed behind the admin's back")
    elif write == "package deleted":
        second.delete()
    elif write == "link removed":
        acme.packages.remove(second)
    elif write == "link added":
        acme.packages.add(make_package("1003"))
    elif write == "plan linked":
        plan = Plan.objects.create(name="Extra")
        plan.packages.add(make_package("1004"))
        acme.plans.add(plan)
    elif write == "plan's packages changed":
        plan = Plan.objects.create(name="Later")
        acme.plans.add(plan)
        assert in_sync_ids() == {acme.pk, beta.pk}  # an empty plan changes no body
        plan.packages.add(make_package("1005"))
    else:
        with connection.cursor() as cursor:
            cursor.execute("UPDATE packages_app_assessmentpackage SET name = %s WHERE id = %s", ["SQL", first.pk])
    assert revision() > before
    changed = in_sync_ids()
    assert acme.pk not in changed
    if write in ("link removed", "link added", "plan linked", "plan's packages changed"):
        assert beta.pk in changed  # only Acme's list changed
    # What the filter says is what the one rule says, integration by integration.
    for integration in Integration.objects.with_sync_state():
        assert (integration.pk in changed) == (integration.sync_status == SyncStatus.IN_SYNC)


def test_with_nothing_changed_the_filter_builds_no_body(two_in_sync):
    in_sync_ids()
    with CaptureQueriesContext(connection) as ctx:
        assert len(in_sync_ids()) == 2
    sql = " ".join(q["sql"] for q in ctx.captured_queries)
    assert "packages_app_integration_packages" not in sql and "packages_app_assessmentpackage" not in sql


def test_a_publish_is_not_a_catalogue_write(two_in_sync):
    _, (acme, _beta) = two_in_sync
    before = revision()
    publishing.publications_create(integrations=[acme])
    assert revision() == before


def test_the_revision_survives_an_emptied_table(two_in_sync):
    """A flush (tests, a restore) may empty the revision table: the next write creates it again,
    and until then nothing is taken from the stored hashes."""
    (first, _), (acme, beta) = two_in_sync
    in_sync_ids()
    CatalogueRevision.objects.all().delete()
    assert in_sync_ids() == {acme.pk, beta.pk}
    first.name = "Renamed again"
    first.save()
    assert revision() == 1 and not IntegrationCatalogueHash.objects.exists()  # made again: nothing stored counts
    assert in_sync_ids() == set()
    # Stored at revision 1 now; deleted and made again at 1, they must not pass for current.
    CatalogueRevision.objects.all().delete()
    AssessmentPackage.objects.filter(pk=first.pk).update(name=first.name)  # the same values: a write all the same
    assert revision() == 1 and not IntegrationCatalogueHash.objects.exists()
