"""Publishing thousands of integrations at once: from the action over "select all" across pages,
from "Publish all out-of-sync" and from publish_packages. The confirmation page posts a form of
constant size (Django refuses more than DATA_UPLOAD_MAX_NUMBER_FIELDS fields) and no URL carries
the ids (gunicorn refuses a request line over 4,094 bytes). Timings are printed, not asserted."""
import html
import re
import time
from io import StringIO

import pytest
from django.contrib.sessions.models import Session
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from packages_app import payloads
from packages_app.admin import publish_previews
from packages_app.models import AssessmentPackage, Integration, Publication

PUBLISH_URL = reverse("admin:packages_app_integration_publish")
CHANGELIST_URL = reverse("admin:packages_app_integration_changelist")
GUNICORN_REQUEST_LINE = 4094


def build(count, *, packages=5, emptied=0, prefix="Scale"):
    """`count` integrations offering `packages` packages each, made with a few bulk INSERTs. The
    first `emptied` of them offer nothing now although Kombo holds two packages of theirs (a
    succeeded publication): publishing them sends an empty list, which needs the tick."""
    catalogue = AssessmentPackage.objects.bulk_create(
        AssessmentPackage(package_id=f"{prefix.lower()}-{i:03d}", type="SKILLS_TEST",
                          name=f"{prefix} package {i}", description=f"What {prefix} package {i} measures.")
        for i in range(packages))
    integrations = Integration.objects.bulk_create(
        Integration(kombo_integration_id=f"recruitee:{prefix}{i:05d}", name=f"{prefix} customer {i:05d}")
        for i in range(count))
    Integration.packages.through.objects.bulk_create(
        Integration.packages.through(integration_id=integration.pk, assessmentpackage_id=package.pk)
        for integration in integrations[emptied:] for package in catalogue)
    if emptied:
        body = payloads.canonical_bytes(payloads.build_body(catalogue[:2]))
        Publication.objects.bulk_create(
            Publication(integration=integration, status="succeeded", body=body.decode(),
                        body_sha256=payloads.body_sha256(body), package_count=2)
            for integration in integrations[:emptied])
    return integrations


def form_fields(page_html):
    """What a browser posts from the confirmation form: its hidden fields, and the removal tick
    ticked as staff would (never "publish anyway")."""
    (form,) = [f for f in re.findall(r"<form[^>]*method=\"post\"[^>]*>(.*?)</form>", page_html, re.DOTALL)
               if 'name="post"' in f]
    data = []
    for tag in re.findall(r"<input\b[^>]*>", form):
        attrs = {k: html.unescape(v) for k, v in re.findall(r'(\w+)="([^"]*)"', tag)}
        if attrs.get("type") == "hidden" or attrs.get("name") == "confirm_removals":
            data.append((attrs["name"], attrs.get("value", "on")))
    return data


def encode(fields):
    from urllib.parse import urlencode

    return urlencode(fields)


def report(capsys, text):
    with capsys.disabled():
        print(f"\n[scale] {text}")


@pytest.mark.postgresql
def test_5000_integrations_from_the_action_over_select_all(publisher, no_broker, django_capture_on_commit_callbacks,
                                                          capsys):
    build(5000, emptied=10)
    client = Client(enforce_csrf_checks=True)
    client.force_login(publisher)
    listing = client.get(CHANGELIST_URL)
    assert listing.status_code == 200
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', listing.content.decode()).group(1)
    on_first_page = [str(i.pk) for i in listing.context["cl"].result_list]
    assert len(on_first_page) < 5000  # the list is paginated: "select all" means select_across

    action = client.post(CHANGELIST_URL, {
        "csrfmiddlewaretoken": csrf, "action": "publish_selected", "index": "0",
        "select_across": "1", "_selected_action": on_first_page,
    })
    assert action.status_code in (200, 302)
    if action.status_code == 302:
        assert len(f"GET {action.url} HTTP/1.1") < GUNICORN_REQUEST_LINE, "the ids travel in the URL"
        started = time.monotonic()
        page = client.get(action.url)
        get_seconds = time.monotonic() - started
    else:  # the action rendered the confirmation page itself
        page, get_seconds = action, None
    assert page.status_code == 200
    text = page.content.decode()
    fields = form_fields(text)
    report(capsys, f"confirmation page for 5,000 integrations: GET {get_seconds and f'{get_seconds:.2f} s'}, "
                   f"{len(text) / 1e6:.2f} MB of HTML, a form of {len(fields)} fields "
                   f"({len(encode(fields)) / 1e3:.1f} kB)")
    # Every integration that needs the removal tick is named on the page.
    for i in range(10):
        assert f"Scale customer {i:05d}" in text

    session_bytes = len(Session.objects.get(session_key=client.session.session_key).session_data)
    started = time.monotonic()
    with django_capture_on_commit_callbacks(execute=True):
        done = client.post(PUBLISH_URL, encode(fields), content_type="application/x-www-form-urlencoded")
    post_seconds = time.monotonic() - started
    report(capsys, f"confirm for 5,000 integrations: POST {post_seconds:.2f} s, answered {done.status_code}; "
                   f"the session held {session_bytes / 1e3:.0f} kB before the confirm")
    assert done.status_code == 302, done.content[:2000]
    assert Publication.objects.filter(status="queued").count() == 5000
    assert len(no_broker) == 5000
    assert Publication.objects.filter(status="queued", package_count=0).count() == 10
    assert len(fields) < 20  # constant: whatever the number of integrations


@pytest.mark.postgresql
def test_5000_integrations_from_publish_all_out_of_sync(client, publisher, no_broker,
                                                       django_capture_on_commit_callbacks, capsys):
    build(5000)
    client.force_login(publisher)
    started = time.monotonic()
    page = client.get(PUBLISH_URL, {"out_of_sync": "1"})
    get_seconds = time.monotonic() - started
    assert page.status_code == 200 and page.context["summary"].count == 5000
    started = time.monotonic()
    with django_capture_on_commit_callbacks(execute=True):
        done = client.post(PUBLISH_URL, encode(form_fields(page.content.decode())),
                           content_type="application/x-www-form-urlencoded")
    post_seconds = time.monotonic() - started
    report(capsys, f"publish all out-of-sync, 5,000 integrations: GET {get_seconds:.2f} s, POST {post_seconds:.2f} s")
    assert done.status_code == 302
    assert Publication.objects.filter(status="queued").count() == 5000 and len(no_broker) == 5000


@pytest.mark.postgresql
def test_publish_packages_all_out_of_sync_with_5000(db, no_broker, capsys):
    build(5000, emptied=10)
    out, err = StringIO(), StringIO()
    started = time.monotonic()
    call_command("publish_packages", "--all-out-of-sync", "--allow-removals", stdout=out, stderr=err)
    seconds = time.monotonic() - started
    report(capsys, f"publish_packages --all-out-of-sync --allow-removals, 5,000 integrations: {seconds:.2f} s")
    assert "In all: 5,000 integrations, 5,000 to publish (24,950 packages to add, 0 to change, " \
           "20 to remove); skipped 0 in sync, 0 paused." in out.getvalue()
    assert Publication.objects.filter(status="queued").count() == 5000
    assert out.getvalue().count("Queued publication #") == 5000 and err.getvalue() == ""


# --- the page at size: totals, removals named, details paginated --------------------------------

def action(client, **extra):
    """The publish action over every integration the list shows ("select all" across pages)."""
    response = client.post(CHANGELIST_URL, {"action": "publish_selected", "index": "0", "select_across": "1",
                                            "_selected_action": [Integration.objects.first().pk], **extra})
    assert response.status_code == 302 and response.url.startswith(f"{PUBLISH_URL}?preview=")
    return response.url


def hidden(page):
    return dict(re.findall(r'<input type="hidden" name="(post|preview|digest)" value="([^"]*)"',
                           page.content.decode()))


def test_totals_first_every_removal_named_details_paginated(client, publisher, no_broker):
    build(117, emptied=3, prefix="Many")
    synced, paused = Integration.objects.order_by("-pk")[:2]
    body = payloads.canonical_bytes(synced.current_body())
    Publication.objects.create(integration=synced, status="succeeded", body=body.decode(),
                               body_sha256=payloads.body_sha256(body), package_count=5)
    Integration.objects.filter(pk=paused.pk).update(is_active=False)
    client.force_login(publisher)
    page = client.get(action(client))
    text = page.content.decode()
    assert [(figure, label) for figure, label, _ in page.context["totals"]] == [
        ("117", "integrations"), ("115", "to publish"), ("560", "package additions"),
        ("0", "package changes"), ("6", "package removals"), ("1", "skipped: in sync"), ("1", "skipped: paused")]
    # The three that need the tick are named, with what they lose, on every page.
    (group,) = page.context["summary"].tick_groups
    assert group.empty_list and len(group.previews) == 3
    assert "Need your tick: 3 integrations lose half or more of their list, or get an empty list" in text
    assert 'name="confirm_removals" value="6"' in text and "these 3 customers" in text
    # 50 integrations a page, folded, those with changes first; the links carry the preview, never
    # the ids.
    assert [p.integration.name for p in page.context["previews"]][:2] == ["Many customer 00000", "Many customer 00001"]
    assert len(page.context["previews"]) == 50 and "<details class=\"kombo-preview\"" in text and " open>" not in text
    assert page.context["show"] == "changes"
    links = re.findall(r'href="([^"]*page=3[^"]*)"', text)
    assert links and all("preview=" in u and "ids" not in u for u in links)
    third = client.get(html.unescape(links[0]))
    assert third.context["previews"][0].integration.name == "Many customer 00100"
    assert len(third.context["previews"]) == 15 and hidden(third) == hidden(page)
    everything = client.get(PUBLISH_URL, {"preview": hidden(page)["preview"], "show": "all", "page": 3})
    assert len(everything.context["previews"]) == 17
    for i in range(3):
        assert f"Many customer {i:05d}" in third.content.decode()  # named although on page 1
    only = client.get(PUBLISH_URL, {"preview": hidden(page)["preview"], "show": "removals"})
    assert [p.integration.name for p in only.context["previews"]] == [f"Many customer {i:05d}" for i in range(3)]

    refused = client.post(PUBLISH_URL, hidden(third))
    assert refused.status_code == 200 and refused.context["removal_error"] == (
        "Tick the box to confirm that Kombo will mark 6 packages deleted (or send an empty list) "
        "for 3 integrations.")
    assert not Publication.objects.filter(status="queued").exists()
    done = client.post(PUBLISH_URL, {**hidden(refused), "confirm_removals": "6"})
    assert done.status_code == 302
    assert Publication.objects.filter(status="queued").count() == 115


def test_the_form_is_the_same_size_for_one_integration_or_two_hundred(client, publisher):
    (one,) = build(1, prefix="One")
    client.force_login(publisher)
    small = form_fields(client.get(PUBLISH_URL, {"ids": one.pk}).content.decode())
    build(200, prefix="Two")
    large = form_fields(client.get(action(client)).content.decode())
    assert [name for name, _ in small] == [name for name, _ in large] == [
        "csrfmiddlewaretoken", "post", "preview", "digest"]


def test_a_preview_the_catalogue_no_longer_matches_is_refused_naming_what_changed(client, publisher, no_broker):
    build(30)
    client.force_login(publisher)
    page = client.get(action(client))
    AssessmentPackage.objects.filter(package_id="scale-001").update(name="Renamed meanwhile")
    refused = client.post(PUBLISH_URL, hidden(page))
    assert refused.status_code == 200
    (error,) = refused.context["errors"]
    assert error.startswith("The packages of Scale customer 00000 (recruitee:Scale00000), Scale customer 00001 ")
    assert error.endswith(" and 20 other integrations changed since the preview. Nothing was published. "
                          "Read the new changes below and confirm again.")
    assert not Publication.objects.exists() and b"Renamed meanwhile" in refused.content
    # The page shows the new changes under a new preview: that one can be confirmed.
    assert hidden(refused)["preview"] != hidden(page)["preview"]
    assert client.post(PUBLISH_URL, hidden(page)).status_code == 200  # the old one still cannot
    assert client.post(PUBLISH_URL, hidden(refused)).status_code == 302
    assert Publication.objects.filter(status="queued").count() == 30
    assert {p.body_sha256 for p in Publication.objects.all()} == {
        payloads.body_sha256(payloads.canonical_bytes(Integration.objects.first().current_body()))}


def test_a_change_while_paging_shows_the_new_changes_under_a_new_preview(client, publisher, no_broker):
    build(60)
    client.force_login(publisher)
    first = client.get(action(client))
    AssessmentPackage.objects.filter(package_id="scale-002").update(description="Longer now")
    second = client.get(PUBLISH_URL, {"preview": hidden(first)["preview"], "page": 2})
    (notice,) = second.context["notices"]
    assert "changed since the preview" in notice and "as they are now" in notice
    assert hidden(second)["preview"] != hidden(first)["preview"]
    assert client.post(PUBLISH_URL, hidden(first)).context["errors"]  # what page 1 showed is gone
    assert client.post(PUBLISH_URL, hidden(second)).status_code == 302
    assert Publication.objects.filter(status="queued").count() == 60


def test_a_form_that_is_not_the_stored_preview_publishes_nothing(client, publisher, no_broker):
    build(3)
    client.force_login(publisher)
    data = hidden(client.get(action(client)))
    stale = client.post(PUBLISH_URL, {**data, "digest": "0" * 64})
    assert stale.status_code == 200 and "out of date" in stale.context["errors"][0]
    for response in (client.get(PUBLISH_URL, {"preview": "no-such-preview"}),
                     client.post(PUBLISH_URL, {**data, "preview": "no-such-preview"})):
        assert response.status_code == 302 and response.url == CHANGELIST_URL
    assert "no longer available" in str(list(client.get(CHANGELIST_URL).context["messages"])[-1])
    assert not Publication.objects.exists() and no_broker == []


def test_previews_expire_and_only_the_newest_are_kept(client, publisher, no_broker):
    (integration,) = build(1)
    client.force_login(publisher)
    tokens = [hidden(client.get(PUBLISH_URL, {"ids": integration.pk}))["preview"]
              for _ in range(publish_previews.PREVIEWS_KEPT + 2)]
    kept = client.session[publish_previews.SESSION_KEY]
    assert sorted(kept) == sorted(tokens[2:])
    session = client.session
    session[publish_previews.SESSION_KEY][tokens[-1]]["at"] -= publish_previews.PREVIEW_MAX_AGE_SECONDS + 1
    session.save()
    expired = client.post(PUBLISH_URL, {"post": "yes", "preview": tokens[-1]})
    assert expired.status_code == 302 and not Publication.objects.exists()
    done = client.post(PUBLISH_URL, hidden(client.get(PUBLISH_URL, {"preview": tokens[-2]})))
    assert done.status_code == 302 and Publication.objects.count() == 1
    assert tokens[-2] not in client.session[publish_previews.SESSION_KEY]  # used: dropped


def test_large_previews_leave_the_session_first(client, publisher, monkeypatch):
    monkeypatch.setattr(publish_previews, "PREVIEW_IDS_KEPT", 5)
    build(4)
    client.force_login(publisher)
    _first, second = (hidden(client.get(action(client)))["preview"] for _ in range(2))
    assert list(client.session[publish_previews.SESSION_KEY]) == [second]  # 4 + 4 > 5: the newest stays
