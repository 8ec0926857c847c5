"""The whole staff flow in a real browser (Playwright driving Debian's Chromium, headless),
against a live server, a real Celery worker and the Kombo sandbox. Screenshots of each step go
to tests/screenshots/ (git-ignored)."""
import os
import re
import time
from pathlib import Path

import pytest
from celery.contrib.testing.worker import start_worker
from django.contrib.auth.models import User

from kombo_admin.celery import app
from packages_app import payloads
from packages_app.models import AssessmentPackage, Integration, Publication

# Playwright's sync API runs an event loop in this thread; the ORM calls the tests make
# between browser steps are plain synchronous calls, which Django would otherwise refuse.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parent / "screenshots"
DOCS_SHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
LONG_NAME = "Senior TypeScript engineer: algorithms, testing and system design"


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: apt-get install chromium"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        )
        yield browser
        browser.close()


@pytest.fixture
def worker():
    with app.connection_for_write() as connection:
        connection.default_channel.queue_declare(queue="celery", durable=True, auto_delete=False)
        connection.default_channel.queue_purge("celery")
    with start_worker(app, pool="solo", perform_ping_check=False, loglevel="WARNING", shutdown_timeout=10):
        yield


@pytest.fixture
def page(browser, live_server, sandbox, worker):
    User.objects.create_superuser("staff", password="a-long-test-password-1")
    SHOTS.mkdir(exist_ok=True)
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=live_server.url)
    page = context.new_page()
    page.set_default_timeout(20000)
    # Shown with the failure report if a step times out.
    page.on("console", lambda m: print("browser console:", m.type, m.text) if m.type == "error" else None)
    yield page
    context.close()


def shot(page, name):
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def add_package(page, package_id, name, type_="SKILLS_TEST"):
    page.goto("/admin/packages_app/assessmentpackage/add/")
    page.fill("#id_package_id", package_id)
    page.select_option("#id_type", type_)
    page.fill("#id_name", name)
    page.fill("#id_description", f"What {name} measures, in two lines.")
    page.click("input[name=_save]")
    page.wait_for_selector(".messagelist .success")


def add_integration(page, name, kombo_id, package_labels):
    page.goto("/admin/packages_app/integration/add/")
    page.fill("#id_name", name)
    page.fill("#id_kombo_integration_id", kombo_id)
    for label in ([package_labels] if isinstance(package_labels, str) else package_labels):
        choose_package(page, label)
    page.click("input[name=_continue]")
    page.wait_for_selector(".messagelist .success")


def choose_package(page, label):
    """Pick a package in the integration form's search box (Django's autocomplete, select2)."""
    page.click(".field-packages .select2-selection")
    page.fill(".select2-search__field", label.split(" (")[0])
    page.click(f".select2-results__option:has-text('{label}')")


def publish_from_integration_page(page, name):
    page.goto("/admin/packages_app/integration/")
    page.click(f"text={name}")
    page.click("a.kombo-publish-button")
    page.wait_for_selector("h1:has-text('Publish to Kombo')")


def test_staff_flow_publish_read_diff_watch_status_remove_and_fail(page):
    # Log in.
    page.goto("/admin/")
    page.fill("#id_username", "staff")
    page.fill("#id_password", "a-long-test-password-1")
    page.click("input[type=submit]")
    page.wait_for_selector("#site-name")

    # Create packages and an integration that offers them.
    add_package(page, "1001", LONG_NAME)
    add_package(page, "1002", "Video interview", "VIDEO_INTERVIEW")
    add_integration(page, "Acme Corp", "recruitee:HWUTwvyx2wLoSUHphiWVrp28",
                    [f"{LONG_NAME} (1001)", "Video interview (1002)"])
    shot(page, "01-integration")

    # Publish: the confirmation page shows what will be added.
    page.click("a.kombo-publish-button")
    page.wait_for_selector("h1:has-text('Publish to Kombo')")
    assert "2 to add" in page.inner_text(".kombo-preview")
    shot(page, "02-confirm-first-publish")
    page.click("input[type=submit][value='Yes, publish to Kombo']")

    # The publication page updates by itself until Kombo's answer is in, warnings highlighted.
    page.wait_for_selector("#kombo-live .status-succeeded")
    warnings = page.inner_text(".kombo-warnings-box")
    assert "Kombo returned 1 warning" in warnings and 'Package "1001"' in warnings
    shot(page, "03-publication-succeeded-with-warning")
    assert Publication.objects.get().status == "succeeded"

    # The list shows the integration in sync.
    page.goto("/admin/packages_app/integration/")
    assert page.inner_text("td.field-sync_status_badge") == "In sync"

    # Remove one of the two packages: half the list, so the removal must be confirmed by name.
    page.click("text=Acme Corp")
    page.click(".select2-selection__choice[title='Video interview (1002)'] .select2-selection__choice__remove")
    page.click("input[name=_continue]")
    page.wait_for_selector(".messagelist .success")
    page.goto("/admin/packages_app/integration/")
    assert page.inner_text("td.field-sync_status_badge") == "Changed since last publish"
    publish_from_integration_page(page, "Acme Corp")
    removals = page.inner_text(".kombo-removals")
    assert "1 package will be removed." in removals and "mark it deleted for Acme Corp" in removals
    assert "1002" in removals
    shot(page, "04-confirm-removal")
    page.click("input[type=submit][value='Yes, publish to Kombo']")
    assert "Tick the box to confirm that Kombo will mark 1 package(s) deleted" in page.inner_text(".errorlist")
    page.check("#confirm-removals")
    page.click("input[type=submit][value='Yes, publish to Kombo']")
    page.wait_for_selector("#kombo-live .status-succeeded")
    assert Publication.objects.filter(status="succeeded").count() == 2

    # A publish Kombo refuses shows its code, message and log link.
    add_integration(page, "Initech", "notfound:Initech42", ["Video interview (1002)"])
    page.click("a.kombo-publish-button")
    page.click("input[type=submit][value='Yes, publish to Kombo']")
    page.wait_for_selector("#kombo-live .status-failed")
    error = page.inner_text(".kombo-error")
    assert "PLATFORM.INTEGRATION_NOT_FOUND" in error
    assert re.match(r"http://127\.0\.0\.1:\d+/logs\?interactionId=\d+", page.get_attribute("a.kombo-log-url", "href"))
    assert page.is_visible("a.kombo-republish")
    shot(page, "05-publication-failed")

    page.goto("/admin/packages_app/integration/")
    shot(page, "06-integrations-list")
    assert "Last publish did not complete" in page.inner_text("#result_list")


def many_customers():
    """60 integrations as a vendor has them: most never published, some losing a package, some
    losing most of their list or all of it (those need the tick), some in sync, two paused."""
    catalogue = AssessmentPackage.objects.bulk_create(
        AssessmentPackage(package_id=package_id, type=type_, name=name, description=f"What {name} measures.")
        for package_id, type_, name in [
            ("1001", "SKILLS_TEST", "TypeScript"), ("1002", "VIDEO_INTERVIEW", "Video interview"),
            ("1003", "BEHAVIORAL", "Teamwork"), ("1004", "SKILLS_TEST", "SQL"),
            ("1005", "BACKGROUND_CHECK", "Criminal record check"), ("1006", "REFERENCE_CHECK", "References")])
    by_id = {p.package_id: p for p in catalogue}
    names = [f"{base} {suffix}" for suffix in ("Corp", "GmbH", "Ltd") for base in (
        "Acme", "Globex", "Initech", "Umbrella", "Hooli", "Stark", "Wayne", "Wonka", "Cyberdyne", "Soylent",
        "Tyrell", "Vandelay", "Massive Dynamic", "Oscorp", "Pied Piper", "Dunder Mifflin", "Gringotts",
        "Monsters Inc", "Nakatomi", "Duff")]
    integrations = Integration.objects.bulk_create(
        Integration(name=name, kombo_integration_id=f"recruitee:Many{n:02d}", is_active=n not in (58, 59))
        for n, name in enumerate(names))
    offers, held = {}, {}
    for n, integration in enumerate(integrations):
        offers[integration] = ["1001", "1002", "1003", "1004"]
        if n < 4:  # lose the video interview: one of four, no tick needed
            held[integration], offers[integration] = ["1001", "1002", "1003", "1004"], ["1001", "1003", "1004"]
        elif n < 7:  # keep one of three: the tick
            held[integration], offers[integration] = ["1001", "1005", "1006"], ["1001"]
        elif n < 9:  # an empty list: the tick
            held[integration], offers[integration] = ["1001", "1002"], []
        elif n < 14:  # in sync
            held[integration] = offers[integration]
    Integration.packages.through.objects.bulk_create(
        Integration.packages.through(integration_id=i.pk, assessmentpackage_id=by_id[pid].pk)
        for i, pids in offers.items() for pid in pids)
    for integration, pids in held.items():
        body = payloads.canonical_bytes(payloads.build_body([by_id[pid] for pid in pids]))
        Publication.objects.create(integration=integration, status="succeeded", body=body.decode(),
                                   body_sha256=payloads.body_sha256(body), package_count=len(pids))


def test_publishing_60_integrations_at_once(page):
    many_customers()
    page.goto("/admin/")
    page.fill("#id_username", "staff")
    page.fill("#id_password", "a-long-test-password-1")
    page.click("input[type=submit]")
    page.wait_for_selector("#site-name")

    # Select every integration of the list and choose the action.
    page.goto("/admin/packages_app/integration/")
    page.check("#action-toggle")
    page.select_option("select[name=action]", "publish_selected")
    page.click("button[name=index]")
    page.wait_for_selector("h1:has-text('Publish to Kombo')")
    assert "?preview=" in page.url and "ids" not in page.url

    # Totals first, then every integration that needs the tick, named; details folded, 50 a page,
    # those with changes first.
    totals = page.inner_text(".kombo-totals")
    for figure, label in (("60", "integrations"), ("53", "to publish"), ("5", "skipped: in sync"),
                          ("2", "skipped: paused")):
        assert f"{figure}\n{label}" in totals, totals
    needs_tick = page.inner_text(".kombo-tick-section")
    assert "Need your tick: 5 integrations lose half or more of their list, or get an empty list" in needs_tick
    for name in ("Hooli Corp", "Stark Corp", "Wayne Corp", "Wonka Corp", "Cyberdyne Corp"):
        assert name in needs_tick
    others = page.inner_text("table.kombo-no-tick")
    assert "1002 Video interview" in others and "Acme Corp, Globex Corp, Initech Corp, Umbrella Corp" in others
    assert page.locator("details.kombo-preview").count() == 50
    DOCS_SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(DOCS_SHOTS / "confirm-many.png"), full_page=True)
    shot(page, "07-confirm-many")

    # Page 2 keeps the preview: the same form, the last 3 of the 53 with changes.
    form_preview = page.get_attribute("input[name=preview]", "value")
    page.click(".kombo-pages a:has-text('2')")
    page.wait_for_selector(".kombo-pages .this-page:has-text('2')")
    assert page.locator("details.kombo-preview").count() == 3
    assert page.get_attribute("input[name=preview]", "value") == form_preview
    page.click("details.kombo-preview >> nth=0")  # unfold one
    assert page.locator("details.kombo-preview[open]").count() == 1

    # The tick is required, then 53 publications are queued (in sync and paused skipped).
    page.click("input[type=submit][value='Yes, publish to Kombo']")
    assert "Tick the box to confirm that Kombo will mark 10 package(s) deleted" in page.inner_text(".errorlist")
    page.check("#confirm-removals")
    page.click("input[type=submit][value='Yes, publish to Kombo']")
    page.wait_for_selector(".messagelist .success")
    assert "Queued 53 publications to Kombo. Skipped 7 integrations" in page.inner_text(".messagelist")
    assert Publication.objects.filter(requested_by__username="staff").count() == 53
    # Let the worker finish before the database is emptied for the next test.
    deadline = time.monotonic() + 120
    while Publication.objects.exclude(status__in=Publication.FINAL_STATUSES).exists():
        assert time.monotonic() < deadline, sorted(Publication.objects.values_list("status", "attempts", "failure_reason"))
        time.sleep(0.5)
