"""Plans: an integration offers the union of its plans' packages and its own, on every way of
publishing; changing a plan makes its integrations out of sync; one default plan at most; the
plans admin (counts, search, history, publishing its integrations through the same confirmation
page); catalogue import and export with plans."""
import json
import re
from io import StringIO

import pytest
from django.contrib.admin.models import LogEntry
from django.core.management import call_command
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from packages_app import catalogue_io, publishing, selectors
from packages_app.models import (
    AssessmentPackage,
    Integration,
    Plan,
    Publication,
    SyncStatus,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("no_broker")]

PLANS_URL = reverse("admin:packages_app_plan_changelist")
PUBLISH_URL = reverse("admin:packages_app_integration_publish")


@pytest.fixture
def publisher(publisher):
    """Publishers who also see the plans."""
    from django.contrib.auth.models import Permission

    publisher.user_permissions.add(Permission.objects.get(codename="view_plan"))
    return publisher


@pytest.fixture
def catalogue(make_package):
    return {pid: make_package(pid, name=f"Package {pid}") for pid in ("a", "b", "c", "d")}


def make_plan(name, packages, **fields):
    plan = Plan.objects.create(name=name, **fields)
    plan.packages.set(packages)
    return plan


def ids(body):
    return [p["id"] for p in body["packages"]]


def succeed(integration):
    (pub,) = publishing.publications_create(integrations=[integration])
    Publication.objects.filter(pk=pub.pk).update(status="succeeded")
    return pub


def status(integration):
    return Integration.objects.with_sync_state().get(pk=integration.pk).sync_status


# --- the union ---------------------------------------------------------------------------------

def test_an_integration_offers_the_union_of_its_plans_and_its_own_packages(catalogue, make_integration):
    standard = make_plan("Standard", [catalogue["a"], catalogue["b"]])
    extra = make_plan("Video add-on", [catalogue["b"], catalogue["c"]])
    integration = make_integration([catalogue["a"], catalogue["d"]])
    integration.plans.set([standard, extra])

    plain = Integration.objects.get(pk=integration.pk)  # nothing prefetched: one query
    prefetched = Integration.objects.with_sync_state().get(pk=integration.pk)
    single = publishing.publication_plan(integration=prefetched)
    (batch,) = publishing.publication_plans(integrations=[plain])
    assert ids(plain.current_body()) == ids(prefetched.current_body()) == ["a", "b", "c", "d"]
    assert single.body_bytes == batch.body_bytes and single.sha256 == batch.sha256
    (pub,) = publishing.publications_create(integrations=[plain])
    assert ids(pub.body_dict()) == ["a", "b", "c", "d"] and pub.package_count == 4


def test_a_plan_alone_is_enough(catalogue, make_integration):
    integration = make_integration()
    integration.plans.add(make_plan("Standard", [catalogue["c"], catalogue["a"]]))
    (preview,) = selectors.integrations_preview(Integration.objects.filter(pk=integration.pk))
    assert ids(preview.plan.body) == ["a", "c"] and [a["id"] for a in preview.diff.added] == ["a", "c"]


def test_changing_a_plan_makes_each_of_its_integrations_out_of_sync(catalogue, make_integration):
    standard = make_plan("Standard", [catalogue["a"]])
    on_plan = [make_integration(), make_integration()]
    for integration in on_plan:
        integration.plans.add(standard)
        succeed(integration)
    other = make_integration([catalogue["a"]])
    succeed(other)
    assert {status(i) for i in [*on_plan, other]} == {SyncStatus.IN_SYNC}
    assert not selectors.out_of_sync_integrations().exists()

    standard.packages.add(catalogue["b"])
    assert [status(i) for i in on_plan] == [SyncStatus.CHANGED, SyncStatus.CHANGED]
    assert status(other) == SyncStatus.IN_SYNC
    assert set(selectors.out_of_sync_integrations()) == set(on_plan)

    # A package both on the plan and chosen alone stays when the plan drops it.
    on_plan[0].packages.add(catalogue["b"])
    standard.packages.remove(catalogue["b"])
    assert status(on_plan[0]) == SyncStatus.CHANGED and status(on_plan[1]) == SyncStatus.IN_SYNC
    assert ids(Integration.objects.get(pk=on_plan[0].pk).current_body()) == ["a", "b"]


def test_a_package_renamed_on_a_plan_changes_the_body(catalogue, make_integration):
    integration = make_integration()
    integration.plans.add(make_plan("Standard", [catalogue["a"]]))
    succeed(integration)
    AssessmentPackage.objects.filter(pk=catalogue["a"].pk).update(name="Renamed")
    assert status(integration) == SyncStatus.CHANGED


def test_publish_packages_sees_the_union(catalogue, make_integration):
    integration = make_integration([catalogue["d"]], kombo_integration_id="recruitee:Union1")
    integration.plans.add(make_plan("Standard", [catalogue["a"]]))
    out = StringIO()
    call_command("publish_packages", "--all-out-of-sync", "--dry-run", stdout=out)
    assert "recruitee:Union1" in out.getvalue() and "+ a" in out.getvalue() and "+ d" in out.getvalue()
    call_command("publish_packages", "--integration", "recruitee:Union1", stdout=StringIO())
    assert ids(Publication.objects.get().body_dict()) == ["a", "d"]


def _bulk(count, plans, own):
    start = Integration.objects.count()
    created = Integration.objects.bulk_create(
        Integration(kombo_integration_id=f"recruitee:P{start + i:05d}", name=f"P {start + i:05d}")
        for i in range(count))
    Integration.plans.through.objects.bulk_create(
        Integration.plans.through(integration_id=i.pk, plan_id=p.pk) for i in created for p in plans)
    Integration.packages.through.objects.bulk_create(
        Integration.packages.through(integration_id=i.pk, assessmentpackage_id=p.pk) for i in created for p in own)
    return created


def queries(fn):
    with CaptureQueriesContext(connection) as ctx:
        fn()
    return len(ctx.captured_queries)


def test_reading_the_union_costs_the_same_queries_for_5_or_50_integrations(catalogue, client, superuser):
    plans = [make_plan("Standard", [catalogue["a"], catalogue["b"]]), make_plan("Extra", [catalogue["c"]])]
    client.force_login(superuser)
    counts = []
    for count in (5, 50):
        created = _bulk(count, plans, [catalogue["d"]])
        pks = [i.pk for i in created]
        chosen = Integration.objects.filter(pk__in=pks)
        counts.append((
            queries(lambda: [i.sync_status for i in chosen.with_sync_state()]),  # noqa: B023 (called at once)
            queries(chosen.offered_packages),
            queries(lambda: selectors.integrations_preview(chosen)),  # noqa: B023
            queries(lambda: client.get(reverse("admin:packages_app_integration_changelist"))),
            queries(lambda: client.get(PLANS_URL)),
        ))
    assert counts[0] == counts[1]
    offered, rows = Integration.objects.filter(pk__in=pks).offered_packages()
    assert all(sorted(rows[p][0] for p in offered[pk]) == ["a", "b", "c", "d"] for pk in pks)


# --- the default plan --------------------------------------------------------------------------

def test_at_most_one_plan_is_the_default(db):
    Plan.objects.create(name="Standard", is_default=True)
    Plan.objects.create(name="Enterprise")
    Plan.objects.create(name="Trial")
    with pytest.raises(IntegrityError), transaction.atomic():
        Plan.objects.create(name="Premium", is_default=True)
    assert list(Plan.objects.filter(is_default=True).values_list("name", flat=True)) == ["Standard"]


def test_the_admin_says_which_plan_is_the_default_already(client, superuser):
    Plan.objects.create(name="Standard", is_default=True)
    client.force_login(superuser)
    response = client.post(reverse("admin:packages_app_plan_add"),
                           {"name": "Premium", "description": "", "is_default": "on"})
    assert response.status_code == 200
    assert "Another plan is already the default for new integrations" in response.content.decode()
    assert not Plan.objects.filter(name="Premium").exists()


# --- the plans admin ---------------------------------------------------------------------------

def test_the_plans_list_counts_packages_and_integrations_and_searches(catalogue, client, superuser,
                                                                      make_integration):
    standard = make_plan("Standard", [catalogue["a"], catalogue["b"], catalogue["c"]], is_default=True)
    make_plan("Enterprise", [catalogue["d"]], description="Big customers")
    for _ in range(2):
        make_integration([catalogue["a"]]).plans.add(standard)
    client.force_login(superuser)
    rows = {p.name: p for p in client.get(PLANS_URL).context["cl"].result_list}
    assert (rows["Standard"].package_total, rows["Standard"].integration_total) == (3, 2)
    assert (rows["Enterprise"].package_total, rows["Enterprise"].integration_total) == (1, 0)
    found = client.get(PLANS_URL, {"q": "big"}).context["cl"].result_list
    assert [p.name for p in found] == ["Enterprise"]
    found = client.get(PLANS_URL, {"q": '"Package d"'}).context["cl"].result_list
    assert [p.name for p in found] == ["Enterprise"]
    # The integration count links to the integrations on the plan.
    link = client.get(reverse("admin:packages_app_integration_changelist"), {"plans__id__exact": standard.pk})
    assert len(link.context["cl"].result_list) == 2


def test_the_plan_form_uses_autocomplete_and_keeps_history(catalogue, client, superuser):
    plan = make_plan("Standard", [catalogue["a"]])
    client.force_login(superuser)
    url = reverse("admin:packages_app_plan_change", args=[plan.pk])
    assert b"admin-autocomplete" in client.get(url).content
    response = client.post(url, {"name": "Standard", "description": "Most customers",
                                 "packages": [catalogue["a"].pk, catalogue["b"].pk]})
    assert response.status_code == 302, response.content.decode()[-2000:]
    entry = LogEntry.objects.get(object_id=str(plan.pk))
    assert "added b" in entry.get_change_message() and "Most customers" in entry.get_change_message()
    history = client.get(reverse("admin:packages_app_plan_history", args=[plan.pk]))
    assert history.status_code == 200 and "added b" in history.content.decode()


def hidden_fields(page_html):
    """The hidden fields of the confirmation form, as a browser would post them."""
    (form,) = [f for f in re.findall(r"<form[^>]*method=\"post\"[^>]*>(.*?)</form>", page_html, re.DOTALL)
               if 'name="post"' in f]
    fields = {}
    for tag in re.findall(r"<input\b[^>]*>", form):
        attrs = dict(re.findall(r'(\w+)="([^"]*)"', tag))
        if attrs.get("type") == "hidden":
            fields[attrs["name"]] = attrs.get("value", "")
    return fields


def test_publishing_the_integrations_of_plans_reaches_the_same_confirmation_page(
        catalogue, client, publisher, make_integration, no_broker, django_capture_on_commit_callbacks):
    standard = make_plan("Standard", [catalogue["a"]])
    enterprise = make_plan("Enterprise", [catalogue["b"]])
    make_plan("Unused", [catalogue["c"]])
    both = make_integration(name="Both")
    both.plans.set([standard, enterprise])
    only = make_integration([catalogue["d"]], name="Only standard")
    only.plans.add(standard)
    make_integration([catalogue["c"]], name="No plan")
    client.force_login(publisher)

    response = client.post(PLANS_URL, {"action": "publish_integrations",
                                       "_selected_action": [standard.pk, enterprise.pk]})
    assert response.status_code in (200, 302)
    page = client.get(response.url) if response.status_code == 302 else response
    assert page.status_code == 200 and page.context["title"] == "Publish to Kombo"
    text = page.content.decode()
    assert "Both" in text and "Only standard" in text and "No plan" not in text
    assert not Publication.objects.exists()

    with django_capture_on_commit_callbacks(execute=True):
        done = client.post(PUBLISH_URL, hidden_fields(text))
    assert done.status_code == 302
    bodies = {p.integration.name: ids(p.body_dict()) for p in Publication.objects.select_related("integration")}
    assert bodies == {"Both": ["a", "b"], "Only standard": ["a", "d"]}
    assert len(no_broker) == 2


def test_the_plan_action_needs_the_publish_permission(catalogue, client, editor, make_integration):
    from django.contrib.auth.models import Permission

    editor.user_permissions.add(*Permission.objects.filter(codename__in=["view_plan", "change_plan"]))
    plan = make_plan("Standard", [catalogue["a"]])
    make_integration().plans.add(plan)
    client.force_login(editor)
    listing = client.get(PLANS_URL)
    assert listing.status_code == 200 and b"publish_integrations" not in listing.content


def test_the_plan_action_with_no_integration_says_so(catalogue, client, publisher):
    plan = make_plan("Empty", [catalogue["a"]])
    client.force_login(publisher)
    response = client.post(PLANS_URL, {"action": "publish_integrations", "_selected_action": [plan.pk]},
                           follow=True)
    assert "No integration is on the selected plan: nothing to publish." in [
        str(m) for m in response.context["messages"]]


def test_the_integration_form_offers_plans(catalogue, client, superuser):
    plan = make_plan("Standard", [catalogue["a"]])
    client.force_login(superuser)
    response = client.post(reverse("admin:packages_app_integration_add"), {
        "name": "Acme", "kombo_integration_id": "recruitee:Acme9", "region": "EU", "is_active": "on",
        "plans": [plan.pk], "packages": [catalogue["b"].pk]})
    assert response.status_code == 302, response.content.decode()[-2000:]
    integration = Integration.objects.get()
    assert ids(integration.current_body()) == ["a", "b"] and not integration.created_by_webhook


# --- import and export -------------------------------------------------------------------------

def test_the_json_export_has_the_plans_and_imports_back(catalogue, superuser):
    make_plan("Standard", [catalogue["b"], catalogue["a"]], is_default=True, description="Most customers")
    make_plan("Enterprise", [catalogue["d"]])
    exported = json.loads(catalogue_io.export_json())
    assert [p["id"] for p in exported["packages"]] == ["a", "b", "c", "d"]
    assert exported["plans"] == [
        {"name": "Enterprise", "description": "", "is_default": False, "packages": ["d"]},
        {"name": "Standard", "description": "Most customers", "is_default": True, "packages": ["a", "b"]},
    ]
    assert catalogue_io.export_csv().splitlines()[0] == "id,type,name,description"  # CSV: packages only

    text = catalogue_io.export_json()
    Plan.objects.all().delete()
    AssessmentPackage.objects.all().delete()
    result = catalogue_io.catalogue_import(data=text.encode(), fmt="json", user=superuser, via="import of c.json")
    assert result.ok, result.errors
    assert result.plans_added == ["Enterprise", "Standard"]
    assert result.summary() == "4 added, 0 updated, 0 unchanged. Plans: 2 added, 0 updated, 0 unchanged."
    assert catalogue_io.export_json() == text
    again = catalogue_io.catalogue_import(data=text.encode(), fmt="json")
    assert again.ok and again.plans_unchanged == 2 and not again.plans_updated
    assert LogEntry.objects.filter(object_repr="Standard", change_message="Added by import of c.json.").exists()


def test_importing_a_plan_updates_it_and_moves_the_default(catalogue):
    standard = make_plan("Standard", [catalogue["a"], catalogue["b"]], is_default=True)
    document = {"packages": [{"id": "e", "type": "SKILLS_TEST", "name": "E", "description": "New"}],
                "plans": [{"name": "Standard", "packages": ["b", "c"]},
                          {"name": "Enterprise", "is_default": True, "packages": ["e", "a"]}]}
    result = catalogue_io.catalogue_import(data=json.dumps(document).encode(), fmt="json")
    assert result.ok, result.errors
    assert result.plans_updated == ["Standard"] and result.plans_added == ["Enterprise"]
    standard.refresh_from_db()
    assert not standard.is_default and sorted(p.package_id for p in standard.packages.all()) == ["b", "c"]
    enterprise = Plan.objects.get(name="Enterprise")
    assert enterprise.is_default and sorted(p.package_id for p in enterprise.packages.all()) == ["a", "e"]
    message = LogEntry.objects.filter(object_repr="Standard").latest("pk").get_change_message()
    assert "packages: added c, removed a" in message


@pytest.mark.parametrize("plans, reason", [
    ("not a list", None),
    (["Standard"], "plans[0]: must be an object"),
    ([{"name": "Standard"}], "plans[0]: packages is required"),
    ([{"name": "Standard", "packages": ["a", "zzz"]}], "plans[0]: unknown package id: zzz"),
    ([{"name": "Standard", "packages": [1]}], "plans[0]: packages is required and must be a list of package ids"),
    ([{"name": " ", "packages": []}], "plans[0]: name:"),
    ([{"name": "S", "packages": [], "is_default": "yes"}], "plans[0]: is_default must be true or false"),
    ([{"name": "S", "packages": [], "colour": "red"}], "plans[0]: unknown field: colour"),
    ([{"name": "S", "packages": []}, {"name": "S", "packages": []}], 'plans[1]: name "S" is a duplicate of plans[0]'),
    ([{"name": "S", "packages": [], "is_default": True}, {"name": "T", "packages": [], "is_default": True}],
     "plans[1]: only one plan can be the default (plans[0] is)"),
], ids=["not a list", "not an object", "no packages", "unknown package", "id not a string", "blank name",
        "default not a boolean", "unknown field", "duplicate name", "two defaults"])
def test_a_bad_plan_refuses_the_whole_import(catalogue, plans, reason):
    document = {"packages": [{"id": "new", "type": "SKILLS_TEST", "name": "N", "description": "D"}], "plans": plans}
    data = json.dumps(document).encode()
    if reason is None:
        with pytest.raises(catalogue_io.ImportFormatError, match='"plans" must be a list'):
            catalogue_io.catalogue_import(data=data, fmt="json")
    else:
        result = catalogue_io.catalogue_import(data=data, fmt="json")
        assert not result.ok and any(str(e).startswith(reason) for e in result.errors), result.errors
    assert not AssessmentPackage.objects.filter(package_id="new").exists() and not Plan.objects.exists()


def test_the_admin_export_and_import_carry_plans(catalogue, client, superuser):
    from django.core.files.uploadedfile import SimpleUploadedFile

    make_plan("Standard", [catalogue["a"]])
    client.force_login(superuser)
    export = client.get(reverse("admin:packages_app_assessmentpackage_export"), {"format": "json"})
    document = json.loads(export.content)
    assert document["plans"][0]["name"] == "Standard"
    document["plans"].append({"name": "Enterprise", "description": "", "is_default": False, "packages": ["b"]})
    url = reverse("admin:packages_app_assessmentpackage_import")
    preview = client.post(url, {"file": SimpleUploadedFile("c.json", json.dumps(document).encode())})
    assert preview.context["result"].plans_added == ["Enterprise"]
    response = client.post(url, {"confirm": preview.context["token"]}, follow=True)
    assert ("Imported c.json: 0 added, 0 updated, 4 unchanged. Plans: 1 added, 0 updated, 1 unchanged."
            in [str(m) for m in response.context["messages"]])
