"""What staff read on the admin's pages, checked without a browser: the publications list's
filters and columns, dates, deletions, history, the import preview, the lockout page."""
import pytest
from django.urls import reverse

from packages_app import payloads
from packages_app.models import Publication

pytestmark = pytest.mark.django_db


def publication(integration, **fields):
    body = payloads.canonical_bytes(payloads.build_body(list(integration.packages.all())))
    return Publication.objects.create(integration=integration, body=body.decode(),
                                      body_sha256=payloads.body_sha256(body),
                                      package_count=integration.packages.count(), **fields)


def test_publications_filter_by_warnings(client, superuser, make_package, make_integration):
    integration = make_integration([make_package()])
    warned = publication(integration, status="succeeded", warnings=["Name too long"])
    quiet = publication(integration, status="succeeded")
    client.force_login(superuser)
    url = reverse("admin:packages_app_publication_changelist")
    with_warnings = client.get(url, {"warnings": "yes"})
    assert list(with_warnings.context["cl"].result_list) == [warned]
    assert list(client.get(url, {"warnings": "no"}).context["cl"].result_list) == [quiet]


def test_publications_filter_by_integration_names_the_chosen_one_and_lists_none(
        client, superuser, make_package, make_integration):
    package = make_package()
    acme, globex = make_integration([package], name="Acme Corp"), make_integration([package], name="Globex GmbH")
    mine, theirs = publication(acme, status="succeeded"), publication(globex, status="succeeded")
    client.force_login(superuser)
    url = reverse("admin:packages_app_publication_changelist")
    everything = client.get(url).content.decode()
    # A search box over the integrations, not a list of every name (5,000 at the users' scale).
    assert 'data-model-name="publication" data-field-name="integration"' in everything
    assert f"?integration__id__exact={globex.pk}" not in everything
    chosen = client.get(url, {"integration__id__exact": acme.pk})
    assert list(chosen.context["cl"].result_list) == [mine]
    assert '<li class="selected">' in chosen.content.decode().split("By integration")[1].split("</ul>")[0]
    assert "Acme Corp" in chosen.content.decode().split("By integration")[1].split("</ul>")[0]
    # Forged values: an empty list, never an error page.
    for forged in ("abc", "99999999999999999999", str(theirs.pk + 1000)):
        response = client.get(url, {"integration__id__exact": forged})
        assert response.status_code == 200 and list(response.context["cl"].result_list) == []
    # The search box's own endpoint answers for that field.
    found = client.get(reverse("admin:autocomplete"), {"term": "Glob", "app_label": "packages_app",
                                                        "model_name": "publication", "field_name": "integration"})
    assert [r["text"] for r in found.json()["results"]] == [str(globex)]


def test_publications_list_short_badges_dates_and_error_columns(client, superuser, make_package, make_integration):
    from datetime import datetime, timezone as tz

    integration = make_integration([make_package()])
    waiting = publication(integration, status="waiting", next_attempt_at=datetime(2026, 12, 1, 9, 5, tzinfo=tz.utc))
    failed = publication(integration, status="failed", http_status=404, error_code="PLATFORM.INTEGRATION_NOT_FOUND",
                         warnings=["a", "b"])
    Publication.objects.filter(pk=failed.pk).update(requested_at=datetime(2026, 12, 1, 8, 20, tzinfo=tz.utc))
    client.force_login(superuser)
    page = client.get(reverse("admin:packages_app_publication_changelist")).content.decode()
    # The long status is the tooltip of a short badge.
    assert ">Waiting for first sync</span>" in page
    assert "title=\"Waiting for the customer&#x27;s first sync; next try at 2026-12-01 09:05 UTC\"" in page
    # One date format, with the time zone; no "a.m.".
    assert "2026-12-01 08:20 UTC" in page and "a.m." not in page and "p.m." not in page
    assert "PLATFORM.<wbr>INTEGRATION_NOT_FOUND" in page
    assert 'class="kombo-warning-count"' in page and ">2</strong>" in page
    assert waiting.pk


def test_when_reads_datetimes_and_kombos_iso_strings():
    from datetime import datetime, timezone as tz

    from packages_app.admin.display import duration_text, when

    assert when(datetime(2026, 12, 1, 8, 20, tzinfo=tz.utc)) == "2026-12-01 08:20 UTC"
    assert when("2026-12-01T12:39:41.454Z") == "2026-12-01 12:39 UTC"
    assert when("not a date") == "not a date" and when(None) == ""
    from datetime import timedelta

    assert duration_text(timedelta(minutes=15)) == "15 minutes"
    assert duration_text(timedelta(minutes=1)) == "1 minute"
    assert duration_text(timedelta(minutes=90)) == "1 hour 30 minutes"


def test_failed_publication_says_its_error_once_and_offers_to_publish_again_once(
        client, superuser, make_package, make_integration):
    integration = make_integration([make_package()], name="Initech")
    reason = 'Kombo answered HTTP 404 PLATFORM.INTEGRATION_NOT_FOUND: No integration "x".'
    failed = publication(integration, status="failed", http_status=404, attempts=1,
                         error_code="PLATFORM.INTEGRATION_NOT_FOUND", error_title="Not found",
                         error_message='No integration "x".', failure_reason=reason)
    from django.utils import timezone

    failed.attempt_log.create(number=1, started_at=timezone.now(), finished_at=timezone.now(), http_status=404,
                              error_code="PLATFORM.INTEGRATION_NOT_FOUND", outcome="permanent", message=reason)
    client.force_login(superuser)
    page = client.get(reverse("admin:packages_app_publication_change", args=[failed.pk])).content.decode()
    assert page.count("No integration &quot;x&quot;.") == 1
    assert page.count("Publish this integration again") == 1
    assert "the error above" in page
    assert "Publication #%d of Initech" % failed.pk in page and f"of {integration.pk}<" not in page
    # No History button: the page is the publication's story, and its History URL leads here.
    assert reverse("admin:packages_app_publication_history", args=[failed.pk]) not in page
    history = client.get(reverse("admin:packages_app_publication_history", args=[failed.pk]))
    assert history.status_code == 302 and history.url == reverse("admin:packages_app_publication_change",
                                                                 args=[failed.pk])


def test_superseded_publication_says_nothing_was_sent_and_links_the_next(
        client, superuser, make_package, make_integration):
    integration = make_integration([make_package()])
    old = publication(integration, status="superseded")
    new = publication(integration, status="succeeded", http_status=200, attempts=1)
    client.force_login(superuser)
    page = client.get(reverse("admin:packages_app_publication_change", args=[old.pk])).content.decode()
    assert "What would have been sent (never sent)" in page and ">What was sent<" not in page
    assert reverse("admin:packages_app_publication_change", args=[new.pk]) in page
    assert "Publish this integration again" not in page
    sent = client.get(reverse("admin:packages_app_publication_change", args=[new.pk])).content.decode()
    assert "What was sent" in sent


def test_compare_page_highlights_what_kombo_lost_offers_publish_and_filters_log_links(
        client, superuser, sandbox, make_package, make_integration, monkeypatch):
    from packages_app import kombo, selectors
    from packages_app.sandbox import _IntegrationState

    kept, lost = make_package("kept"), make_package("lost")
    integration = make_integration([kept, lost], name="Acme Corp")
    sent = publication(integration, status="succeeded", http_status=200, attempts=1)
    state = sandbox._states.setdefault(integration.kombo_integration_id, _IntegrationState())
    state.replace([p for p in sent.body_dict()["packages"] if p["id"] == "kept"])
    client.force_login(superuser)
    url = reverse("admin:packages_app_integration_compare", args=[integration.pk])
    page = client.get(url).content.decode()
    row = page.split('data-package="lost"')[1].split("</tr>")[0]
    assert "kombo-gone" in row and "missing at Kombo" in row
    assert f"?ids={integration.pk}" in page and "Publish to Kombo" in page
    assert "a.m.." not in page and "p.m.." not in page
    assert 'href="/admin/packages_app/">' in page  # the app in the breadcrumbs
    assert 'class="kombo-compare-scroll"' in page  # the table scrolls in its box on a phone

    def refuse(**kwargs):
        raise kombo.KomboError(kind=kombo.ErrorKind.PERMANENT, reason="refused",
                               log_url="javascript:alert(1)")

    monkeypatch.setattr(selectors, "integration_drift", refuse)
    assert "javascript:" not in client.get(url).content.decode()


def test_deleting_a_package_names_the_customers_and_records_it_in_their_history(
        client, superuser, make_package, make_integration):
    from django.contrib.admin.models import LogEntry

    from packages_app.models import AssessmentPackage

    package = make_package("ref-check-basic", name="Reference check")
    acme = make_integration([package], name="Acme Corp")
    client.force_login(superuser)
    url = reverse("admin:packages_app_assessmentpackage_delete", args=[package.pk])
    page = client.get(url).content.decode()
    assert "No longer offered to" in page and "Acme Corp" in page
    assert "object (" not in page and "relationship" not in page
    client.post(url, {"post": "yes"})
    assert not AssessmentPackage.objects.exists()
    entry = LogEntry.objects.get(object_id=str(acme.pk), content_type__model="integration")
    assert entry.get_change_message() == ("Package Reference check (ref-check-basic) removed: "
                                          "it was deleted from the catalogue.")


def test_deleting_a_published_integration_explains_and_offers_to_pause(
        client, superuser, make_package, make_integration):
    from packages_app.models import Integration

    integration = make_integration([make_package()], name="Acme Corp")
    publication(integration, status="succeeded")
    client.force_login(superuser)
    changelist = reverse("admin:packages_app_integration_changelist")
    page = client.post(changelist, {"action": "delete_selected", "_selected_action": [integration.pk],
                                    "index": 0})
    text = page.content.decode()
    assert page.status_code == 200 and "permission" not in text
    assert "Pause it instead" in text and 'value="pause_selected"' in text
    # Confirming anyway deletes nothing.
    client.post(changelist, {"action": "delete_selected", "_selected_action": [integration.pk], "post": "yes"})
    assert Integration.objects.filter(pk=integration.pk).exists()
    # The page's button pauses it.
    client.post(changelist, {"action": "pause_selected", "_selected_action": [integration.pk]})
    assert not Integration.objects.get(pk=integration.pk).is_active
    # The delete URL itself refuses (403) with the same explanation.
    direct = client.get(reverse("admin:packages_app_integration_delete", args=[integration.pk]))
    assert direct.status_code == 403 and "its publications are the record" in direct.content.decode()


def test_searching_integrations_finds_a_package_id(client, superuser, make_package, make_integration):
    big5 = make_package("big5-personality")
    offering = make_integration([big5, make_package()], name="Acme Corp")
    make_integration([make_package()], name="Globex GmbH")
    client.force_login(superuser)
    response = client.get(reverse("admin:packages_app_integration_changelist"), {"q": "big5-personality"})
    assert [i.pk for i in response.context["cl"].result_list] == [offering.pk]


def test_lockout_page_says_minutes_under_the_sites_header(client, superuser):
    for _ in range(6):
        response = client.post(reverse("admin:login"), {"username": "root", "password": "wrong"})
    text = response.content.decode()
    assert "Try again in 15 minutes" in text and "PT15M" not in text
    assert "Kombo package publisher" in text and "Django administration" not in text


def test_csv_import_reads_semicolons_and_previews_before_writing(client, superuser):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from packages_app import catalogue_io
    from packages_app.models import AssessmentPackage

    text = "id;type;name;description\r\nsql-basic;SKILLS_TEST;SQL; with a semicolon;Joins\r\n"
    assert catalogue_io.csv_delimiter(text) == ";"
    europe = 'id;type;name;description\r\nsql-basic;SKILLS_TEST;"SQL, basics";Joins\r\n'
    assert [r for _, r in catalogue_io.parse_csv(europe)] == [
        {"id": "sql-basic", "type": "SKILLS_TEST", "name": "SQL, basics", "description": "Joins"}]
    client.force_login(superuser)
    url = reverse("admin:packages_app_assessmentpackage_import")
    preview = client.post(url, {"file": SimpleUploadedFile("europe.csv", europe.encode())})
    assert preview.status_code == 200 and preview.context["added"] == [("sql-basic", "SKILLS_TEST", "SQL, basics")]
    assert not AssessmentPackage.objects.exists()
    # The catalogue changes before the confirm: nothing imported, the new preview shown instead.
    AssessmentPackage.objects.create(package_id="sql-basic", type="SKILLS_TEST", name="SQL", description="Old")
    again = client.post(url, {"confirm": preview.context["token"]})
    assert again.status_code == 200 and "changed since the preview" in again.context["notice"]
    assert AssessmentPackage.objects.get().name == "SQL"
    assert again.context["changed"][0][0] == "sql-basic"
    done = client.post(url, {"confirm": again.context["token"]})
    assert done.status_code == 302 and AssessmentPackage.objects.get().name == "SQL, basics"


def test_the_cannot_delete_page_costs_the_same_queries_for_two_or_twelve_integrations(
        client, superuser, make_package, make_integration):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    package = make_package()
    integrations = [make_integration([package], name=f"Customer {i:02d}") for i in range(12)]
    for integration in integrations:
        publication(integration, status="succeeded")
    client.force_login(superuser)
    changelist = reverse("admin:packages_app_integration_changelist")
    counts = []
    for selected in (integrations[:2], integrations):
        with CaptureQueriesContext(connection) as ctx:
            page = client.post(changelist, {"action": "delete_selected", "index": 0,
                                            "_selected_action": [i.pk for i in selected]})
        assert page.status_code == 200 and "Cannot delete these integrations" in page.content.decode()
        counts.append(len(ctx.captured_queries))
    assert counts[0] == counts[1], counts


def test_deleting_packages_reads_their_customers_in_the_same_queries_for_one_or_five(
        client, superuser, make_package, make_integration):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from packages_app.models import AssessmentPackage

    packages = [make_package(f"bulk-{i}") for i in range(6)]
    for i in range(4):
        make_integration(packages, name=f"Customer {i}")
    client.force_login(superuser)
    changelist = reverse("admin:packages_app_assessmentpackage_changelist")
    counts = []
    for selected in (packages[:1], packages[1:]):
        data = {"action": "delete_selected", "index": 0, "_selected_action": [p.pk for p in selected]}
        with CaptureQueriesContext(connection) as ctx:
            confirmation = client.post(changelist, data)
        assert confirmation.status_code == 200 and "Customer 3" in confirmation.content.decode()
        with CaptureQueriesContext(connection) as deleted:
            client.post(changelist, {**data, "post": "yes"})
        counts.append((len(ctx.captured_queries), len(deleted.captured_queries)))
    assert not AssessmentPackage.objects.filter(pk__in=[p.pk for p in packages[:6]]).exists()
    (confirm_one, delete_one), (confirm_five, delete_five) = counts
    assert confirm_one == confirm_five, counts
    # Deleting writes each package's History entries in one statement; the holders are read once.
    assert delete_five - delete_one <= 4, counts
