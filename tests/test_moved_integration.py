"""A moved integration (a new Kombo id or region) is not "in sync": what was published counts only
at the Kombo id and region it went to. Publications record both; the change form asks first."""
import pytest
from django.db import connection
from django.urls import reverse

from packages_app import payloads, publishing, selectors
from packages_app.models import Integration, Publication, SyncStatus

pytestmark = pytest.mark.django_db


@pytest.fixture
def published(sandbox, no_broker, make_package, make_integration):
    integration = make_integration([make_package("1001"), make_package("1002")],
                                   kombo_integration_id="recruitee:Old1", name="Acme")
    (publication,) = publishing.publications_create(integrations=[integration])
    publishing.publication_execute(publication_id=publication.pk)
    publication.refresh_from_db()
    assert publication.status == "succeeded"
    return integration, publication


def status_of(integration):
    return Integration.objects.get(pk=integration.pk).sync_status


def change_url(integration):
    return reverse("admin:packages_app_integration_change", args=[integration.pk])


def form_data(integration, **changes):
    data = {"name": integration.name, "kombo_integration_id": integration.kombo_integration_id,
            "region": integration.region, "is_active": "on",
            "packages": list(integration.packages.values_list("pk", flat=True))}
    data.update(changes)
    return data


def test_each_publication_records_where_it_went(published):
    integration, publication = published
    assert (publication.target_kombo_integration_id, publication.target_region) == ("recruitee:Old1", "EU")
    # The same, read back from the database (planning's COPY on PostgreSQL wrote them).
    assert Publication.objects.filter(pk=publication.pk, target_kombo_integration_id="recruitee:Old1",
                                      target_region="EU").exists()


@pytest.mark.parametrize("change", [{"kombo_integration_id": "recruitee:New1"}, {"region": "US"}],
                         ids=["new id", "new region"])
def test_a_moved_integration_is_never_published_there_and_out_of_sync(published, change):
    integration, _ = published
    assert status_of(integration) == SyncStatus.IN_SYNC
    Integration.objects.filter(pk=integration.pk).update(**change)
    assert status_of(integration) == SyncStatus.NEVER_PUBLISHED
    assert integration.pk in {i.pk for i in selectors.out_of_sync_integrations()}
    (preview,) = selectors.integrations_preview(Integration.objects.filter(pk=integration.pk))
    assert not preview.previously_published and not preview.in_sync
    assert [p["id"] for p in preview.diff.added] == ["1001", "1002"] and not preview.diff.removed
    moved = Integration.objects.get(pk=integration.pk)
    assert selectors.latest_accepted_publication(integration=moved) is None


def test_a_publish_after_the_move_goes_to_the_new_place_and_counts_there(published, sandbox):
    integration, _ = published
    Integration.objects.filter(pk=integration.pk).update(kombo_integration_id="recruitee:New1")
    moved = Integration.objects.get(pk=integration.pk)
    (publication,) = publishing.publications_create(integrations=[moved])
    assert publication.target_kombo_integration_id == "recruitee:New1"
    publishing.publication_execute(publication_id=publication.pk)
    assert [p["id"] for p in sandbox.packages("recruitee:New1")] == ["1001", "1002"]
    assert status_of(moved) == SyncStatus.IN_SYNC


def test_moving_back_finds_what_was_published_there(published):
    integration, publication = published
    Integration.objects.filter(pk=integration.pk).update(region="US")
    assert status_of(integration) == SyncStatus.NEVER_PUBLISHED
    Integration.objects.filter(pk=integration.pk).update(region="EU")
    assert status_of(integration) == SyncStatus.IN_SYNC
    assert selectors.latest_accepted_publication(integration=Integration.objects.get(pk=integration.pk)) == publication


def test_the_change_form_says_so_before_saving_and_asks_for_a_tick(client, superuser, published):
    integration, _ = published
    client.force_login(superuser)
    page = client.get(change_url(integration)).content.decode()
    assert "kombo-move-notice" in page and "Published to Kombo as recruitee:Old1 in EU" in page
    # The tick is a hidden field until a save moves the integration.
    assert 'type="hidden" name="confirm_move"' in page

    response = client.post(change_url(integration), form_data(integration, kombo_integration_id="recruitee:New1"))
    assert response.status_code == 200  # not saved
    error = response.context["adminform"].form.errors["confirm_move"][0]
    assert "recruitee:Old1" in error and "recruitee:New1" in error and "never published" in error
    assert 'type="checkbox" name="confirm_move"' in response.content.decode()
    assert Integration.objects.get(pk=integration.pk).kombo_integration_id == "recruitee:Old1"

    response = client.post(change_url(integration), form_data(
        integration, kombo_integration_id="recruitee:New1", confirm_move="on"))
    assert response.status_code == 302
    assert Integration.objects.get(pk=integration.pk).kombo_integration_id == "recruitee:New1"
    assert status_of(integration) == SyncStatus.NEVER_PUBLISHED


def test_other_edits_and_unpublished_integrations_need_no_tick(client, superuser, published, make_integration):
    integration, _ = published
    client.force_login(superuser)
    response = client.post(change_url(integration), form_data(integration, name="Acme GmbH"))
    assert response.status_code == 302
    fresh = make_integration(kombo_integration_id="recruitee:Fresh1")
    page = client.get(change_url(fresh)).content.decode()
    assert "kombo-move-notice" not in page
    response = client.post(change_url(fresh), form_data(fresh, kombo_integration_id="recruitee:Fresh2", region="US"))
    assert response.status_code == 302
    assert Integration.objects.get(pk=fresh.pk).kombo_integration_id == "recruitee:Fresh2"


def test_moving_cancels_what_was_on_its_way_to_the_old_place(client, superuser, published, no_broker):
    integration, _ = published
    integration.packages.clear()
    (queued,) = publishing.publications_create(integrations=[integration])
    client.force_login(superuser)
    response = client.post(change_url(integration), form_data(
        integration, region="US", confirm_move="on"), follow=True)
    queued.refresh_from_db()
    assert queued.status == "cancelled"
    assert "moved" in queued.cancel_reason
    assert any("1 publication cancelled" in str(m) for m in response.context["messages"])
    assert status_of(integration) == SyncStatus.NEVER_PUBLISHED


@pytest.mark.postgresql  # EXPLAIN of PostgreSQL's plan
def test_the_baseline_is_one_probe_of_the_partial_index(published):
    """The sync status's latest accepted publication reads publication_accepted_idx with the
    integration, its Kombo id and its region: no scan over what was published elsewhere."""
    sql, params = Integration.objects.with_sync_state().prefetch_related(None).query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("EXPLAIN " + sql, params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "publication_accepted_idx" in plan
    accepted_probe = plan.split("publication_accepted_idx", 1)[1].split("\n")[1:3]
    assert any("Index Cond" in line and "target_kombo_integration_id" in line for line in accepted_probe), plan


# --- the migration ----------------------------------------------------------------------------

def _migrate(target):
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(target)
    return executor.loader.project_state(target).apps


def _latest():
    from django.db.migrations.loader import MigrationLoader

    return [key for key in MigrationLoader(connection).graph.leaf_nodes() if key[0] == "packages_app"]


@pytest.mark.django_db(transaction=True)
def test_the_migration_backfills_the_place_and_refuses_ids_that_differ_in_case():
    latest = _latest()
    before = [("packages_app", "0007_plans_and_webhook_events")]
    try:
        apps = _migrate(before)
        OldIntegration = apps.get_model("packages_app", "Integration")
        OldPublication = apps.get_model("packages_app", "Publication")
        OldPackage = apps.get_model("packages_app", "AssessmentPackage")
        us = OldIntegration.objects.create(kombo_integration_id="workday:Us1", name="Us", region="US")
        eu = OldIntegration.objects.create(kombo_integration_id="recruitee:Eu1", name="Eu", region="EU")
        empty = payloads.canonical_bytes({"packages": []})
        for integration in (us, eu, us):
            OldPublication.objects.create(integration=integration, body=empty.decode(), status="succeeded",
                                          body_sha256=payloads.body_sha256(empty))
        OldPackage.objects.create(package_id="BIG5", type="BEHAVIORAL", name="Big Five", description="d")
        OldPackage.objects.create(package_id="big5", type="BEHAVIORAL", name="Big five again", description="d")
        with pytest.raises(RuntimeError) as refused:
            _migrate([("packages_app", "0008_publication_place_and_package_id_rules")])
        assert "'BIG5' (Big Five" in str(refused.value) and "'big5' (Big five again" in str(refused.value)
        assert "Nothing was changed" in str(refused.value)

        OldPackage.objects.filter(package_id="big5").update(package_id="big5-again")
        apps = _migrate([("packages_app", "0008_publication_place_and_package_id_rules")])
        Publication = apps.get_model("packages_app", "Publication")
        assert sorted(Publication.objects.values_list("integration_id", "target_kombo_integration_id",
                                                      "target_region")) == sorted([
            (us.pk, "workday:Us1", "US"), (us.pk, "workday:Us1", "US"), (eu.pk, "recruitee:Eu1", "EU")])
    finally:
        _migrate(latest)
    # Backfilled rows are the baseline of their integration, as before the migration.
    assert Integration.objects.get(kombo_integration_id="workday:Us1").sync_status == SyncStatus.AWAITING_IMPORT
    assert Integration.objects.get(kombo_integration_id="recruitee:Eu1").sync_status == SyncStatus.IN_SYNC


def test_a_publication_built_for_the_old_place_is_cancelled_by_the_take_not_sent(published, sandbox):
    """Moved behind the admin's back (a script, the shell): the take finds the publication built
    for another place, ends it as cancelled with the reason and sends nothing anywhere."""
    integration, _ = published
    (pending,) = publishing.publications_create(integrations=[integration])
    Integration.objects.filter(pk=integration.pk).update(kombo_integration_id="recruitee:New1")
    sent_before = len(sandbox.requests("PUT"))
    assert publishing.publication_execute(publication_id=pending.pk).status == "cancelled"
    pending.refresh_from_db()
    assert pending.cancel_reason == publishing.transitions.MOVED_REASON
    assert len(sandbox.requests("PUT")) == sent_before
    # A publication made after the move goes to the new place.
    (fresh,) = publishing.publications_create(integrations=[Integration.objects.get(pk=integration.pk)])
    assert publishing.publication_execute(publication_id=fresh.pk).status == "succeeded"
    assert sandbox.requests("PUT")[-1].integration_id == "recruitee:New1"


def test_publish_all_out_of_sync_leaves_out_a_failed_publish_of_a_list_kombo_already_holds(published, sandbox):
    from packages_app.sandbox import Fault

    integration, _ = published
    (again,) = publishing.publications_create(integrations=[integration])  # the same list, sent again
    sandbox.enqueue_fault(Fault(status=400, body={"status": "error", "error": {
        "code": "PLATFORM.INPUT_INVALID", "title": "t", "message": "refused"}}))
    assert publishing.publication_execute(publication_id=again.pk).status == "failed"
    assert status_of(integration) == SyncStatus.FAILED
    # Kombo still holds the list it accepted before, which is the catalogue's: nothing to send.
    assert integration.pk not in {i.pk for i in selectors.out_of_sync_integrations()}
    assert integration.pk not in {p.integration.pk for p in selectors.out_of_sync_previews()}
    # Once the catalogue changes, it is listed, and by both.
    integration.packages.remove(integration.packages.first())
    assert integration.pk in {i.pk for i in selectors.out_of_sync_integrations()}
    assert integration.pk in {p.integration.pk for p in selectors.out_of_sync_previews()}
