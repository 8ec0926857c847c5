"""Package ids: one rule (no spaces, a few ASCII characters) for the form, the model and the import;
unique regardless of case, in the form (naming the package), the import and the database; a long
name is a warning, not a refusal; changing a published id asks first, naming who has it."""
import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.urls import reverse

from packages_app import catalogue_io, publishing, selectors
from packages_app.models import AssessmentPackage, Integration, validate_package_id

pytestmark = pytest.mark.django_db

ADD_URL = reverse("admin:packages_app_assessmentpackage_add")


def change_url(package):
    return reverse("admin:packages_app_assessmentpackage_change", args=[package.pk])


def package_form(package=None, **changes):
    data = {"package_id": "", "type": "SKILLS_TEST", "name": "A test", "description": "About it"}
    if package is not None:
        data.update(package_id=package.package_id, type=package.type, name=package.name,
                    description=package.description)
    data.update(changes)
    return data


# --- the rule ----------------------------------------------------------------------------------

@pytest.mark.parametrize("good", ["1001", "typescript_test", "big5-personality", "v2.1", "vendor:1001", "A"])
def test_ids_like_kombos_examples_are_accepted(good):
    validate_package_id(good)


@pytest.mark.parametrize("bad", ["id with spaces", "tab\there", "non\u00a0breaking", "é-accent", "-starts-with-dash",
                                 "=SUM(A1)", "slash/inside", ""])
def test_ids_with_spaces_or_other_characters_are_refused(bad):
    with pytest.raises(ValidationError):
        validate_package_id(bad)


def test_the_form_refuses_spaces_and_the_help_text_says_what_is_allowed(client, editor):
    client.force_login(editor)
    page = client.get(ADD_URL).content.decode()
    assert "Letters (A–Z, a–z), digits, and _ - . : only" in page and "Unique regardless of case" in page
    response = client.post(ADD_URL, package_form(package_id="id with spaces"))
    assert response.status_code == 200
    assert "Remove the spaces" in response.context["adminform"].form.errors["package_id"][0]
    assert not AssessmentPackage.objects.exists()


# --- unique regardless of case -----------------------------------------------------------------

def test_an_id_in_another_case_is_refused_naming_the_package(client, editor, make_package):
    make_package("big5-personality", name="Big Five")
    client.force_login(editor)
    response = client.post(ADD_URL, package_form(package_id="BIG5-Personality"))
    assert response.status_code == 200
    (error,) = response.context["adminform"].form.errors["package_id"]
    assert "already exists" in error and "Big Five (big5-personality)" in error
    assert AssessmentPackage.objects.count() == 1


def test_the_database_refuses_it_too(make_package):
    make_package("big5-personality")
    with pytest.raises(IntegrityError), transaction.atomic():
        AssessmentPackage.objects.create(package_id="BIG5-PERSONALITY", type="BEHAVIORAL", name="n", description="d")


def test_a_package_may_change_the_case_of_its_own_unpublished_id(client, editor, make_package):
    """Changing only the case of one's own (unpublished) id is allowed: it clashes with nobody."""
    package = make_package("big5")
    client.force_login(editor)
    response = client.post(change_url(package), package_form(package, package_id="BIG5"))
    assert response.status_code == 302
    assert AssessmentPackage.objects.get(pk=package.pk).package_id == "BIG5"


def test_the_import_applies_the_same_rule(make_package):
    make_package("big5-personality", name="Big Five")
    csv_text = ("id,type,name,description\r\n"
                "id with spaces,SKILLS_TEST,n,d\r\n"
                "BIG5-Personality,SKILLS_TEST,n,d\r\n"
                "new-one,SKILLS_TEST,n,d\r\n"
                "NEW-ONE,SKILLS_TEST,n,d\r\n")
    result = catalogue_io.catalogue_import(data=csv_text.encode(), filename="c.csv")
    reasons = {e.where: e.reason for e in result.errors}
    assert "Remove the spaces" in reasons["line 2"]
    assert "already exists" in reasons["line 3"] and "Big Five (big5-personality)" in reasons["line 3"]
    assert reasons["line 5"] == 'id "NEW-ONE" is a duplicate of line 4 ("new-one": ids are unique regardless of case)'
    assert list(AssessmentPackage.objects.values_list("package_id", flat=True)) == ["big5-personality"]


def test_the_import_still_updates_a_package_by_its_exact_id(make_package):
    make_package("big5", name="Old name")
    result = catalogue_io.catalogue_import(
        data=b'{"packages": [{"id": "big5", "type": "BEHAVIORAL", "name": "New name", "description": "d"}]}',
        filename="c.json")
    assert result.ok and result.updated == ["big5"]
    assert AssessmentPackage.objects.get(package_id="big5").name == "New name"


# --- long names --------------------------------------------------------------------------------

def test_a_long_name_is_saved_with_a_warning(client, editor):
    client.force_login(editor)
    long_name = "Comprehensive personality and workplace behaviour questionnaire"  # 63 characters
    response = client.post(ADD_URL, package_form(package_id="long-one", name=long_name), follow=True)
    assert AssessmentPackage.objects.filter(package_id="long-one", name=long_name).exists()
    texts = [str(m) for m in response.context["messages"]]
    assert any("63 characters long" in t and "about 50" in t for t in texts), texts
    page = client.get(change_url(AssessmentPackage.objects.get(package_id="long-one"))).content.decode()
    assert "kombo-name-warning" in page and 'data-shown-length="50"' in page


def test_a_short_name_gets_no_warning(client, editor):
    client.force_login(editor)
    response = client.post(ADD_URL, package_form(package_id="short", name="TypeScript"), follow=True)
    assert not any("characters long" in str(m) for m in response.context["messages"])


# --- changing a published id -------------------------------------------------------------------

@pytest.fixture
def published(sandbox, no_broker, make_package, make_integration):
    package = make_package("big5", name="Big Five")
    acme = make_integration([package], kombo_integration_id="recruitee:Acme1", name="Acme")
    beta = make_integration([package], kombo_integration_id="recruitee:Beta1", name="Beta")
    make_integration([package], kombo_integration_id="recruitee:Never1", name="Never published")
    for publication in publishing.publications_create(integrations=[acme, beta]):
        publishing.publication_execute(publication_id=publication.pk)
    return package, acme, beta


def test_changing_a_published_id_names_the_integrations_and_their_open_orders_and_asks(
        client, editor, published, sandbox):
    package, acme, beta = published
    sandbox.add_orders("recruitee:Acme1", package_id="big5", count=3)
    sandbox.add_orders("recruitee:Acme1", package_id="other", count=2)
    client.force_login(editor)
    page = client.get(change_url(package)).content.decode()
    assert "kombo-published-id-notice" in page and "Acme" in page and "Beta" in page
    assert "Never published" not in page.split("kombo-published-id-notice", 1)[1].split("</div>", 1)[0]
    assert 'type="hidden" name="confirm_id_change"' in page

    response = client.post(change_url(package), package_form(package, package_id="big5-v2"))
    assert response.status_code == 200
    (error,) = response.context["adminform"].form.errors["confirm_id_change"]
    assert "published to 2 integrations: Acme (recruitee:Acme1), Beta (recruitee:Beta1)" in error
    assert "removal plus an addition" in error
    assert "Acme (recruitee:Acme1) has 3 open orders" in error and "Beta" not in error.split("Open orders", 1)[1]
    assert 'type="checkbox" name="confirm_id_change"' in response.content.decode()
    assert AssessmentPackage.objects.get(pk=package.pk).package_id == "big5"

    response = client.post(change_url(package), package_form(package, package_id="big5-v2", confirm_id_change="on"))
    assert response.status_code == 302
    assert AssessmentPackage.objects.get(pk=package.pk).package_id == "big5-v2"


def test_when_orders_cannot_be_read_the_warning_says_so(client, editor, published, sandbox):
    from packages_app.sandbox import Fault

    package, _, _ = published
    for _ in range(2):
        sandbox.enqueue_fault(Fault(status=401, body={"status": "error", "error": {
            "code": "PLATFORM.AUTHENTICATION_INVALID", "title": "t", "message": "bad key", "log_url": None}}))
    client.force_login(editor)
    response = client.post(change_url(package), package_form(package, package_id="big5-v2"))
    (error,) = response.context["adminform"].form.errors["confirm_id_change"]
    assert "Open orders could not be read for: Acme (recruitee:Acme1)" in error


def test_an_unpublished_package_or_another_field_needs_no_tick(client, editor, published, make_package):
    package, _, _ = published
    client.force_login(editor)
    response = client.post(change_url(package), package_form(package, name="Big Five, renamed"))
    assert response.status_code == 302
    draft = make_package("draft")
    Integration.objects.get(name="Acme").packages.add(draft)  # offered, not yet published
    response = client.post(change_url(draft), package_form(draft, package_id="draft-2"))
    assert response.status_code == 302


def test_a_package_published_before_its_integration_moved_needs_no_tick(client, editor, published):
    package, acme, beta = published
    Integration.objects.filter(pk__in=[acme.pk, beta.pk]).update(region="US")
    client.force_login(editor)
    response = client.post(change_url(package), package_form(package, package_id="big5-v2"))
    assert response.status_code == 302


def test_the_integrations_holding_a_package_whether_in_sync_or_not(published, make_package):
    """In sync, Kombo holds the current body (no body read); changed since, Kombo holds the last
    accepted body, which is read; a package added after the last publish is not at Kombo."""
    package, acme, beta = published
    assert [i.name for i in selectors.integrations_holding_package(package=package)] == ["Acme", "Beta"]
    beta.packages.add(make_package("extra"))          # Beta changed since: its last body is read
    late = make_package("late", name="Late")
    acme.packages.add(late)                           # offered now, never published
    assert [i.name for i in selectors.integrations_holding_package(package=package)] == ["Acme", "Beta"]
    assert selectors.integrations_holding_package(package=late) == []
    beta.packages.remove(package)                     # no longer offered: not "holding" for the form
    assert [i.name for i in selectors.integrations_holding_package(package=package)] == ["Acme"]
