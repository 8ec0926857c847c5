"""The permission matrix: every admin page and action, for every kind of user.

Roles are the groups the data migration 0002_roles creates (Viewer, Editor, Publisher), plus an
anonymous visitor, a logged-in user who is not staff, staff in no group, and a superuser. Every
cell says what the page must answer; where a request is refused, nothing may be written.
"""
import re

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Group, User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from packages_app import publishing, selectors
from packages_app.models import AssessmentPackage, Integration, Publication, PublicationAttempt

pytestmark = pytest.mark.django_db

LOGIN_URL = reverse("admin:login")
PUBLISH_URL = reverse("admin:packages_app_integration_publish")

ROLES = ("anonymous", "not_staff", "staff_no_group", "viewer", "editor", "publisher", "superuser")

# What a request may lead to.
LOGIN = "login"    # 302 to the admin login page, nothing written
DENIED = "403"     # 403, nothing written
READ = "200"       # 200, nothing written
DONE = "done"      # the write happened (a 302 after a successful form post)
NOOP = "noop"      # 200, the list is shown again and nothing is written (the user has no action at all)
BACK = "back"      # 302 back to the list with "No action selected.", nothing written (action not offered)
TO_PUBLISH = "to_publish"  # 302 to the publish confirmation page, nothing written yet

# Columns:            anonymous not_staff staff_no_group viewer  editor  publisher superuser
MATRIX = {
    "admin index":          (LOGIN, LOGIN, READ,   READ,   READ,   READ,   READ),
    # The catalogue.
    "package list":         (LOGIN, LOGIN, DENIED, READ,   READ,   READ,   READ),
    "package add page":     (LOGIN, LOGIN, DENIED, DENIED, READ,   READ,   READ),
    "package change page":  (LOGIN, LOGIN, DENIED, READ,   READ,   READ,   READ),
    "package history":      (LOGIN, LOGIN, DENIED, READ,   READ,   READ,   READ),
    "package add POST":     (LOGIN, LOGIN, DENIED, DENIED, DONE,   DONE,   DONE),
    "package change POST":  (LOGIN, LOGIN, DENIED, DENIED, DONE,   DONE,   DONE),
    "package delete page":  (LOGIN, LOGIN, DENIED, DENIED, READ,   READ,   READ),
    "package import page":  (LOGIN, LOGIN, DENIED, DENIED, READ,   READ,   READ),
    "package import POST":  (LOGIN, LOGIN, DENIED, DENIED, DONE,   DONE,   DONE),
    "package export json":  (LOGIN, LOGIN, DENIED, READ,   READ,   READ,   READ),
    "package export csv":   (LOGIN, LOGIN, DENIED, READ,   READ,   READ,   READ),
    # Integrations.
    "integration list":     (LOGIN, LOGIN, DENIED, READ,   READ,   READ,   READ),
    "integration add page": (LOGIN, LOGIN, DENIED, DENIED, READ,   READ,   READ),
    "integration change page": (LOGIN, LOGIN, DENIED, READ, READ,  READ,   READ),
    "integration add POST": (LOGIN, LOGIN, DENIED, DENIED, DONE,   DONE,   DONE),
    "integration change POST": (LOGIN, LOGIN, DENIED, DENIED, DONE, DONE,  DONE),
    # It calls Kombo with the API key: editors and publishers, not viewers.
    "compare page":         (LOGIN, LOGIN, DENIED, DENIED, READ,   READ,   READ),
    "publications live":    (LOGIN, LOGIN, DENIED, READ,   READ,   READ,   READ),
    # Publishing.
    "publish page":         (LOGIN, LOGIN, DENIED, DENIED, DENIED, READ,   READ),
    "publish POST":         (LOGIN, LOGIN, DENIED, DENIED, DENIED, DONE,   DONE),
    # Viewers have no action at all, so Django shows the list again; Editors have delete_selected,
    # so Django refuses the unknown action by redirecting back with "No action selected.".
    "publish_selected action": (LOGIN, LOGIN, DENIED, NOOP, BACK,  TO_PUBLISH, TO_PUBLISH),
    # The ledger: read-only for everyone, superusers included.
    "publication list":     (LOGIN, LOGIN, DENIED, READ,   READ,   READ,   READ),
    "publication page":     (LOGIN, LOGIN, DENIED, READ,   READ,   READ,   READ),
    "publication live":     (LOGIN, LOGIN, DENIED, READ,   READ,   READ,   READ),
    "publication add page": (LOGIN, LOGIN, DENIED, DENIED, DENIED, DENIED, DENIED),
    "publication change POST": (LOGIN, LOGIN, DENIED, DENIED, DENIED, DENIED, DENIED),
    "publication delete POST": (LOGIN, LOGIN, DENIED, DENIED, DENIED, DENIED, DENIED),
}

CASES = [
    pytest.param(page, role, expected, id=f"{page} | {role}")
    for page, row in MATRIX.items()
    for role, expected in zip(ROLES, row, strict=True)
]


# --- fixtures ------------------------------------------------------------------------------



def make_user(role):
    if role == "anonymous":
        return None
    if role == "superuser":
        return User.objects.create_superuser("root", password="pw-for-tests-123")
    user = User.objects.create_user(role, password="pw-for-tests-123", is_staff=role != "not_staff")
    if role in ("viewer", "editor", "publisher"):
        user.groups.add(Group.objects.get(name=role.capitalize()))
    return user


@pytest.fixture
def world(make_package, make_integration, no_broker):
    """One of everything: a package, an integration offering it, and a publication of it."""
    package = make_package("1001", name="TypeScript")
    integration = make_integration([package], name="Acme", kombo_integration_id="recruitee:Acme1")
    (publication,) = publishing.publications_create(integrations=[integration])
    return {"package": package, "integration": integration, "publication": publication}


def snapshot():
    """Everything a page of this admin could write."""
    return {
        "packages": sorted(AssessmentPackage.objects.values_list("package_id", "type", "name", "description")),
        "integrations": sorted(Integration.objects.values_list(
            "kombo_integration_id", "name", "region", "is_active")),
        "offers": sorted(Integration.packages.through.objects.values_list("integration_id", "assessmentpackage_id")),
        "publications": sorted(Publication.objects.values_list("pk", "status", "body_sha256")),
        "attempts": PublicationAttempt.objects.count(),
        "log entries": LogEntry.objects.count(),
    }


def current_sha256(integration):
    """The hash the confirmation page puts in its hidden field (what staff saw)."""
    fresh = Integration.objects.prefetch_related("packages").get(pk=integration.pk)
    return publishing.publication_plan(integration=fresh).sha256


# --- the requests ----------------------------------------------------------------------------

def _package_form(**overrides):
    return {"package_id": "2002", "type": "BEHAVIORAL", "name": "Teamwork",
            "description": "How the candidate works with others", **overrides}


def _integration_form(world, **overrides):
    return {"name": "Globex", "kombo_integration_id": "greenhouse:Globex1", "region": "US",
            "is_active": "on", "packages": [world["package"].pk], **overrides}


def _url(name, *args):
    return reverse(f"admin:packages_app_{name}", args=args)


def _import_and_confirm(client, upload):
    """An import is two posts: the file (its preview; nothing written), then the confirm."""
    url = _url("assessmentpackage_import")
    preview = client.post(url, {"file": upload})
    token = preview.context.get("token") if preview.status_code == 200 and preview.context else None
    return client.post(url, {"confirm": token}) if token else preview


def request_for(page, client, world, request):
    p, i, pub = world["package"], world["integration"], world["publication"]
    get, post = client.get, client.post
    if page == "compare page":
        request.getfixturevalue("sandbox")  # a Kombo to compare with
    return {
        "admin index": lambda: get(reverse("admin:index")),
        "package list": lambda: get(_url("assessmentpackage_changelist")),
        "package add page": lambda: get(_url("assessmentpackage_add")),
        "package change page": lambda: get(_url("assessmentpackage_change", p.pk)),
        "package history": lambda: get(_url("assessmentpackage_history", p.pk)),
        "package add POST": lambda: post(_url("assessmentpackage_add"), _package_form()),
        "package change POST": lambda: post(_url("assessmentpackage_change", p.pk),
                                            _package_form(
            package_id="1001", type="SKILLS_TEST", name="TypeScript 5")),
        "package delete page": lambda: get(_url("assessmentpackage_delete", p.pk)),
        "package import page": lambda: get(_url("assessmentpackage_import")),
        "package import POST": lambda: _import_and_confirm(client, SimpleUploadedFile(
            "c.csv", b"id,type,name,description\n3003,SKILLS_TEST,Go,Go coding skills\n")),
        "package export json": lambda: get(_url("assessmentpackage_export"), {"format": "json"}),
        "package export csv": lambda: get(_url("assessmentpackage_export"), {"format": "csv"}),
        "integration list": lambda: get(_url("integration_changelist")),
        "integration add page": lambda: get(_url("integration_add")),
        "integration change page": lambda: get(_url("integration_change", i.pk)),
        "integration add POST": lambda: post(_url("integration_add"), _integration_form(world)),
        "integration change POST": lambda: post(_url("integration_change", i.pk), _integration_form(
            world, name="Acme GmbH", kombo_integration_id="recruitee:Acme1", region="EU")),
        "compare page": lambda: get(_url("integration_compare", i.pk)),
        "publications live": lambda: get(_url("integration_publications_live", i.pk)),
        "publish page": lambda: get(PUBLISH_URL, {"ids": str(i.pk)}),
        "publish POST": lambda: post(PUBLISH_URL, {"post": "yes", "ids": str(i.pk),
                                                   f"sha256-{i.pk}": current_sha256(i)}),
        "publish_selected action": lambda: post(_url("integration_changelist"), {
            "action": "publish_selected", "_selected_action": [i.pk]}),
        "publication list": lambda: get(_url("publication_changelist")),
        "publication page": lambda: get(_url("publication_change", pub.pk)),
        "publication live": lambda: get(_url("publication_live", pub.pk)),
        "publication add page": lambda: get(_url("publication_add")),
        "publication change POST": lambda: post(_url("publication_change", pub.pk), {"status": "succeeded"}),
        "publication delete POST": lambda: post(_url("publication_delete", pub.pk), {"post": "yes"}),
    }[page]()


def written(page, before, after, world, user):
    """Assert the one write this page makes happened, and nothing else changed."""
    if page == "package add POST":
        assert ("2002", "BEHAVIORAL", "Teamwork", "How the candidate works with others") in after["packages"]
        assert len(after["packages"]) == len(before["packages"]) + 1
    elif page == "package change POST":
        assert after["packages"] == [("1001", "SKILLS_TEST", "TypeScript 5", "How the candidate works with others")]
    elif page == "package import POST":
        assert ("3003", "SKILLS_TEST", "Go", "Go coding skills") in after["packages"]
        assert len(after["packages"]) == len(before["packages"]) + 1
    elif page == "integration add POST":
        assert ("greenhouse:Globex1", "Globex", "US", True) in after["integrations"]
        assert len(after["integrations"]) == len(before["integrations"]) + 1
    elif page == "integration change POST":
        assert after["integrations"] == [("recruitee:Acme1", "Acme GmbH", "EU", True)]
    elif page == "publish POST":
        assert len(after["publications"]) == len(before["publications"]) + 1
        newest = Publication.objects.order_by("-pk").first()
        assert newest.integration == world["integration"] and newest.status == "queued"
        assert newest.requested_by == user and newest.body_sha256 == current_sha256(world["integration"])
        return  # publications_create writes no log entry
    else:  # pragma: no cover - a DONE cell without a check is a mistake in the matrix
        raise AssertionError(f"no write check for {page}")
    assert after["log entries"] == before["log entries"] + 1  # the History page records it
    assert after["publications"] == before["publications"]


@pytest.mark.parametrize("page,role,expected", CASES)
def test_permission_matrix(page, role, expected, client, world, request):
    user = make_user(role)
    if user is not None:
        client.force_login(user)
    before = snapshot()

    response = request_for(page, client, world, request)

    after = snapshot()
    if expected == LOGIN:
        assert response.status_code == 302
        assert response.url.startswith(LOGIN_URL + "?next=")
    elif expected == DENIED:
        assert response.status_code == 403
    elif expected in (READ, NOOP):
        assert response.status_code == 200
    elif expected == BACK:
        assert response.status_code == 302 and response.url == _url("integration_changelist")
        shown = [str(m) for m in client.get(response.url).context["messages"]]
        assert shown == ["No action selected."]
    elif expected == TO_PUBLISH:
        assert response.status_code == 302
        assert response.url.startswith(f"{PUBLISH_URL}?preview=") and "ids" not in response.url
    elif expected == DONE:
        assert response.status_code == 302, getattr(response, "context", None) and response.context.get("errors")
        written(page, before, after, world, user)
        return
    assert after == before, f"{page} as {role} was refused or read-only, yet wrote to the database"


# --- what the matrix cannot say in one cell ----------------------------------------------------

def test_the_roles_are_the_migrations_groups_with_exactly_these_permissions():
    perms = {
        g.name: sorted(g.permissions.values_list("codename", flat=True))
        for g in Group.objects.filter(name__in=["Viewer", "Editor", "Publisher"])
    }
    view = ["view_assessmentpackage", "view_integration", "view_publication", "view_publicationattempt",
            "view_plan", "view_webhookevent"]
    edit = view + ["add_assessmentpackage", "add_integration", "change_assessmentpackage",
                   "change_integration", "delete_assessmentpackage", "delete_integration",
                   "add_plan", "change_plan", "delete_plan"]
    assert perms == {"Viewer": sorted(view), "Editor": sorted(edit),
                     "Publisher": sorted(edit + ["publish_integration"])}


def test_the_hash_the_matrix_posts_is_the_one_the_confirmation_page_shows(client, world):
    client.force_login(make_user("publisher"))
    page = client.get(PUBLISH_URL, {"ids": world["integration"].pk}).content.decode()
    (digest,) = re.findall(r'name="digest" value="([0-9a-f]{64})"', page)
    assert digest == selectors.plans_digest({world["integration"].pk: current_sha256(world["integration"])})


def test_a_publish_preview_is_only_its_owners(client, world, no_broker):
    """The preview lives in the publisher's session: another publisher cannot confirm it."""
    client.force_login(make_user("publisher"))
    page = client.get(PUBLISH_URL, {"ids": world["integration"].pk}).content.decode()
    data = dict(re.findall(r'name="(post|preview|digest)" value="([^"]*)"', page))
    other = User.objects.create_user("publisher2", password="pw-for-tests-123", is_staff=True)
    other.groups.add(Group.objects.get(name="Publisher"))
    client.force_login(other)
    before = snapshot()
    response = client.post(PUBLISH_URL, data)
    assert response.status_code == 302 and response.url == _url("integration_changelist")
    assert snapshot() == before and no_broker == []


@pytest.mark.parametrize("role", ["viewer", "editor"])
def test_publish_controls_are_hidden_from_roles_that_cannot_publish(role, client, world):
    client.force_login(make_user(role))
    listing = client.get(_url("integration_changelist"))
    action_form = listing.context["action_form"]
    assert action_form is None or "publish_selected" not in dict(action_form.fields["action"].choices)
    change_page = client.get(_url("integration_change", world["integration"].pk)).content
    assert PUBLISH_URL.encode() not in change_page


@pytest.mark.parametrize("role", ["publisher", "superuser"])
def test_publish_controls_are_shown_to_roles_that_can_publish(role, client, world):
    client.force_login(make_user(role))
    listing = client.get(_url("integration_changelist"))
    assert "publish_selected" in dict(listing.context["action_form"].fields["action"].choices)
    change_page = client.get(_url("integration_change", world["integration"].pk)).content
    assert f"{PUBLISH_URL}?ids={world['integration'].pk}".encode() in change_page


@pytest.mark.parametrize("role", ["viewer", "editor"])
def test_forged_publish_of_every_integration_is_refused(role, client, world, make_integration, no_broker,
                                                       django_capture_on_commit_callbacks):
    """Out-of-sync bulk publish, forged with right hashes and every tick box: still 403."""
    other = make_integration(name="Other")
    client.force_login(make_user(role))
    before = snapshot()
    data = {"post": "yes", "out_of_sync": "1", "publish_anyway": "on", "confirm_removals": "0",
            "ids": f"{world['integration'].pk},{other.pk}",
            f"sha256-{world['integration'].pk}": current_sha256(world["integration"]),
            f"sha256-{other.pk}": current_sha256(other)}
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        assert client.post(PUBLISH_URL, data).status_code == 403
        assert client.get(PUBLISH_URL, {"out_of_sync": "1"}).status_code == 403
    assert snapshot() == before and callbacks == [] and no_broker == []


def test_viewer_sees_read_only_pages_without_save_buttons(client, world):
    client.force_login(make_user("viewer"))
    for url in (_url("assessmentpackage_change", world["package"].pk),
                _url("integration_change", world["integration"].pk)):
        page = client.get(url)
        assert page.status_code == 200
        assert page.context["has_change_permission"] is False
        assert b'name="_save"' not in page.content
    listing = client.get(_url("assessmentpackage_changelist"))
    assert listing.context["can_import"] is False
    assert _url("assessmentpackage_import").encode() not in listing.content


def test_editor_can_import(client, world):
    client.force_login(make_user("editor"))
    listing = client.get(_url("assessmentpackage_changelist"))
    assert listing.context["can_import"] is True


def test_an_integration_with_publications_cannot_be_deleted_by_anyone(client, world):
    for role in ("editor", "publisher", "superuser"):
        client.force_login(make_user(role))
        before = snapshot()
        response = client.post(_url("integration_delete", world["integration"].pk), {"post": "yes"})
        assert response.status_code == 403 and snapshot() == before


def test_an_inactive_staff_user_is_logged_out(client, world):
    user = make_user("publisher")
    client.force_login(user)
    User.objects.filter(pk=user.pk).update(is_active=False)
    before = snapshot()
    response = client.post(PUBLISH_URL, {"post": "yes", "ids": str(world["integration"].pk),
                                         f"sha256-{world['integration'].pk}": current_sha256(world["integration"])})
    assert response.status_code == 302 and response.url.startswith(LOGIN_URL)
    assert snapshot() == before


def test_staff_in_no_group_see_an_empty_admin(client, world):
    client.force_login(make_user("staff_no_group"))
    index = client.get(reverse("admin:index"))
    assert index.status_code == 200 and index.context["app_list"] == []
    assert "You don’t have permission to view or edit anything." in index.content.decode()


@pytest.mark.parametrize("role,models", [
    ("viewer", {"AssessmentPackage": "view", "Integration": "view", "Publication": "view", "Plan": "view",
                "WebhookEvent": "view"}),
    ("editor", {"AssessmentPackage": "edit", "Integration": "edit", "Publication": "view", "Plan": "edit",
                "WebhookEvent": "view"}),
    ("publisher", {"AssessmentPackage": "edit", "Integration": "edit", "Publication": "view", "Plan": "edit",
                   "WebhookEvent": "view"}),
])
def test_the_admin_index_lists_what_each_role_may_open(role, models, client, world):
    client.force_login(make_user(role))
    (app,) = client.get(reverse("admin:index")).context["app_list"]
    assert app["app_label"] == "packages_app"
    listed = {m["object_name"]: "view" if m["view_only"] else "edit" for m in app["models"]}
    assert listed == models
