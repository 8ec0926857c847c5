"""The admin as staff use it, through Django's test client: forms, the publish action, the
button, the confirmation page and its guards, permissions."""
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from packages_app import publishing
from packages_app.models import AssessmentPackage, Integration, Publication, SyncStatus

PUBLISH_URL = reverse("admin:packages_app_integration_publish")
CHANGELIST_URL = reverse("admin:packages_app_integration_changelist")




def form_data(page, **extra):
    """What the confirmation form posts: its hidden fields (the stored preview's id and digest)."""
    assert page.status_code == 200
    data = dict(re.findall(r'<input type="hidden" name="(post|preview|digest)" value="([^"]*)"',
                           page.content.decode()))
    assert set(data) == {"post", "preview", "digest"}
    data.update(extra)
    return data


def confirm_data(client, ids, **extra):
    """What confirming the page for these integrations would post."""
    return form_data(client.get(PUBLISH_URL, {"ids": ",".join(map(str, ids))}), **extra)


# --- catalogue forms ---------------------------------------------------------------------------

def test_package_form_refuses_blank_padded_and_control_characters(client, editor):
    client.force_login(editor)
    url = reverse("admin:packages_app_assessmentpackage_add")
    response = client.post(url, {"package_id": "bad\tid", "type": "SKILLS_TEST", "name": " ", "description": ""})
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "control characters" in errors["package_id"][0]
    assert errors["name"] and errors["description"]
    assert AssessmentPackage.objects.count() == 0


def test_package_id_is_unique_with_a_form_error(client, editor, make_package):
    make_package("1001")
    client.force_login(editor)
    response = client.post(reverse("admin:packages_app_assessmentpackage_add"),
                           {"package_id": "1001", "type": "SKILLS_TEST", "name": "X", "description": "Y"})
    assert "already exists" in response.context["adminform"].form.errors["package_id"][0]


def test_package_pages_list_search_filter_and_show_offering_integrations(client, editor, make_package, make_integration):
    package = make_package("1001", name="TypeScript")
    make_integration([package], name="Acme")
    client.force_login(editor)
    listing = client.get(reverse("admin:packages_app_assessmentpackage_changelist"), {"q": "TypeScript", "type__exact": "SKILLS_TEST"})
    assert listing.status_code == 200 and b"1 integration" in listing.content
    detail = client.get(reverse("admin:packages_app_assessmentpackage_change", args=[package.pk]))
    assert b"Acme" in detail.content


def test_integration_id_must_look_like_tool_colon_identifier(client, editor):
    client.force_login(editor)
    response = client.post(reverse("admin:packages_app_integration_add"),
                           {"name": "Acme", "kombo_integration_id": "no colon here", "region": "EU", "is_active": "on"})
    assert 'as "tool:identifier"' in response.context["adminform"].form.errors["kombo_integration_id"][0]
    assert not Integration.objects.exists()


# --- sync status and the list ------------------------------------------------------------------

def test_sync_status_moves_through_its_states(make_package, make_integration):
    package = make_package()
    integration = make_integration([package])
    assert Integration.objects.with_sync_state().get().sync_status == SyncStatus.NEVER_PUBLISHED
    (pub,) = publishing.publications_create(integrations=[integration])
    assert Integration.objects.with_sync_state().get().sync_status == SyncStatus.PUBLISHING
    Publication.objects.filter(pk=pub.pk).update(status="succeeded")
    assert Integration.objects.with_sync_state().get().sync_status == SyncStatus.IN_SYNC
    package.name = "Renamed"
    package.save()
    assert Integration.objects.with_sync_state().get().sync_status == SyncStatus.CHANGED
    (pub2,) = publishing.publications_create(integrations=[integration])
    Publication.objects.filter(pk=pub2.pk).update(status="failed")
    assert Integration.objects.with_sync_state().get().sync_status == SyncStatus.FAILED


def test_integration_list_query_count_does_not_grow_with_rows(client, superuser, make_package, make_integration):
    packages = [make_package() for _ in range(5)]

    def count_queries():
        with CaptureQueriesContext(connection) as ctx:
            response = client.get(CHANGELIST_URL)
        assert response.status_code == 200
        return len(ctx.captured_queries)

    client.force_login(superuser)
    for _ in range(10):
        make_integration(packages)
    small = count_queries()
    for _ in range(90):
        make_integration(packages)
    assert count_queries() == small


def test_sync_status_filter(client, superuser, make_package, make_integration):
    package = make_package()
    fresh = make_integration([package], name="Fresh")
    synced = make_integration([package], name="Synced")
    (pub,) = publishing.publications_create(integrations=[synced])
    Publication.objects.filter(pk=pub.pk).update(status="succeeded")
    client.force_login(superuser)
    response = client.get(CHANGELIST_URL, {"sync": "in_sync"})
    names = [i.name for i in response.context["cl"].result_list]
    assert names == ["Synced"]
    response = client.get(CHANGELIST_URL, {"sync": "never_published"})
    assert [i.name for i in response.context["cl"].result_list] == [fresh.name]


# --- publishing from the admin -----------------------------------------------------------------

def test_action_leads_to_confirmation_then_queues_after_commit(client, publisher, make_package, make_integration,
                                                              django_capture_on_commit_callbacks, no_broker):
    a, b = make_integration([make_package("1001")]), make_integration([make_package("1002")])
    client.force_login(publisher)
    response = client.post(CHANGELIST_URL, {"action": "publish_selected", "_selected_action": [a.pk, b.pk]})
    # The selection is stored server-side: the URL names the preview, never the ids.
    assert response.status_code == 302 and response.url.startswith(f"{PUBLISH_URL}?preview=")
    page = client.get(response.url)
    assert b"1 to add" in page.content and b"1001" in page.content and b"1002" in page.content
    assert not Publication.objects.exists()

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        done = client.post(PUBLISH_URL, form_data(page))
    assert done.status_code == 302
    assert Publication.objects.count() == 2 and no_broker == []  # nothing queued before commit
    for callback in callbacks:
        callback()
    assert sorted(no_broker) == sorted(Publication.objects.values_list("pk", flat=True))
    pub = Publication.objects.get(integration=a)
    assert pub.requested_by == publisher and pub.status == "queued" and pub.package_count == 1
    assert pub.body == '{"packages":[{"id":"1001","type":"SKILLS_TEST","name":"Package 1","description":"Description of package 1"}]}'


def test_button_on_the_integration_page(client, publisher, editor, make_package, make_integration):
    integration = make_integration([make_package()])
    url = reverse("admin:packages_app_integration_change", args=[integration.pk])
    client.force_login(publisher)
    assert f'{PUBLISH_URL}?ids={integration.pk}'.encode() in client.get(url).content
    client.force_login(editor)
    page = client.get(url).content
    assert b"Publish to Kombo" not in page and PUBLISH_URL.encode() not in page


def test_staff_without_permission_see_no_action_and_forged_posts_get_403(client, editor, make_package, make_integration,
                                                                        django_capture_on_commit_callbacks):
    integration = make_integration([make_package()])
    client.force_login(editor)
    listing = client.get(CHANGELIST_URL)
    action_form = listing.context["action_form"]
    assert action_form is None or "publish_selected" not in dict(action_form.fields["action"].choices)
    assert b"Publish all out-of-sync" not in listing.content
    with django_capture_on_commit_callbacks() as callbacks:
        assert client.get(PUBLISH_URL, {"ids": integration.pk}).status_code == 403
        forged = client.post(PUBLISH_URL, {"post": "yes", "ids": str(integration.pk)})
        action = client.post(CHANGELIST_URL, {"action": "publish_selected", "_selected_action": [integration.pk]})
    assert forged.status_code == 403
    # Editors have an action of their own now (pausing), so Django answers "No action selected".
    assert action.status_code == 302 and [str(m) for m in client.get(action.url).context["messages"]] == [
        "No action selected."]
    assert not Publication.objects.exists() and callbacks == []


def test_anonymous_is_sent_to_login(client, make_integration):
    integration = make_integration()
    response = client.get(PUBLISH_URL, {"ids": integration.pk})
    assert response.status_code == 302 and "/login/" in response.url


def test_confirm_is_refused_when_the_catalogue_changed_after_the_preview(client, publisher, make_package,
                                                                        make_integration, no_broker):
    package = make_package("1001")
    integration = make_integration([package])
    client.force_login(publisher)
    data = confirm_data(client, [integration.pk])
    package.name = "Changed meanwhile"
    package.save()
    response = client.post(PUBLISH_URL, data)
    assert response.status_code == 200
    assert "changed since the preview" in " ".join(response.context["errors"])
    assert b"Changed meanwhile" in response.content  # the fresh diff is shown
    assert not Publication.objects.exists() and no_broker == []
    assert client.post(PUBLISH_URL, confirm_data(client, [integration.pk])).status_code == 302
    assert Publication.objects.count() == 1


def _succeed(integration):
    (pub,) = publishing.publications_create(integrations=[integration])
    Publication.objects.filter(pk=pub.pk).update(status="succeeded")


def test_removing_half_the_packages_needs_the_named_checkbox(client, publisher, make_package, make_integration, no_broker):
    packages = [make_package(f"p{i}") for i in range(4)]
    integration = make_integration(packages)
    _succeed(integration)
    integration.packages.set(packages[:2])
    client.force_login(publisher)
    page = client.get(PUBLISH_URL, {"ids": integration.pk}).content.decode()
    assert "2 packages will be removed." in page and "mark them deleted" in page
    assert 'name="confirm_removals" value="2"' in page
    refused = client.post(PUBLISH_URL, confirm_data(client, [integration.pk]))
    assert refused.status_code == 200 and "mark 2 packages deleted" in refused.context["removal_error"]
    assert 'id="removal-error"' in refused.content.decode()  # beside its checkbox
    assert Publication.objects.count() == 1
    ok = client.post(PUBLISH_URL, confirm_data(client, [integration.pk], confirm_removals="2"))
    assert ok.status_code == 302 and Publication.objects.count() == 2


def test_an_empty_list_needs_the_checkbox(client, publisher, make_integration, no_broker):
    integration = make_integration([])
    client.force_login(publisher)
    assert b"This sends an empty list." in client.get(PUBLISH_URL, {"ids": integration.pk}).content
    assert client.post(PUBLISH_URL, confirm_data(client, [integration.pk])).status_code == 200
    assert client.post(PUBLISH_URL, confirm_data(client, [integration.pk], confirm_removals="0")).status_code == 302
    assert Publication.objects.get().body == '{"packages":[]}'


def test_in_sync_integrations_are_skipped_unless_publish_anyway(client, publisher, make_package, make_integration, no_broker):
    package = make_package()
    synced, changed = make_integration([package], name="A synced"), make_integration([package], name="B changed")
    _succeed(synced)
    client.force_login(publisher)
    page = client.get(PUBLISH_URL, {"ids": f"{synced.pk},{changed.pk}"}).content
    assert b"No changes, will be skipped" in page
    client.post(PUBLISH_URL, confirm_data(client, [synced.pk, changed.pk]))
    assert list(Publication.objects.filter(status="queued").values_list("integration__name", flat=True)) == ["B changed"]
    client.post(PUBLISH_URL, confirm_data(client, [synced.pk], publish_anyway="on"))
    assert Publication.objects.filter(integration=synced, status="queued").count() == 1


def test_paused_integrations_are_not_published(client, publisher, make_package, make_integration, no_broker):
    paused = make_integration([make_package()], is_active=False)
    client.force_login(publisher)
    assert b"Paused: will not be published." in client.get(PUBLISH_URL, {"ids": paused.pk}).content
    client.post(PUBLISH_URL, confirm_data(client, [paused.pk]))
    assert not Publication.objects.exists()


def test_publish_all_out_of_sync(client, publisher, make_package, make_integration, no_broker):
    package = make_package()
    synced = make_integration([package], name="Synced")
    make_integration([package], name="Changed")
    _succeed(synced)
    client.force_login(publisher)
    page = client.get(PUBLISH_URL, {"out_of_sync": "1"})
    assert b"Changed" in page.content and b"Synced" not in page.content
    # The set is the one previewed: an integration out of sync since then is not added to it.
    make_integration([package], name="Later")
    client.post(PUBLISH_URL, form_data(page))
    assert list(Publication.objects.filter(status="queued").values_list("integration__name", flat=True)) == ["Changed"]


def test_publications_are_read_only_in_the_admin(client, superuser, make_integration):
    (pub,) = publishing.publications_create(integrations=[make_integration()])
    client.force_login(superuser)
    url = reverse("admin:packages_app_publication_change", args=[pub.pk])
    page = client.get(url)
    assert page.status_code == 200 and b"Queued" in page.content
    client.post(url, {"status": "succeeded"})
    pub.refresh_from_db()
    assert pub.status == "queued"
    assert client.get(reverse("admin:packages_app_publication_add")).status_code == 403
    assert client.post(reverse("admin:packages_app_publication_delete", args=[pub.pk]), {"post": "yes"}).status_code == 403
    listing = client.get(reverse("admin:packages_app_integration_change", args=[pub.integration_id]))
    assert f'data-publication="{pub.pk}"'.encode() in listing.content


def test_enqueue_happens_only_if_the_transaction_commits(make_integration, django_capture_on_commit_callbacks):
    from django.db import transaction

    integration = make_integration()
    with django_capture_on_commit_callbacks() as callbacks:
        with pytest.raises(RuntimeError):
            with transaction.atomic():
                publishing.publications_create(integrations=[integration])
                raise RuntimeError("rolled back")
    assert callbacks == [] and not Publication.objects.exists()


def test_history_page_says_who_changed_what_with_old_and_new_values(client, superuser, make_package, make_integration):
    keep, drop, add = make_package("keep"), make_package("drop"), make_package("add")
    integration = make_integration([keep, drop], name="Acme")
    client.force_login(superuser)
    url = reverse("admin:packages_app_integration_change", args=[integration.pk])
    response = client.post(url, {"name": "Acme GmbH", "kombo_integration_id": integration.kombo_integration_id,
                                 "region": "US", "is_active": "on", "packages": [keep.pk, add.pk]})
    assert response.status_code == 302
    history = client.get(reverse("admin:packages_app_integration_history", args=[integration.pk])).content.decode()
    assert "root" in history
    assert 'Changed in the admin: name: &quot;Acme&quot; → &quot;Acme GmbH&quot;' in history
    assert 'region: &quot;EU&quot; → &quot;US&quot;' in history
    # A set reads as what came in and what went out, not `packages: "" → "added add"`.
    assert 'packages: added add, removed drop' in history


def test_deleting_an_integration_keeps_its_publications(client, superuser, make_integration):
    integration = make_integration()
    publishing.publications_create(integrations=[integration])
    client.force_login(superuser)
    change_page = client.get(reverse("admin:packages_app_integration_change", args=[integration.pk])).content
    assert b"deletelink" not in change_page and b"pause it instead" in change_page
    page = client.post(reverse("admin:packages_app_integration_delete", args=[integration.pk]), {"post": "yes"})
    assert page.status_code == 403
    assert Integration.objects.filter(pk=integration.pk).exists() and Publication.objects.count() == 1


def test_deleting_a_package_keeps_publications_that_sent_it(client, superuser, make_package, make_integration):
    package = make_package("gone")
    (pub,) = publishing.publications_create(integrations=[make_integration([package])])
    client.force_login(superuser)
    client.post(reverse("admin:packages_app_assessmentpackage_delete", args=[package.pk]), {"post": "yes"})
    assert not AssessmentPackage.objects.exists()
    pub.refresh_from_db()
    assert '"id":"gone"' in pub.body


def test_a_first_publish_of_a_large_catalogue_lists_200_additions_and_counts_the_rest(client, publisher):
    AssessmentPackage.objects.bulk_create(
        AssessmentPackage(package_id=f"p{i:04d}", type="SKILLS_TEST", name=f"P{i}", description="d")
        for i in range(250))
    integration = Integration.objects.create(kombo_integration_id="recruitee:Big1", name="Big")
    integration.packages.set(AssessmentPackage.objects.all())
    client.force_login(publisher)
    page = client.get(PUBLISH_URL, {"ids": integration.pk}).content.decode()
    assert "250 to add" in page and "p0199" in page and "p0200" not in page
    assert "… and 50 more to add" in page
