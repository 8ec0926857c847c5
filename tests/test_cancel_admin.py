"""Pause and cancel in the admin, through Django's test client: the "Cancel publishing" action and
its confirmation page, the button on a publication's page, pausing an integration from its form
and from the list, what staff read afterwards, and who may do it."""
import pytest
from django.contrib import messages
from django.contrib.admin.models import LogEntry
from django.urls import reverse

from packages_app import publishing
from packages_app.admin import cancel_summary
from packages_app.models import Integration, Publication, SyncStatus

pytestmark = pytest.mark.django_db

Status = Publication.Status
PUBLICATIONS_URL = reverse("admin:packages_app_publication_changelist")
INTEGRATIONS_URL = reverse("admin:packages_app_integration_changelist")


def change_url(publication):
    return reverse("admin:packages_app_publication_change", args=[publication.pk])


def cancel_url(publication):
    return reverse("admin:packages_app_publication_cancel", args=[publication.pk])


def shown(client, response):
    """The messages the page after a redirect shows, as (level, text)."""
    assert response.status_code == 302, response
    return [(m.level, str(m)) for m in client.get(response.url).context["messages"]]


@pytest.fixture
def publication_in(make_package, make_integration, no_broker):
    """A publication of a new integration, put in the given status (as the engine would leave it)."""
    def make(status, *, name=None, integration=None, **fields):
        integration = integration or make_integration([make_package()], **({"name": name} if name else {}))
        (publication,) = publishing.publications_create(integrations=[integration])
        if status != Status.QUEUED or fields:
            Publication.objects.filter(pk=publication.pk).update(status=status, **fields)
        publication.refresh_from_db()
        return publication
    return make


def action(client, publications, **extra):
    return client.post(PUBLICATIONS_URL, {"action": "cancel_selected",
                                          "_selected_action": [p.pk for p in publications], **extra})


# --- the "Cancel publishing" action ------------------------------------------------------------

def test_action_confirms_then_cancels_resting_publications_and_marks_one_in_flight(client, publisher, publication_in):
    queued = publication_in(Status.QUEUED, name="Queued Co")
    retrying = publication_in(Status.RETRYING, name="Retrying Co", attempts=2)
    waiting = publication_in(Status.WAITING, name="Waiting Co")
    sending = publication_in(Status.SENDING, name="Sending Co", attempts=1)
    succeeded = publication_in(Status.SUCCEEDED, name="Done Co")
    chosen = [queued, retrying, waiting, sending, succeeded]
    client.force_login(publisher)

    page = action(client, chosen)
    assert page.status_code == 200
    assert page.templates[0].name == "admin/packages_app/publication/cancel_confirmation.html"
    text = page.content.decode()
    assert "3 publications will end now as cancelled" in text
    assert "1 publication is in flight" in text and "cannot be called back" in text
    assert "1 selected publication will be left as it is" in text
    # Only what can be cancelled is posted back.
    for p in (queued, retrying, waiting, sending):
        assert f'name="_selected_action" value="{p.pk}"' in text
    assert f'name="_selected_action" value="{succeeded.pk}"' not in text
    assert set(Publication.objects.values_list("status", flat=True)) == {
        Status.QUEUED, Status.RETRYING, Status.WAITING, Status.SENDING, Status.SUCCEEDED}  # nothing yet

    done = action(client, [queued, retrying, waiting, sending], post="yes", reason="  Wrong   packages ")
    assert done.status_code == 302 and done.url == PUBLICATIONS_URL
    assert shown(client, done) == [(messages.SUCCESS, "3 publications cancelled. 1 publication is in flight: "
                                                      "it ends as cancelled when its request returns.")]
    for p in (queued, retrying, waiting):
        p.refresh_from_db()
        assert p.status == Status.CANCELLED and p.cancelled_by == publisher and p.finished_at is not None
        assert p.cancel_reason == "Wrong packages" and p.next_attempt_at is None
    sending.refresh_from_db()
    assert sending.status == Status.SENDING and sending.cancel_requested_at is not None
    assert sending.cancelled_by == publisher and sending.finished_at is None
    succeeded.refresh_from_db()
    assert succeeded.status == Status.SUCCEEDED and succeeded.cancelled_by is None


def test_message_counts_what_had_already_ended(client, publisher, publication_in):
    queued = publication_in(Status.QUEUED)
    failed = publication_in(Status.FAILED)
    client.force_login(publisher)
    done = action(client, [queued, failed], post="yes")
    assert shown(client, done) == [(messages.SUCCESS, "1 publication cancelled. "
                                                      "1 other selected publication had already ended.")]
    queued.refresh_from_db()
    assert queued.cancel_reason == "No reason given."  # what the form sends when left empty


def test_nothing_to_cancel_is_a_warning_and_no_confirmation_page(client, publisher, publication_in):
    ended = [publication_in(Status.SUCCEEDED), publication_in(Status.SUPERSEDED), publication_in(Status.CANCELLED)]
    client.force_login(publisher)
    response = action(client, ended)
    assert shown(client, response) == [
        (messages.WARNING, "Nothing to cancel: the selected publications had already ended.")]
    # Ended between the confirmation page and the confirm: the same warning, nothing written.
    response = action(client, ended[:1], post="yes")
    assert shown(client, response) == [
        (messages.WARNING, "Nothing to cancel: the selected publication had already ended.")]
    assert list(Publication.objects.order_by("pk").values_list("status", flat=True)) == [
        Status.SUCCEEDED, Status.SUPERSEDED, Status.CANCELLED]


def test_a_second_cancel_of_one_in_flight_says_it_was_already_asked(client, publisher, publication_in):
    sending = publication_in(Status.SENDING, attempts=1)
    client.force_login(publisher)
    first = action(client, [sending], post="yes")
    asked_at = Publication.objects.get().cancel_requested_at
    assert shown(client, first) == [(messages.SUCCESS, "1 publication is in flight: it ends as cancelled when "
                                                       "its request returns.")]
    again = action(client, [sending])
    assert shown(client, again) == [(messages.WARNING, "Nothing more to cancel: cancelling was already requested "
                                                       "for 1 publication in flight; it ends when its request "
                                                       "returns.")]
    assert Publication.objects.get().cancel_requested_at == asked_at


def test_cancel_summary_says_it_with_plurals():
    assert cancel_summary(2, 1) == ("2 publications cancelled. 1 publication is in flight: "
                                    "it ends as cancelled when its request returns.")
    assert cancel_summary(1, 0) == "1 publication cancelled."
    assert cancel_summary(0, 2) == ("2 publications are in flight: they end as cancelled when "
                                    "their requests return.")
    assert cancel_summary(0, 0) == ""


@pytest.mark.parametrize("role", ["editor", "viewer"])
def test_staff_who_cannot_publish_cannot_cancel(role, client, editor, publication_in, django_user_model):
    from django.contrib.auth.models import Group

    user = editor
    if role == "viewer":
        user = django_user_model.objects.create_user("viewer", password="pw-for-tests-123", is_staff=True)
        user.groups.add(Group.objects.get(name="Viewer"))
    queued = publication_in(Status.QUEUED)
    client.force_login(user)
    listing = client.get(PUBLICATIONS_URL)
    assert listing.status_code == 200
    action_form = listing.context["action_form"]
    assert action_form is None or "cancel_selected" not in dict(action_form.fields["action"].choices)
    assert b"Cancel publishing" not in listing.content
    page = client.get(change_url(queued))
    assert page.status_code == 200 and cancel_url(queued).encode() not in page.content

    forged = action(client, [queued], post="yes")
    assert forged.status_code == 200  # the list again: no action to run
    assert client.get(cancel_url(queued)).status_code == 403
    assert client.post(cancel_url(queued), {"post": "yes"}).status_code == 403
    queued.refresh_from_db()
    assert queued.status == Status.QUEUED and queued.cancel_requested_at is None


def test_anonymous_is_sent_to_login(client, publication_in):
    queued = publication_in(Status.QUEUED)
    response = client.post(cancel_url(queued), {"post": "yes"})
    assert response.status_code == 302 and response.url.startswith(reverse("admin:login"))
    assert Publication.objects.get().status == Status.QUEUED


def test_the_cancel_button_on_a_publication_page(client, publisher, publication_in):
    queued = publication_in(Status.RETRYING, name="Acme", attempts=1)
    client.force_login(publisher)
    page = client.get(change_url(queued)).content.decode()
    assert f'href="{cancel_url(queued)}"' in page and "Cancel publishing…" in page

    confirmation = client.get(cancel_url(queued))
    assert confirmation.status_code == 200
    assert "1 publication will end now as cancelled" in confirmation.content.decode()
    assert Publication.objects.get().status == Status.RETRYING
    # Without the CSRF token the POST is refused (the form carries it).
    from django.test import Client
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(publisher)
    assert strict.post(cancel_url(queued), {"post": "yes"}).status_code == 403
    assert Publication.objects.get().status == Status.RETRYING

    done = client.post(cancel_url(queued), {"post": "yes", "reason": "Customer asked to wait"})
    assert done.status_code == 302 and done.url == change_url(queued)
    assert shown(client, done) == [(messages.SUCCESS, "1 publication cancelled.")]
    page = client.get(change_url(queued)).content.decode()
    assert "status-cancelled" in page and "background:#666" in page
    assert "Cancelled by <strong>publisher</strong> on" in page and "Reason: Customer asked to wait" in page
    assert f'href="{cancel_url(queued)}"' not in page  # ended: no button any more
    assert f"<h2>Publication #{queued.pk} of Acme</h2>" in page  # the customer, not a database id
    assert "Publish this integration again…" in page


def test_the_button_is_not_on_an_ended_publication(client, publisher, publication_in):
    succeeded = publication_in(Status.SUCCEEDED)
    client.force_login(publisher)
    assert cancel_url(succeeded).encode() not in client.get(change_url(succeeded)).content
    response = client.get(cancel_url(succeeded))
    assert response.status_code == 302 and response.url == change_url(succeeded)


def test_a_publication_in_flight_says_cancel_requested(client, publisher, publication_in):
    sending = publication_in(Status.SENDING, attempts=1)
    client.force_login(publisher)
    client.post(cancel_url(sending), {"post": "yes", "reason": "Wrong list"})
    page = client.get(change_url(sending)).content.decode()
    assert "Sending (attempt 1), cancel requested" in page
    assert "Cancel requested at" in page and "by <strong>publisher</strong>; it ends when its request returns." in page
    assert "Reason: Wrong list" in page
    assert f'href="{cancel_url(sending)}"' not in page  # asked once is enough
    live = client.get(reverse("admin:packages_app_publication_live", args=[sending.pk])).json()
    assert live["final"] is False and "cancel requested" in live["html"]


def test_one_cancelled_in_flight_shows_kombos_answer_was_kept(client, publisher, publication_in):
    from django.utils import timezone

    now = timezone.now()
    publication = publication_in(Status.CANCELLED, cancel_requested_at=now, finished_at=now, http_status=200,
                                 cancelled_by=publisher, cancel_reason="Too late")
    client.force_login(publisher)
    page = client.get(change_url(publication)).content.decode()
    assert "Cancelled by <strong>publisher</strong>" in page and "Reason: Too late" in page
    assert "Kombo's answer (HTTP 200) is kept below" in page and "Kombo accepted this list" in page


def test_the_status_filter_and_badge_know_cancelled(client, superuser, publication_in):
    cancelled = publication_in(Status.CANCELLED, name="Stopped")
    publication_in(Status.QUEUED, name="Waiting")
    client.force_login(superuser)
    listing = client.get(PUBLICATIONS_URL)
    cl = listing.context["cl"]
    status_filter = next(f for f in cl.filter_specs if f.field_path == "status")
    assert "Cancelled" in [choice["display"] for choice in status_filter.choices(cl)]
    assert b'href="?status__exact=cancelled"' in listing.content
    filtered = client.get(PUBLICATIONS_URL, {"status__exact": "cancelled"})
    assert [p.pk for p in filtered.context["cl"].result_list] == [cancelled.pk]
    assert b'class="kombo-badge status-cancelled"' in filtered.content
    assert "cancel_selected" in dict(listing.context["action_form"].fields["action"].choices)


# --- pausing -----------------------------------------------------------------------------------

def integration_form(integration, **overrides):
    return {"name": integration.name, "kombo_integration_id": integration.kombo_integration_id,
            "region": integration.region, "packages": [p.pk for p in integration.packages.all()],
            **({"is_active": "on"} if integration.is_active else {}), **overrides}


def sync_badges(client):
    listing = client.get(INTEGRATIONS_URL)
    return {i.name: SyncStatus(i.sync_status).label for i in listing.context["cl"].result_list}


def test_pausing_on_the_form_cancels_what_the_integration_has_on_its_way(client, editor, publication_in,
                                                                        make_package, make_integration):
    integration = make_integration([make_package()], name="Acme")
    succeeded = publication_in(Status.SUCCEEDED, integration=integration)
    queued = publication_in(Status.QUEUED, integration=integration)
    other = publication_in(Status.QUEUED, name="Other")
    client.force_login(editor)
    url = reverse("admin:packages_app_integration_change", args=[integration.pk])
    assert "Pausing also cancels" in client.get(url).content.decode()

    data = integration_form(integration)
    del data["is_active"]
    response = client.post(url, data)
    assert shown(client, response) == [
        (messages.SUCCESS, f'The integration “<a href="{url}">{integration}</a>” was changed successfully.'),
        (messages.SUCCESS, "Publishing to Kombo is paused for Acme: 1 publication cancelled."),
    ]
    integration.refresh_from_db()
    assert integration.is_active is False
    queued.refresh_from_db()
    assert queued.status == Status.CANCELLED and queued.cancelled_by == editor and queued.finished_at
    assert queued.cancel_reason == "The integration was paused."
    succeeded.refresh_from_db()
    other.refresh_from_db()
    assert succeeded.status == Status.SUCCEEDED and other.status == Status.QUEUED
    assert sync_badges(client)["Acme"] == "Last publish did not complete"
    page = client.get(url).content.decode()
    assert "Sync status: <strong>Last publish did not complete</strong>" in page

    # Saving it again (still paused) cancels nothing more and says nothing about pausing.
    again = client.post(url, integration_form(integration, name="Acme GmbH"))
    assert [text for _, text in shown(client, again)] == [
        f'The integration “<a href="{url}">{Integration.objects.get(pk=integration.pk)}</a>” was changed successfully.']


def test_pausing_an_integration_with_nothing_on_its_way_says_so(client, editor, make_package, make_integration):
    integration = make_integration([make_package()], name="Quiet")
    client.force_login(editor)
    data = integration_form(integration)
    del data["is_active"]
    response = client.post(reverse("admin:packages_app_integration_change", args=[integration.pk]), data)
    assert shown(client, response)[-1] == (messages.INFO,
                                           "Publishing to Kombo is paused for Quiet: nothing was on its way.")


def test_pause_action_pauses_and_cancels_leaving_ended_publications_alone(client, editor, publication_in,
                                                                         make_package, make_integration):
    acme = make_integration([make_package()], name="Acme")
    globex = make_integration([make_package()], name="Globex")
    dormant = make_integration([make_package()], name="Dormant", is_active=False)
    untouched = make_integration([make_package()], name="Untouched")
    done = publication_in(Status.SUCCEEDED, integration=acme)
    queued = publication_in(Status.QUEUED, integration=acme)
    sending = publication_in(Status.SENDING, integration=globex, attempts=1)
    elsewhere = publication_in(Status.QUEUED, integration=untouched)
    client.force_login(editor)
    assert "pause_selected" in dict(client.get(INTEGRATIONS_URL).context["action_form"].fields["action"].choices)

    response = client.post(INTEGRATIONS_URL, {"action": "pause_selected",
                                              "_selected_action": [acme.pk, globex.pk, dormant.pk]})
    assert shown(client, response) == [(messages.SUCCESS,
        "2 integrations paused. 1 publication cancelled. 1 publication is in flight: it ends as cancelled "
        "when its request returns. 1 other selected integration was already paused.")]
    assert dict(Integration.objects.values_list("name", "is_active")) == {
        "Acme": False, "Globex": False, "Dormant": False, "Untouched": True}
    for p in (done, queued, sending, elsewhere):
        p.refresh_from_db()
    assert done.status == Status.SUCCEEDED and done.cancelled_by is None
    assert queued.status == Status.CANCELLED and queued.cancelled_by == editor and queued.finished_at
    assert sending.status == Status.SENDING and sending.cancel_requested_at and sending.cancelled_by == editor
    assert elsewhere.status == Status.QUEUED
    # The History page says who paused them.
    assert LogEntry.objects.filter(object_id__in=[str(acme.pk), str(globex.pk)],
                                   change_message__contains="Pause publishing").count() == 2
    # The list: Acme's last publish did not complete; Globex is still publishing until its request returns.
    badges = sync_badges(client)
    assert badges["Acme"] == "Last publish did not complete" and badges["Globex"] == "Publishing"
    # Stopped on purpose: the same words, in grey rather than the red of a failure.
    assert client.get(INTEGRATIONS_URL).content.decode().count(
        'class="kombo-badge sync-failed sync-cancelled" style="display:inline-block;padding:1px 8px;'
        'border-radius:9px;color:#fff;background:#666;') == 1
    Publication.objects.filter(pk=sending.pk).update(status=Status.CANCELLED)  # as its request returns
    assert sync_badges(client)["Globex"] == "Last publish did not complete"

    again = client.post(INTEGRATIONS_URL, {"action": "pause_selected", "_selected_action": [acme.pk, dormant.pk]})
    assert shown(client, again) == [
        (messages.WARNING, "Nothing to pause: the selected integrations were already paused.")]


def test_pause_action_needs_change_permission(client, publication_in, django_user_model):
    from django.contrib.auth.models import Group

    viewer = django_user_model.objects.create_user("viewer", password="pw-for-tests-123", is_staff=True)
    viewer.groups.add(Group.objects.get(name="Viewer"))
    queued = publication_in(Status.QUEUED)
    client.force_login(viewer)
    listing = client.get(INTEGRATIONS_URL)
    assert listing.context["action_form"] is None or "pause_selected" not in dict(
        listing.context["action_form"].fields["action"].choices)
    response = client.post(INTEGRATIONS_URL, {"action": "pause_selected", "_selected_action": [queued.integration_id]})
    assert response.status_code == 200
    assert Integration.objects.get().is_active is True and Publication.objects.get().status == Status.QUEUED


# --- in a real browser -------------------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"
SHOTS = __import__("pathlib").Path(__file__).resolve().parent / "screenshots"


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_cancel_and_pause_in_a_browser(live_server, superuser, publication_in, make_package, make_integration,
                                       monkeypatch):
    """Staff cancel three publications from the list, read a cancelled one, and pause two
    integrations. Screenshots of each step go to tests/screenshots/cancel-*.png."""
    from pathlib import Path

    from django.db import connections
    from django.utils import timezone
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the ORM calls between browser steps
    # are plain synchronous calls.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: apt-get install chromium"
    SHOTS.mkdir(exist_ok=True)
    catalogue = [make_package(f"10{n:02d}", name=name) for n, name in enumerate(
        ["TypeScript coding test", "Video interview", "Background check", "Teamwork"], start=1)]
    acme = publication_in(Status.QUEUED, integration=make_integration(catalogue[:2], name="Acme Corp"))
    publication_in(Status.RETRYING, integration=make_integration(catalogue, name="Globex"), attempts=2,
                   next_attempt_at=timezone.now() + timezone.timedelta(minutes=3),
                   failure_reason="Kombo answered 503; trying again.", started_at=timezone.now())
    initech = publication_in(Status.SENDING, integration=make_integration(catalogue[1:], name="Initech"),
                             attempts=1, started_at=timezone.now())
    hooli = make_integration(catalogue[2:], name="Hooli")
    publication_in(Status.QUEUED, integration=hooli)
    umbrella = make_integration(catalogue[:1], name="Umbrella")
    publication_in(Status.SUCCEEDED, integration=umbrella, http_status=200, finished_at=timezone.now())

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM,
                                             args=["--no-sandbox", "--headless", "--disable-gpu"])
        context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=live_server.url)
        page = context.new_page()
        page.set_default_timeout(20000)
        page.goto("/admin/")
        page.fill("#id_username", "root")
        page.fill("#id_password", "pw-for-tests-123")
        page.click("input[type=submit]")
        page.wait_for_selector("#site-name")

        # The publications list: pick the three on their way and choose the action.
        page.goto("/admin/packages_app/publication/")
        for publication in Publication.objects.filter(integration__name__in=["Acme Corp", "Globex", "Initech"]):
            page.check(f"input.action-select[value='{publication.pk}']")
        page.select_option("select[name=action]", "cancel_selected")
        assert page.inner_text(".action-counter").startswith("3 of 5 selected")
        page.screenshot(path=str(SHOTS / "cancel-action.png"), full_page=True)

        # The confirmation page says what ends now and what ends when its request returns.
        page.click("button[name=index]")
        page.wait_for_selector("h1:has-text('Cancel publishing')")
        assert "2 publications will end now as cancelled" in page.inner_text(".kombo-resting h2")
        assert "1 publication is in flight" in page.inner_text(".kombo-in-flight h2")
        page.fill("#id_cancel_reason", "Wrong packages selected for these customers")
        page.screenshot(path=str(SHOTS / "cancel-confirm.png"), full_page=True)
        page.click("input[type=submit][value='Yes, cancel publishing']")
        page.wait_for_selector(".messagelist .success")
        assert page.inner_text(".messagelist .success") == (
            "2 publications cancelled. 1 publication is in flight: it ends as cancelled when its request returns.")
        page.screenshot(path=str(SHOTS / "cancel-list-after.png"), full_page=True)

        # A cancelled publication says who cancelled it and why.
        page.goto(f"/admin/packages_app/publication/{acme.pk}/change/")
        page.wait_for_selector("#kombo-live .status-cancelled")
        assert "Cancelled by root on" in page.inner_text(".kombo-cancelled")
        assert "Reason: Wrong packages selected for these customers" in page.inner_text(".kombo-cancelled")
        page.screenshot(path=str(SHOTS / "cancel-publication.png"), full_page=True)

        # The one in flight: cancel requested, it ends when its request returns.
        page.goto(f"/admin/packages_app/publication/{initech.pk}/change/")
        assert "it ends when its request returns" in page.inner_text(".kombo-cancel-requested")
        assert not page.is_visible("a.kombo-cancel")
        page.screenshot(path=str(SHOTS / "cancel-requested.png"), full_page=True)
        Publication.objects.filter(pk=initech.pk).update(  # its request returns (the engine's work)
            status=Status.CANCELLED, finished_at=timezone.now(), http_status=200)

        # Pausing from the integrations list cancels what Hooli had queued.
        page.goto("/admin/packages_app/integration/")
        for integration in (hooli, umbrella):
            page.check(f"input.action-select[value='{integration.pk}']")
        page.select_option("select[name=action]", "pause_selected")
        page.click("button[name=index]")
        page.wait_for_selector(".messagelist .success")
        assert page.inner_text(".messagelist .success") == "2 integrations paused. 1 publication cancelled."
        statuses = dict(zip(page.locator("th.field-name").all_inner_texts(),
                            page.locator("td.field-sync_status_badge").all_inner_texts()))
        assert statuses == {"Acme Corp": "Last publish did not complete", "Globex": "Last publish did not complete",
                            "Hooli": "Last publish did not complete", "Initech": "Last publish did not complete",
                            "Umbrella": "In sync"}
        page.screenshot(path=str(SHOTS / "cancel-integrations-paused.png"), full_page=True)
        context.close()
        browser.close()
        # The ORM calls above ran in Playwright's context, on a connection of their own: close it,
        # or the test database could not be dropped at the end of the run.
        connections.close_all()
    assert list(Integration.objects.filter(is_active=False).order_by("name").values_list("name", flat=True)) == [
        "Hooli", "Umbrella"]
