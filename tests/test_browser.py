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
    assert "Tick the box to confirm that Kombo will mark 1 package deleted" in page.inner_text("#removal-tick .errorlist")
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
    assert "Tick the box to confirm that Kombo will mark 10 packages deleted" in page.inner_text("#removal-tick .errorlist")
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


# --- every page, as staff see it at 1,280 px ---------------------------------------------------

def every_page_data(sandbox):
    """A catalogue, a plan, integrations and a publication in every state a page can show, one of
    them really published through the worker so the compare page reads Kombo's side."""
    from django.utils import timezone

    from packages_app.models import Plan, PublicationAttempt, WebhookEvent

    packages = {pid: AssessmentPackage.objects.create(package_id=pid, type=type_, name=name,
                                                       description=f"What {name} measures, in two lines.")
                for pid, type_, name in [
                    ("ts-senior", "SKILLS_TEST", LONG_NAME), ("video-basic", "VIDEO_INTERVIEW", "Video interview"),
                    ("big5", "BEHAVIORAL", "Big Five personality"),
                    ("ref-check-basic", "REFERENCE_CHECK", "Reference check"),
                    ("crim-eu", "BACKGROUND_CHECK", "Criminal record check (EU)")]}
    plan = Plan.objects.create(name="Standard", description="What most customers get.", is_default=True)
    plan.packages.set([packages["ts-senior"], packages["video-basic"]])
    acme = Integration.objects.create(name="Acme Corp", kombo_integration_id="recruitee:HWUTwvyx2wLoSUHphiWVrp28")
    acme.plans.set([plan])
    acme.packages.set([packages["big5"]])
    # Published (the ledger and Kombo, the sandbox, hold the same list; the engine's own tests
    # cover sending it)...
    from packages_app.sandbox import _IntegrationState

    sent = payloads.build_body([packages["big5"], packages["ts-senior"], packages["video-basic"]])
    body = payloads.canonical_bytes(sent)
    now = timezone.now()
    Publication.objects.create(integration=acme, status="succeeded", body=body.decode(), http_status=200,
                               body_sha256=payloads.body_sha256(body), package_count=3, attempts=1,
                               started_at=now, finished_at=now)
    state = sandbox._states.setdefault(acme.kombo_integration_id, _IntegrationState())
    # ...then Kombo lost a package on its side, and the catalogue gained one.
    state.replace([p for p in sent["packages"] if p["id"] != "big5"])
    acme.packages.add(packages["ref-check-basic"])

    globex = Integration.objects.create(name="Globex GmbH", kombo_integration_id="greenhouse:Globex77")
    globex.packages.set([packages["ts-senior"], packages["crim-eu"]])
    body = payloads.canonical_bytes(payloads.build_body([packages["ts-senior"], packages["crim-eu"]]))
    common = dict(integration=globex, body=body.decode(), body_sha256=payloads.body_sha256(body), package_count=2,
                  started_at=now, enqueued_at=now)
    staff = User.objects.get(username="staff")
    made = {
        "succeeded": Publication.objects.create(
            **common, status="succeeded", http_status=200, attempts=1, finished_at=now, requested_by=staff,
            warnings=['Package "crim-eu" has a long description; some ATSs cut it at 200 characters.']),
        "failed": Publication.objects.create(
            **common, status="failed", http_status=404, attempts=1, finished_at=now, requested_by=staff,
            error_code="PLATFORM.INTEGRATION_NOT_FOUND", error_title="Integration not found",
            error_message="The integration greenhouse:Globex77 does not exist or was deleted.",
            error_log_url="https://app.kombo.dev/logs?interactionId=123",
            failure_reason="Kombo refused the request (HTTP 404): PLATFORM.INTEGRATION_NOT_FOUND."),
        "superseded": Publication.objects.create(**common, status="superseded", finished_at=now),
        "cancelled": Publication.objects.create(
            **common, status="cancelled", finished_at=now, cancel_requested_at=now, cancelled_by=staff,
            cancel_reason="Wrong packages selected"),
        "waiting": Publication.objects.create(
            **common, status="waiting", attempts=1, next_attempt_at=now + timezone.timedelta(hours=1)),
    }
    PublicationAttempt.objects.create(publication=made["failed"], number=1, started_at=now, finished_at=now,
                                      http_status=404, error_code="PLATFORM.INTEGRATION_NOT_FOUND",
                                      outcome="failed", message="Integration not found")
    WebhookEvent.objects.create(event_id="evt_1", type="integration-created", outcome="created",
                                payload={"id": "evt_1"}, integration=acme, processed_at=now,
                                detail="Created Acme Corp with the plan Standard.")
    return {"acme": acme, "globex": globex, "packages": packages, "plan": plan, "publications": made}


# The README's screenshots, refreshed by test_every_page_at_1280px: tests/screenshots name -> docs name.
README_SHOTS = {"page-publication-succeeded": "publication-status", "page-integrations": "integrations",
                "page-plans": "plans", "page-webhooks": "webhooks", "page-confirm-removal": "confirm-removal",
                "page-publications": "publications", "page-compare": "compare",
                "page-import-preview": "import-preview", "page-integration-delete": "integration-delete"}


def page_shot(page, name):
    """A screenshot into tests/screenshots/, and into docs/screenshots/ when the README shows it."""
    shot(page, name)
    if name in README_SHOTS:
        DOCS_SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(DOCS_SHOTS / f"{README_SHOTS[name]}.png"), full_page=True)


def log_in(page, username="staff", password="a-long-test-password-1"):
    page.goto("/admin/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("input[type=submit]")


def test_every_page_at_1280px(page, sandbox, browser, live_server):
    """A screenshot of every page of the app into tests/screenshots/, and what each must show."""
    log_in(page)
    page.wait_for_selector("#site-name")
    data = every_page_data(sandbox)
    acme, globex, made = data["acme"], data["globex"], data["publications"]
    shots = {
        "page-home": "/admin/",
        "page-packages": "/admin/packages_app/assessmentpackage/",
        "page-package": f"/admin/packages_app/assessmentpackage/{data['packages']['big5'].pk}/change/",
        "page-package-add": "/admin/packages_app/assessmentpackage/add/",
        "page-plans": "/admin/packages_app/plan/",
        "page-plan": f"/admin/packages_app/plan/{data['plan'].pk}/change/",
        "page-integrations": "/admin/packages_app/integration/",
        "page-integration": f"/admin/packages_app/integration/{acme.pk}/change/",
        "page-integration-add": "/admin/packages_app/integration/add/",
        "page-publications": "/admin/packages_app/publication/",
        "page-publications-of-globex": f"/admin/packages_app/publication/?integration__id__exact={globex.pk}",
        "page-webhooks": "/admin/packages_app/webhookevent/",
        "page-webhook": f"/admin/packages_app/webhookevent/{WebhookEventPk.get()}/change/",
        "page-compare": f"/admin/packages_app/integration/{acme.pk}/compare/",
        "page-confirm": f"/admin/packages_app/integration/publish/?ids={globex.pk}",
        "page-import": "/admin/packages_app/assessmentpackage/import/",
        "page-integration-history": f"/admin/packages_app/integration/{acme.pk}/history/",
    }
    for status, publication in made.items():
        shots[f"page-publication-{status}"] = f"/admin/packages_app/publication/{publication.pk}/change/"
    for name, url in shots.items():
        page.goto(url)
        page.wait_for_selector("#content")
        assert "Server Error" not in page.content(), url
        page_shot(page, name)

    # The confirmation page with a removal (Kombo holds big5 again; the catalogue drops it).
    sandbox._states[acme.kombo_integration_id].replace(
        Publication.objects.filter(integration=acme).get().body_dict()["packages"])
    acme.packages.remove(data["packages"]["big5"])
    page.goto(f"/admin/packages_app/integration/publish/?ids={acme.pk}")
    assert "big5" in page.inner_text(".kombo-removals")
    page_shot(page, "page-confirm-removal")

    # A failed publication says Kombo's error once and offers to publish again once; a superseded
    # one says nothing was sent and links the next one.
    page.goto(f"/admin/packages_app/publication/{made['failed'].pk}/change/")
    assert page.locator("a.kombo-republish").count() == 1
    assert page.locator(".kombo-reason").count() == 0  # the error box says it
    assert page.locator(".object-tools a").count() == 0  # no History, no second "publish again"
    page.goto(f"/admin/packages_app/publication/{made['superseded'].pk}/change/")
    assert "What would have been sent (never sent)" in page.inner_text("#content-main")
    page.click("a.kombo-successor")
    assert page.url.endswith(f"/publication/{made['cancelled'].pk}/change/")
    # The History of a publication is its own page, never an empty one.
    page.goto(f"/admin/packages_app/publication/{made['failed'].pk}/history/")
    assert page.url.endswith(f"/publication/{made['failed'].pk}/change/")

    # The publications list: every column on screen, a warnings filter, a search-box filter by integration.
    page.goto("/admin/packages_app/publication/")
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    for column in ("error", "warning_count"):
        box = page.locator(f"th.column-{column}").bounding_box()
        assert box and box["x"] + box["width"] <= 1280 - 240, column
    page.click("a:has-text('With warnings')")
    page.wait_for_selector(".kombo-warning-count")
    assert page.locator("#result_list tbody tr").count() == 1
    page.goto("/admin/packages_app/publication/")
    page.click(".kombo-integration-filter .select2-selection")
    page.fill(".select2-search__field", "Glob")
    page.click(".select2-results__option:has-text('Globex GmbH')")
    page.wait_for_url(re.compile(rf"integration__id__exact={globex.pk}"))
    assert page.locator("#result_list tbody tr").count() == 5
    assert "Globex GmbH" in page.inner_text(".kombo-integration-filter li.selected")

    # Compare at a phone's width: the table scrolls in its box, the page does not overflow.
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"/admin/packages_app/integration/{acme.pk}/compare/")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    shot(page, "page-compare-390px")
    page.set_viewport_size({"width": 1280, "height": 900})

    # Deleting a package names the customers who lose it, and their History records it.
    crim = data["packages"]["crim-eu"]
    page.goto(f"/admin/packages_app/assessmentpackage/{crim.pk}/delete/")
    text = page.inner_text("#content")
    assert "No longer offered to Globex GmbH" in text and "object (" not in text
    shot(page, "page-package-delete")
    page.click("input[type=submit]")
    page.wait_for_selector(".messagelist .success")
    page.goto(f"/admin/packages_app/integration/{globex.pk}/history/")
    assert "Package Criminal record check (EU) (crim-eu) removed" in page.inner_text("#change-history")
    shot(page, "page-integration-history-after-delete")

    # Deleting a published integration: why not, and pausing it instead.
    page.goto("/admin/packages_app/integration/")
    page.check(f"input[name=_selected_action][value='{acme.pk}']")
    page.select_option("select[name=action]", "delete_selected")
    page.click("button[name=index]")
    assert "permission" not in page.inner_text("#content")
    page_shot(page, "page-integration-delete")
    page.click("input.kombo-pause-instead")
    page.wait_for_selector(".messagelist .success")
    assert "1 integration paused" in page.inner_text(".messagelist")
    assert not Integration.objects.get(pk=acme.pk).is_active

    # The import page and its preview: a semicolon-separated file, nothing written before the confirm.
    csv_file = SHOTS / "import-semicolons.csv"
    csv_file.write_text("id;type;name;description\r\nbig5;BEHAVIORAL;Big Five (short);Five traits.\r\n"
                        "sql-basic;SKILLS_TEST;SQL basics;Queries and joins.\r\n", encoding="utf-8")
    page.goto("/admin/packages_app/assessmentpackage/import/")
    page.set_input_files("input[type=file]", str(csv_file))
    page.click("input[type=submit]")
    page.wait_for_selector(".kombo-import-preview")
    assert "sql-basic" in page.inner_text(".kombo-import-added")
    assert "Big Five (short)" in page.inner_text(".kombo-import-changed")
    assert not AssessmentPackage.objects.filter(package_id="sql-basic").exists()
    page_shot(page, "page-import-preview")
    page.click("input.kombo-import-confirm")
    page.wait_for_selector(".messagelist .success")
    assert AssessmentPackage.objects.get(package_id="big5").name == "Big Five (short)"
    assert AssessmentPackage.objects.filter(package_id="sql-basic").exists()

    # The lockout page, in a fresh context.
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=live_server.url)
    other = context.new_page()
    for _ in range(6):
        log_in(other, "staff", "wrong-password")
    text = other.inner_text("body")
    assert "Try again in 15 minutes" in text and "Kombo package publisher" in text
    assert "PT15M" not in text and "Django administration" not in text
    shot(other, "page-lockout")
    context.close()


class WebhookEventPk:
    @staticmethod
    def get():
        from packages_app.models import WebhookEvent

        return WebhookEvent.objects.get().pk


# --- what Kombo holds and its open orders (issue 12) ---------------------------------------------

def _log_in(page):
    page.goto("/admin/")
    page.fill("#id_username", "staff")
    page.fill("#id_password", "a-long-test-password-1")
    page.click("input[type=submit]")
    page.wait_for_selector("#site-name")


def _published_at_kombo(integration, sandbox):
    """The ledger's succeeded row and Kombo's list (a real PUT to the sandbox), without the worker."""
    from django.utils import timezone

    from packages_app import publishing

    (pub,) = publishing.publications_create(integrations=[integration])
    publishing.kombo_client().set_packages(base_url=sandbox.url, integration_id=integration.kombo_integration_id,
                                           body=pub.body.encode())
    Publication.objects.filter(pk=pub.pk).update(status="succeeded", attempts=1, http_status=200,
                                                 started_at=timezone.now(), finished_at=timezone.now())


def test_confirmation_shows_what_only_kombo_had_and_open_orders(page, sandbox, no_broker):
    catalogue = {pid: AssessmentPackage.objects.create(package_id=pid, type=type_, name=name,
                                                        description=f"What {name} measures.")
                 for pid, type_, name in [("1001", "SKILLS_TEST", "TypeScript"),
                                          ("1002", "VIDEO_INTERVIEW", "Video interview"),
                                          ("1003", "BEHAVIORAL", "Teamwork"), ("1004", "SKILLS_TEST", "SQL")]}
    acme = Integration.objects.create(name="Acme Corp", kombo_integration_id="recruitee:AcmeKombo1")
    acme.packages.set(catalogue.values())
    globex = Integration.objects.create(name="Globex GmbH", kombo_integration_id="greenhouse:Globex77")
    globex.packages.set(catalogue.values())
    for integration in (acme, globex):
        _published_at_kombo(integration, sandbox)
    # Acme: a package added in Kombo's dashboard, never published from here; SQL renamed here.
    sandbox.add_packages(acme.kombo_integration_id, [
        {"id": "legacy-7", "name": "Old aptitude test", "description": None, "type": None}])
    catalogue["1004"].name = "SQL and data modelling"
    catalogue["1004"].save()
    # Globex: Teamwork retired for it while candidates are in the middle of it.
    globex.packages.remove(catalogue["1003"])
    sandbox.add_orders(globex.kombo_integration_id, package_id="1003", count=263)
    sandbox.add_orders(globex.kombo_integration_id, package_id="1001", count=40)

    _log_in(page)
    page.goto(f"/admin/packages_app/integration/publish/?ids={acme.pk}")
    page.wait_for_selector("h1:has-text('Publish to Kombo')")
    assert "Compared with Kombo’s current list, read just now." in page.inner_text(".kombo-compared")
    tick = page.inner_text(".kombo-tick-section")
    assert "Need your tick: 1 integration loses packages only Kombo had (never published by us)" in tick
    assert "legacy-7 Old aptitude test (type unknown)" in tick and "only at Kombo" in tick
    removed = page.inner_text(".kombo-removals")
    assert "legacy-7" in removed and "never published by us" in removed
    assert page.locator("table.kombo-changed th").all_text_contents()[2:] == [
        "Last published", "At Kombo now", "Will be sent"]
    shot(page, "08-confirm-only-at-kombo")
    DOCS_SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(DOCS_SHOTS / "confirm-only-at-kombo.png"), full_page=True)

    page.goto(f"/admin/packages_app/integration/publish/?ids={globex.pk}")
    page.wait_for_selector("h1:has-text('Publish to Kombo')")
    assert "263 open orders" in page.inner_text(".kombo-removals")
    assert "with 263 open orders on them" in page.inner_text(".kombo-confirm")
    shot(page, "09-confirm-open-orders")
    page.screenshot(path=str(DOCS_SHOTS / "confirm-open-orders.png"), full_page=True)
    page.click("input[type=submit][value='Yes, publish to Kombo']")
    assert "with 263 open orders on them" in page.inner_text(".errorlist")
    page.check("#confirm-removals")
    page.click("input[type=submit][value='Yes, publish to Kombo']")
    page.wait_for_selector(".messagelist .success")
    assert Publication.objects.filter(integration=globex, status="queued").count() == 1


def test_manual_import_a_moved_integration_and_a_published_id_change_as_staff_see_them(page, sandbox, no_broker):
    """Issue 12's pages at 1,280 px: a Workday integration waiting for the customer's import (the
    filter, the publication page and its CSV), a published package id being changed, and a
    published integration being moved to another region."""
    typescript = AssessmentPackage.objects.create(package_id="1001", type="SKILLS_TEST", name="TypeScript",
                                                  description="What TypeScript measures.")
    big5 = AssessmentPackage.objects.create(package_id="big5", type="BEHAVIORAL", name="Big Five personality",
                                            description="What Big Five measures.")
    workday = Integration.objects.create(name="Initech (Workday)", kombo_integration_id="workday:Initech9")
    workday.packages.set([typescript, big5])
    acme = Integration.objects.create(name="Acme Corp", kombo_integration_id="recruitee:AcmeKombo1")
    acme.packages.set([typescript, big5])
    for integration in (workday, acme):
        _published_at_kombo(integration, sandbox)
    publication = Publication.objects.get(integration=workday)

    _log_in(page)
    page.goto("/admin/packages_app/integration/?sync=awaiting_import")
    assert page.locator("#result_list tbody tr").count() == 1
    assert "Published: waiting for the customer's import" in page.inner_text("#result_list")
    shot(page, "10-integrations-awaiting-import")

    page.goto(f"/admin/packages_app/publication/{publication.pk}/change/")
    block = page.inner_text(".kombo-manual-import")
    assert "Workday takes packages by hand: the customer must import it." in block
    assert "Download the CSV for the customer (2 packages)" in block
    shot(page, "11-publication-manual-import")
    csv_url = page.get_attribute(".kombo-manual-import a[href*='manual-import']", "href")
    csv = page.request.get(csv_url)
    assert csv.status == 200 and "Reference ID Value" in csv.text() and "big5" in csv.text()

    page.goto(f"/admin/packages_app/assessmentpackage/{big5.pk}/change/")
    page.fill("#id_package_id", "big-five")
    with page.expect_navigation():
        page.click("input[name=_save]")
    error = page.inner_text(".errornote")
    assert "published to 2 integrations" in page.content() and "Acme Corp" in page.content(), error
    # The notice names the id Kombo holds, not the one typed in.
    assert "Published as “big5” to 2 integrations" in page.inner_text(".kombo-published-id-notice")
    shot(page, "12-package-published-id-change")
    assert AssessmentPackage.objects.get(pk=big5.pk).package_id == "big5"  # nothing saved without the tick

    page.goto(f"/admin/packages_app/integration/{acme.pk}/change/")
    assert "Published to Kombo as recruitee:AcmeKombo1 in EU" in page.inner_text(".kombo-move-notice")
    page.select_option("#id_region", "US")
    with page.expect_navigation():
        page.click("input[name=_save]")
    page.wait_for_selector("input[type=checkbox][name=confirm_move]")
    # The notice names where Kombo has the list, not the region typed in.
    assert "Published to Kombo as recruitee:AcmeKombo1 in EU" in page.inner_text(".kombo-move-notice")
    shot(page, "13-integration-move")
    assert Integration.objects.get(pk=acme.pk).region == "EU"  # nothing saved without the tick
