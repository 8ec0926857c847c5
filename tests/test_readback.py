"""What a publish would delete at Kombo (issue 12 items 1, 2): the confirmation page reads Kombo's
current list and open orders over real HTTP from the sandbox, compares three ways, asks for the
tick for packages only Kombo had and for packages with open orders, says plainly what it compared
with when Kombo cannot be read, and refuses a confirm after Kombo's list changed."""
import re

import pytest
from django.urls import reverse
from django.utils import formats, timezone

from packages_app import kombo_readback, pacing, publishing, selectors
from packages_app.models import Integration, Publication
from packages_app.publish_review import publish_review
from packages_app.sandbox import Fault

PUBLISH_URL = reverse("admin:packages_app_integration_publish")
IID = "recruitee:Acme1"


def form_data(page, **extra):
    """What the confirmation form posts: its hidden fields, plus `extra`."""
    assert page.status_code == 200
    data = dict(re.findall(r'<input type="hidden" name="(post|preview|digest)" value="([^"]*)"',
                           page.content.decode()))
    assert set(data) == {"post", "preview", "digest"}
    return data | extra


def errors(response):
    return " ".join([*response.context["errors"], response.context["removal_error"]])


def published(integration, sandbox):
    """What a succeeded publish leaves: the ledger's row, and Kombo's list (sent with a real PUT)."""
    (pub,) = publishing.publications_create(integrations=[integration])
    publishing.kombo_client().set_packages(base_url=sandbox.url, integration_id=integration.kombo_integration_id,
                                           body=pub.body.encode())
    Publication.objects.filter(pk=pub.pk).update(status="succeeded", finished_at=timezone.now())
    return pub


@pytest.fixture
def acme(make_package, make_integration, sandbox):
    """Acme offered 1001..1004 and Kombo took them."""
    packages = {pid: make_package(pid, name=f"Name {pid}", description=f"About {pid}")
                for pid in ("1001", "1002", "1003", "1004")}
    integration = make_integration(list(packages.values()), kombo_integration_id=IID, name="Acme")
    published(integration, sandbox)
    integration.catalogue = packages
    return integration


def test_three_way_comparison_and_a_package_only_kombo_had_needs_the_tick(client, publisher, acme, sandbox,
                                                                        no_broker):
    # Outside the product: a package added at Kombo, and 1002 renamed there.
    sandbox.add_packages(IID, [
        {"id": "legacy-7", "name": "Old test", "description": None, "type": None},
        {"id": "1002", "name": "Renamed at Kombo", "description": "About 1002", "type": "SKILLS_TEST"},
    ])
    # In the catalogue: 1001 renamed, 1004 no longer offered.
    acme.catalogue["1001"].name = "Name 1001 v2"
    acme.catalogue["1001"].save()
    acme.packages.remove(acme.catalogue["1004"])

    client.force_login(publisher)
    response = client.get(PUBLISH_URL, {"ids": acme.pk})
    page = response.content.decode()
    (p,) = response.context["review"].previews
    assert p.compared_with_kombo and p.ledger_diff.removed == [acme_entry(acme, "1004")]
    assert [(r.entry["id"], r.last_published, r.at_kombo, r.open_orders) for r in p.removal_rows] == [
        ("1004", True, True, 0), ("legacy-7", False, True, 0)]
    rows = {(c.package_id, c.field): (c.last_published, c.at_kombo, c.will_be_sent) for c in p.change_rows}
    assert rows == {("1001", "name"): ("Name 1001", "Name 1001", "Name 1001 v2"),
                    ("1002", "name"): ("Name 1002", "Renamed at Kombo", "Name 1002")}
    for heading in ("Last published", "At Kombo now", "Will be sent"):
        assert page.count(f"<th>{heading}</th>") == 2, heading  # the changes' table and the removals'
    assert "Compared with Kombo’s current list, read just now." in page
    assert "Old test (type unknown)" in page and "never published by us" in page and "None" not in strip(page)
    # 2 of 5 is less than half: without Kombo's list nothing would ask; legacy-7 was never ours.
    assert p.tick_reasons == ["kombo_only"]
    assert "Need your tick: 1 integration loses packages only Kombo had (never published by us)" in page
    assert 'name="confirm_removals" value="2"' in page

    refused = client.post(PUBLISH_URL, form_data(response))
    assert "Tick the box to confirm that Kombo will mark 2 packages deleted" in errors(refused)
    assert not Publication.objects.filter(status="queued").exists()
    assert client.post(PUBLISH_URL, form_data(refused, confirm_removals="2")).status_code == 302
    (queued,) = Publication.objects.filter(status="queued")
    # What is sent deletes legacy-7 at Kombo: staff saw it and ticked.
    publishing.kombo_client().set_packages(base_url=sandbox.url, integration_id=IID, body=queued.body.encode())
    assert sorted(sandbox.deleted_ids(IID)) == ["1004", "legacy-7"]


def acme_entry(integration, package_id):
    package = integration.catalogue[package_id]
    return {"id": package_id, "type": package.type, "name": package.name, "description": package.description}


def strip(page):
    return re.sub(r"<[^>]+>", " ", page)


def test_a_read_timeout_compares_with_the_last_publish_and_publishing_still_works(client, publisher, acme, sandbox,
                                                                                  settings, no_broker):
    settings.KOMBO_READBACK_TIMEOUT_SECONDS = 0.3
    acme.packages.remove(acme.catalogue["1004"])
    for _ in range(2):  # the page, then the confirm: Kombo answers too late both times
        sandbox.enqueue_fault(Fault(status=200, delay=1.0, integration_id=IID, path="/assessment/packages"))
    client.force_login(publisher)
    response = client.get(PUBLISH_URL, {"ids": acme.pk})
    page = response.content.decode()
    (p,) = response.context["review"].previews
    when = formats.date_format(timezone.localtime(p.last_published_at), "DATETIME_FORMAT")
    assert (f"Compared with what we last published on {when}. Kombo’s current list was not read: "
            "Kombo did not answer within 0.3 s (read timeout).") in page
    assert "could not be read for 1 of 1 integration" in page and "Publishing still works." in page
    assert p.readback.packages is None and [r.entry["id"] for r in p.removal_rows] == ["1004"]
    assert [r.at_kombo for r in p.removal_rows] == [None]  # "not read", never a guess
    # The orders were read all the same: none, so removing 1 of 4 needs no tick.
    assert p.removal_rows[0].open_orders == 0 and not p.needs_removal_confirmation
    assert client.post(PUBLISH_URL, form_data(response)).status_code == 302
    assert Publication.objects.filter(status="queued").count() == 1


def test_an_error_at_confirm_refuses_the_preview_read_from_kombo_then_publishing_works(client, publisher, acme,
                                                                                     sandbox, no_broker):
    acme.packages.remove(acme.catalogue["1004"])
    client.force_login(publisher)
    response = client.get(PUBLISH_URL, {"ids": acme.pk})
    assert response.context["review"].previews[0].compared_with_kombo
    html = "<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>"
    for _ in range(2):
        sandbox.enqueue_fault(Fault(status=503, body=html, integration_id=IID, path="/assessment/packages"))
    refused = client.post(PUBLISH_URL, form_data(response))
    assert "What Kombo holds changed since the preview" in errors(refused)
    assert not Publication.objects.filter(status="queued").exists()
    text = refused.content.decode()
    assert ("Kombo’s current list was not read: Kombo answered HTTP 503 with a non-JSON body: "
            "503 Service Temporarily Unavailable") in text
    assert client.post(PUBLISH_URL, form_data(refused)).status_code == 302
    assert Publication.objects.filter(status="queued").count() == 1


def test_a_package_added_at_kombo_after_the_preview_refuses_the_confirm(client, publisher, acme, sandbox, no_broker):
    acme.catalogue["1001"].name = "Name 1001 v2"
    acme.catalogue["1001"].save()
    client.force_login(publisher)
    response = client.get(PUBLISH_URL, {"ids": acme.pk})
    assert "confirm_removals" not in response.content.decode()  # nothing removed
    sandbox.add_packages(IID, [{"id": "k-9", "name": "Added meanwhile", "description": "x", "type": "BEHAVIORAL"}])
    refused = client.post(PUBLISH_URL, form_data(response))
    assert "What Kombo holds changed since the preview" in errors(refused)
    assert not Publication.objects.filter(status="queued").exists()
    assert "Added meanwhile" in refused.content.decode()
    again = client.post(PUBLISH_URL, form_data(refused))
    assert "Tick the box to confirm that Kombo will mark 1 package deleted" in errors(again)
    assert client.post(PUBLISH_URL, form_data(again, confirm_removals="1")).status_code == 302
    # A page reloaded after a change at Kombo says so, and its form is the new preview's.
    sandbox.add_packages(IID, [{"id": "k-10", "name": "Another", "description": "x", "type": "BEHAVIORAL"}])
    assert client.get(PUBLISH_URL, {"ids": acme.pk}).status_code == 200


def test_open_orders_are_counted_over_every_page_and_need_the_tick(client, publisher, acme, sandbox, no_broker):
    acme.packages.remove(acme.catalogue["1004"])  # 1 of 4: no tick for the count alone
    sandbox.add_orders(IID, package_id="1004", count=300)
    sandbox.add_orders(IID, package_id="1001", count=20)   # kept: not the page's business
    sandbox.add_orders(IID, package_id="1004", count=7, status="COMPLETED")
    client.force_login(publisher)
    response = client.get(PUBLISH_URL, {"ids": acme.pk})
    page = response.content.decode()
    (p,) = response.context["review"].previews
    assert [(r.entry["id"], r.open_orders) for r in p.removal_rows] == [("1004", 300)]
    assert p.tick_reasons == ["open_orders"]
    assert "300 open orders" in page
    assert "Need your tick: 1 integration loses packages with open orders" in page
    assert re.search(r"I understand that Kombo will mark <strong>1 package</strong> deleted\s+for this customer, "
                     r'<strong class="kombo-tick-orders">with 300 open orders on them</strong>', page)
    reads = [r.path for r in sandbox.requests("GET", IID) if "/assessment/orders" in r.path]
    assert len(reads) == 2 and "statuses=OPEN" in reads[0] and "page_size=250" in reads[0]
    assert "cursor=" in reads[1]
    refused = client.post(PUBLISH_URL, form_data(response))
    assert "with 300 open orders on them" in errors(refused)
    assert client.post(PUBLISH_URL, form_data(refused, confirm_removals="1")).status_code == 302


def test_orders_that_cannot_be_read_are_said_and_need_the_tick(client, publisher, acme, sandbox, no_broker):
    acme.packages.remove(acme.catalogue["1004"])
    for _ in range(3):  # the page, the confirm without the tick, the confirm with it
        sandbox.enqueue_fault(Fault(status=502, integration_id=IID, path="/assessment/orders"))
    client.force_login(publisher)
    response = client.get(PUBLISH_URL, {"ids": acme.pk})
    page = response.content.decode()
    (p,) = response.context["review"].previews
    assert p.compared_with_kombo and p.orders_unknown and p.tick_reasons == ["orders_unknown"]
    assert "Open orders were not read: Kombo answered HTTP 502 with an empty body." in page
    assert "open orders not read for 1 integration" in page
    refused = client.post(PUBLISH_URL, form_data(response))
    assert "Tick the box" in errors(refused) and not Publication.objects.filter(status="queued").exists()
    assert client.post(PUBLISH_URL, form_data(refused, confirm_removals="1")).status_code == 302


def test_above_the_limit_kombo_is_not_read_and_the_page_says_why(client, publisher, acme, make_integration, sandbox,
                                                                 settings, no_broker):
    settings.KOMBO_READBACK_MAX_INTEGRATIONS = 1
    other = make_integration([acme.catalogue["1001"]], kombo_integration_id="recruitee:Other1")
    sandbox.reset()
    client.force_login(publisher)
    response = client.get(PUBLISH_URL, {"ids": f"{acme.pk},{other.pk}"})
    assert ("Compared with what we last published: Kombo’s current lists were not read because 2 integrations "
            "are selected, and Kombo is read for up to 1 at a time (KOMBO_READBACK_MAX_INTEGRATIONS)") \
        in response.content.decode()
    assert sandbox.requests() == []
    assert not response.context["review"].read


@pytest.mark.django_db
def test_reads_run_a_few_at_a_time_each_through_the_pacing(make_package, make_integration, sandbox, settings,
                                                          monkeypatch):
    package = make_package("1001")
    integrations = [make_integration([package], kombo_integration_id=f"recruitee:Par{n}") for n in range(6)]
    for integration in integrations:
        sandbox.add_packages(integration.kombo_integration_id, [{"id": "old", "name": "Old", "type": "BEHAVIORAL",
                                                                 "description": "x"}])
        sandbox.enqueue_fault(Fault(status=200, delay=0.3, integration_id=integration.kombo_integration_id,
                                    path="/assessment/packages"))
    slots = []
    real = pacing.reserve_slot
    monkeypatch.setattr(pacing, "reserve_slot", lambda max_wait: slots.append(max_wait) or real(max_wait=max_wait))
    previews = selectors.integrations_preview(Integration.objects.filter(pk__in=[i.pk for i in integrations]))
    review = publish_review(previews)
    assert all(p.compared_with_kombo for p in review.previews)
    assert all([r.entry["id"] for r in p.removal_rows] == ["old"] for p in review.previews)
    # One GET of packages and one of orders per integration, each with its slot.
    assert len(sandbox.requests("GET")) == 12 and len(slots) == 12
    assert 2 <= sandbox.max_in_flight() <= kombo_readback.READ_THREADS


@pytest.mark.django_db
def test_the_budget_bounds_the_wait_and_says_so(make_package, make_integration, sandbox, settings):
    settings.KOMBO_READBACK_BUDGET_SECONDS = 0.5
    integration = make_integration([make_package("1001")], kombo_integration_id="recruitee:Slow1")
    sandbox.enqueue_fault(Fault(status=200, delay=3, integration_id="recruitee:Slow1"))
    review = publish_review(selectors.integrations_preview(Integration.objects.filter(pk=integration.pk)))
    (p,) = review.previews
    assert not p.compared_with_kombo
    assert p.not_read_reason == "Kombo did not answer within the 0.5 s this page waits for it."
    assert "Kombo’s current list was not read" in p.compared_with_text


def test_open_order_counts_for_one_integration(sandbox):
    sandbox.add_orders(IID, package_id="a", count=251)
    sandbox.add_orders(IID, [{"package_id": "b"}, {"package_id": "b", "status": "CANCELLED"}])
    counts, error = kombo_readback.open_order_counts(integration_id=IID, base_url=sandbox.url)
    assert error is None and counts == {"a": 251, "b": 1}
    counts, error = kombo_readback.open_order_counts(integration_id="notfound:X", base_url=sandbox.url)
    assert counts is None and "PLATFORM.INTEGRATION_NOT_FOUND" in error
