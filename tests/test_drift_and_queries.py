"""The drift check against the sandbox, and query counts that must not grow with the data."""
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from packages_app import publishing
from packages_app.models import AssessmentPackage, Integration, Publication
from packages_app.sandbox import Fault

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("no_broker")]




def queries(fn):
    with CaptureQueriesContext(connection) as ctx:
        fn()
    return len(ctx.captured_queries)


# --- drift check ---------------------------------------------------------------------------------

def test_compare_shows_kombo_last_published_and_catalogue_side_by_side(client, superuser, sandbox, make_package,
                                                                      make_integration):
    a, b = make_package("a", name="Alpha"), make_package("b", name="Beta")
    integration = make_integration([a, b], kombo_integration_id="recruitee:Drift1")
    (pub,) = publishing.publications_create(integrations=[integration])
    publishing.publication_execute(publication_id=pub.pk)
    url = reverse("admin:packages_app_integration_compare", args=[integration.pk])
    client.force_login(superuser)

    page = client.get(url)
    report = page.context["report"]
    assert not report.kombo_drifted and not report.catalogue_changed
    assert b"Kombo has exactly what we last published." in page.content

    # Someone changed things at Kombo (null type, as Kombo's read-back allows), and here.
    sandbox.enqueue_fault(Fault(status=200, body={"status": "success", "data": {"packages": [
        {"id": "a", "name": "Alpha", "description": "Description of package 1", "updated_at": None, "type": None},
        {"id": "legacy", "name": "Old", "description": "d", "updated_at": None, "type": None},
    ]}}))
    AssessmentPackage.objects.filter(pk=b.pk).update(name="Beta 2")
    page = client.get(url)
    report = page.context["report"]
    rows = {r.package_id: r for r in report.rows}
    assert report.kombo_drifted and report.catalogue_changed
    assert rows["a"].all_agree                                  # null type is not a difference
    assert rows["b"].kombo is None and not rows["b"].kombo_matches_published
    assert rows["b"].catalogue["name"] == "Beta 2" and not rows["b"].catalogue_matches_published
    assert rows["legacy"].published is None and rows["legacy"].catalogue is None
    assert b"differs from what we last published" in page.content and b"type unknown" in page.content


def test_compare_says_when_kombo_cannot_be_read(client, superuser, sandbox, make_integration):
    integration = make_integration(kombo_integration_id="notfound:Gone")
    client.force_login(superuser)
    page = client.get(reverse("admin:packages_app_integration_compare", args=[integration.pk]))
    assert page.status_code == 200
    text = page.content.decode()
    assert "Could not read Kombo" in text and "PLATFORM.INTEGRATION_NOT_FOUND" in text, text[-3000:]


# --- query counts ------------------------------------------------------------------------------

def _bulk_packages(count, prefix):
    AssessmentPackage.objects.bulk_create(
        AssessmentPackage(package_id=f"{prefix}-{i:05d}", type="SKILLS_TEST", name=f"P{i}", description="d")
        for i in range(count))
    return list(AssessmentPackage.objects.filter(package_id__startswith=prefix))


def test_executing_a_publication_costs_the_same_queries_for_10_or_5000_packages(sandbox, make_integration):
    counts = []
    for size, prefix in ((10, "small"), (5000, "large")):
        integration = make_integration(_bulk_packages(size, prefix))
        (pub,) = publishing.publications_create(integrations=[integration])
        counts.append(queries(lambda: publishing.publication_execute(publication_id=pub.pk)))
        assert Publication.objects.get(pk=pub.pk).status == "succeeded"
    assert counts[0] == counts[1]


def _integrations(count, packages):
    start = Integration.objects.count()
    Integration.objects.bulk_create(
        Integration(kombo_integration_id=f"recruitee:Q{start + i:05d}", name=f"Q {start + i:05d}")
        for i in range(count))
    created = list(Integration.objects.order_by("-pk")[:count])
    Integration.packages.through.objects.bulk_create(
        Integration.packages.through(integration_id=i.pk, assessmentpackage_id=p.pk)
        for i in created for p in packages)
    return created


def test_confirmation_page_costs_the_same_for_5_or_50_integrations(client, superuser):
    packages = _bulk_packages(5, "conf")
    client.force_login(superuser)
    url = reverse("admin:packages_app_integration_publish")
    counts = []
    for count in (5, 50):
        created = _integrations(count, packages)
        ids = ",".join(str(i.pk) for i in created)
        counts.append(queries(lambda: client.get(url, {"ids": ids})))
    assert counts[0] == counts[1]


def test_publications_list_costs_the_same_for_10_or_300_rows(client, superuser, make_integration):
    integration = make_integration()
    client.force_login(superuser)
    url = reverse("admin:packages_app_publication_changelist")
    counts = []
    for total in (10, 300):
        Publication.objects.bulk_create(
            Publication(integration=integration, body='{"packages":[]}', body_sha256="0" * 64,
                        requested_by=superuser)
            for _ in range(total - Publication.objects.count()))
        counts.append(queries(lambda: client.get(url)))
    assert counts[0] == counts[1]


def test_one_http_session_per_worker_process(settings):
    first = publishing.kombo_client()
    assert publishing.kombo_client() is first and publishing.kombo_client().session is first.session
