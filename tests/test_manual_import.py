"""Connectors whose customers import packages by hand (Workday, SAP SuccessFactors): published
over real HTTP to the sandbox, they read "waiting for the customer's import", never "In sync";
the list filters them; the publication's page says what to do and offers the CSV."""
import csv
import io
import re

import pytest
from django.contrib.auth.models import Permission, User
from django.urls import reverse

from packages_app import publishing, selectors
from packages_app.models import Integration, Publication, SyncStatus

pytestmark = pytest.mark.django_db

LIST_URL = reverse("admin:packages_app_integration_changelist")


@pytest.fixture
def published(sandbox, no_broker, make_package, make_integration):
    """A Workday and a Recruitee integration offering the same two packages, both published."""
    packages = [make_package("1001", name="TypeScript"), make_package("big5", name="Big Five, short form")]
    workday = make_integration(packages, kombo_integration_id="workday:Acme1", name="Acme (Workday)")
    recruitee = make_integration(packages, kombo_integration_id="recruitee:Beta1", name="Beta (Recruitee)")
    publications = publishing.publications_create(integrations=[workday, recruitee])
    for publication in publications:
        publishing.publication_execute(publication_id=publication.pk)
    by_integration = {p.integration_id: Publication.objects.get(pk=p.pk) for p in publications}
    assert all(p.status == "succeeded" for p in by_integration.values())
    return workday, recruitee, by_integration[workday.pk], by_integration[recruitee.pk]


def status_of(integration):
    return Integration.objects.get(pk=integration.pk).sync_status


def test_a_published_workday_integration_waits_for_the_import_and_recruitee_is_in_sync(published, sandbox):
    workday, recruitee, _, _ = published
    # Kombo did take the list (the sandbox holds it): only the customer's import is missing.
    assert [p["id"] for p in sandbox.packages("workday:Acme1")] == ["1001", "big5"]
    assert status_of(workday) == SyncStatus.AWAITING_IMPORT
    assert status_of(recruitee) == SyncStatus.IN_SYNC
    # Not out of sync: publishing again would change nothing at Kombo.
    assert workday not in selectors.out_of_sync_integrations()


def test_the_setting_names_the_tools(published, settings):
    workday, recruitee, _, _ = published
    settings.KOMBO_MANUAL_IMPORT_TOOLS = ["recruitee"]
    assert status_of(workday) == SyncStatus.IN_SYNC
    assert status_of(recruitee) == SyncStatus.AWAITING_IMPORT


def test_a_changed_catalogue_is_changed_not_waiting(published, make_package):
    workday, _, _, _ = published
    workday.packages.add(make_package("new-one"))
    assert status_of(workday) == SyncStatus.CHANGED


def test_the_list_shows_the_status_and_filters_on_it(client, superuser, published):
    workday, recruitee, _, _ = published
    client.force_login(superuser)
    page = client.get(LIST_URL).content.decode()
    assert "Published: waiting for the customer&#x27;s import" in page
    assert "sync-awaiting_import" in page and "sync-in_sync" in page
    filtered = client.get(LIST_URL, {"sync": SyncStatus.AWAITING_IMPORT})
    assert [i.pk for i in filtered.context["cl"].result_list] == [workday.pk]
    in_sync = client.get(LIST_URL, {"sync": SyncStatus.IN_SYNC})
    assert [i.pk for i in in_sync.context["cl"].result_list] == [recruitee.pk]


def test_the_filter_and_the_column_use_one_rule(published):
    """Every integration the filter selects shows that status in the column, and vice versa."""
    rows = selectors.integrations_with_sync_status(Integration.objects.all())
    column = {i.pk: i.sync_status for i in Integration.objects.with_sync_state()}  # what the list shows
    assert {row.pk: row.sync_status for row in rows} == column
    for status in SyncStatus.values:
        selected = set(selectors.integrations_in_sync_status(Integration.objects.all(), {status})
                       .values_list("pk", flat=True))
        assert selected == {pk for pk, shown in column.items() if shown == status}


def test_the_publication_page_says_what_to_do_and_links_the_csv(client, superuser, published):
    workday, _, workday_publication, recruitee_publication = published
    client.force_login(superuser)
    page = client.get(reverse("admin:packages_app_publication_change", args=[workday_publication.pk])).content.decode()
    assert "kombo-manual-import" in page
    assert "Workday takes packages by hand: the customer must import it." in page
    assert "Reference ID Value" in page
    csv_url = reverse("admin:packages_app_integration_manual_import", args=[workday.pk, workday_publication.pk])
    assert csv_url in page
    assert "Download the CSV for the customer (2 packages)" in page
    other = client.get(reverse("admin:packages_app_publication_change", args=[recruitee_publication.pk]))
    assert "kombo-manual-import" not in other.content.decode()
    # The integration's own page offers the same list.
    form = client.get(reverse("admin:packages_app_integration_change", args=[workday.pk])).content.decode()
    assert csv_url in form


def test_the_csv_has_name_and_reference_id_of_what_kombo_took(client, superuser, published, make_package):
    workday, _, workday_publication, _ = published
    workday.packages.add(make_package("not-published-yet"))  # the catalogue moved on: not in the file
    client.force_login(superuser)
    response = client.get(reverse("admin:packages_app_integration_manual_import",
                                  args=[workday.pk, workday_publication.pk]))
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert re.fullmatch(r'attachment; filename="packages-workday-integration\d+-publication\d+\.csv"',
                        response["Content-Disposition"])
    text = response.content.decode("utf-8-sig")
    assert list(csv.reader(io.StringIO(text))) == [
        ["Test Name", "Reference ID Value"], ["TypeScript", "1001"], ["Big Five, short form", "big5"]]


def test_other_tools_get_plain_column_names(client, superuser, published, settings):
    _, recruitee, _, recruitee_publication = published
    settings.KOMBO_MANUAL_IMPORT_TOOLS = ["recruitee"]
    client.force_login(superuser)
    response = client.get(reverse("admin:packages_app_integration_manual_import",
                                  args=[recruitee.pk, recruitee_publication.pk]))
    assert response.content.decode("utf-8-sig").splitlines()[0] == "Name,Reference ID"


def test_the_csv_needs_the_view_permissions(client, published):
    workday, recruitee, workday_publication, _ = published
    url = reverse("admin:packages_app_integration_manual_import", args=[workday.pk, workday_publication.pk])
    user = User.objects.create_user("viewer", password="pw-for-tests-123", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_integration"))
    client.force_login(user)
    assert client.get(url).status_code == 403  # no view_publication
    user.user_permissions.add(Permission.objects.get(codename="view_publication"))
    user = User.objects.get(pk=user.pk)  # permissions are cached on the instance
    client.force_login(user)
    assert client.get(url).status_code == 200
    # A publication of another integration is not found under this one.
    wrong = reverse("admin:packages_app_integration_manual_import",
                    args=[recruitee.pk, workday_publication.pk])
    assert client.get(wrong).status_code == 404


def test_no_csv_for_a_list_kombo_did_not_take(client, superuser, sandbox, no_broker, make_package, make_integration):
    from packages_app.sandbox import Fault

    integration = make_integration([make_package("1001")], kombo_integration_id="workday:Failing1")
    (publication,) = publishing.publications_create(integrations=[integration])
    sandbox.enqueue_fault(Fault(status=400, body={"status": "error", "error": {
        "code": "PLATFORM.INPUT_INVALID", "title": "t", "message": "bad", "log_url": None}}))
    publishing.publication_execute(publication_id=publication.pk)
    publication.refresh_from_db()
    assert publication.status == "failed"
    client.force_login(superuser)
    page = client.get(reverse("admin:packages_app_publication_change", args=[publication.pk])).content.decode()
    assert "kombo-manual-import" not in page
    url = reverse("admin:packages_app_integration_manual_import", args=[integration.pk, publication.pk])
    assert client.get(url).status_code == 404
