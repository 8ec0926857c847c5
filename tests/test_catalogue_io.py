"""Catalogue import and export: JSON in Kombo's shape and CSV; all rows checked, all or nothing."""
import json
from io import StringIO

import pytest
from django.contrib.admin.models import LogEntry
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.urls import reverse

from packages_app import catalogue_io
from packages_app.models import AssessmentPackage

pytestmark = pytest.mark.django_db

GOOD_JSON = json.dumps({"packages": [
    {"id": "1001", "type": "SKILLS_TEST", "name": "TypeScript", "description": "TypeScript coding skills"},
    {"id": "1002", "type": "VIDEO_INTERVIEW", "name": "Video Interview", "description": "Communication"},
]}).encode()

GOOD_CSV = (
    "id,type,name,description\n"
    "1001,SKILLS_TEST,TypeScript,TypeScript coding skills\n"
    '1002,VIDEO_INTERVIEW,"Video, Interview","Multi\nline"\n'
).encode()


def import_(data, **kw):
    return catalogue_io.catalogue_import(data=data, **kw)


def test_json_import_adds_then_updates_by_id(make_package):
    make_package("1001", name="Old name", description="TypeScript coding skills")
    result = import_(GOOD_JSON, filename="c.json")
    assert result.ok and result.added == ["1002"] and result.updated == ["1001"] and result.unchanged == 0
    assert AssessmentPackage.objects.get(package_id="1001").name == "TypeScript"
    again = import_(GOOD_JSON, filename="c.json")
    assert again.added == [] and again.updated == [] and again.unchanged == 2


def test_csv_import_with_quoted_commas_and_newlines():
    result = import_(GOOD_CSV, filename="c.csv")
    assert result.ok and result.added == ["1001", "1002"]
    p = AssessmentPackage.objects.get(package_id="1002")
    assert p.name == "Video, Interview" and p.description == "Multi\nline"


def test_every_bad_row_is_reported_and_nothing_is_written(make_package):
    make_package("keep", name="Unchanged")
    data = (
        "id,type,name,description\n"
        "ok1,SKILLS_TEST,Fine,Fine\n"
        "bad1,NOT_A_TYPE,Name,Desc\n"
        " padded ,SKILLS_TEST,Name,Desc\n"
        "ok1,SKILLS_TEST,Dup,Dup\n"
        "keep,SKILLS_TEST,,Desc\n"
        "short,SKILLS_TEST\n"
    ).encode()
    result = import_(data, filename="c.csv")
    assert not result.ok
    text = [str(e) for e in result.errors]
    assert text[0].startswith("line 3: type:") and "NOT_A_TYPE" in text[0]
    assert text[1].startswith("line 4: id:") and "spaces" in text[1]
    assert text[2] == 'line 5: id "ok1" is a duplicate of line 2'
    assert text[3].startswith("line 6: name:")
    assert text[4] == "line 7: expected 4 columns, found 2"
    assert result.summary() == "5 bad rows: nothing was imported."
    assert list(AssessmentPackage.objects.values_list("package_id", "name")) == [("keep", "Unchanged")]


def test_json_wrong_types_and_missing_fields():
    data = json.dumps({"packages": [
        {"id": 7, "type": "SKILLS_TEST", "name": "n", "description": "d"},
        {"id": "x", "type": "SKILLS_TEST", "name": "n"},
        "not an object",
        {"id": "y", "type": "SKILLS_TEST", "name": "n", "description": "d", "extra": 1},
    ]}).encode()
    result = import_(data, filename="c.json")
    assert [str(e) for e in result.errors] == [
        "packages[0]: id must be a string",
        "packages[1]: description is required",
        "packages[2]: must be an object with id, type, name and description",
        "packages[3]: unknown field: extra",
    ]
    assert not AssessmentPackage.objects.exists()


@pytest.mark.parametrize("data,message", [
    (b"{not json", "Not valid JSON"),
    (b'{"items": []}', 'an object with a "packages" list'),
    (b"name,description\nx,y\n", "missing: id, type"),
    (b"\xff\xfe\x00", "not UTF-8"),
])
def test_unreadable_files_are_refused_as_a_whole(data, message):
    with pytest.raises(catalogue_io.ImportFormatError, match=message):
        import_(data)


def test_export_round_trips_in_both_formats(make_package):
    make_package("b", name="Bé, \"quoted\"", description="line1\nline2")
    make_package("a", type="BEHAVIORAL")
    exported = catalogue_io.export_json()
    assert [p["id"] for p in json.loads(exported)["packages"]] == ["a", "b"]
    csv_text = catalogue_io.export_csv()
    assert csv_text.startswith("id,type,name,description\r\n")
    AssessmentPackage.objects.all().delete()
    assert import_(csv_text.encode(), filename="x.csv").added == ["a", "b"]
    assert catalogue_io.export_json() == exported


def test_import_is_recorded_in_history(make_package, superuser):
    make_package("1001", name="Old name", description="TypeScript coding skills")
    import_(GOOD_JSON, filename="c.json", user=superuser, via="import of c.json")
    entries = {e.object_repr: e for e in LogEntry.objects.all()}
    changed = entries["TypeScript (1001)"]
    assert changed.user == superuser
    assert changed.get_change_message() == 'Changed by import of c.json: name: "Old name" → "TypeScript".'
    assert entries["Video Interview (1002)"].get_change_message() == "Added by import of c.json."


def test_admin_import_and_export(client, superuser, editor):
    client.force_login(superuser)
    url = reverse("admin:packages_app_assessmentpackage_import")
    bad = client.post(url, {"file": SimpleUploadedFile("c.csv", b"id,type,name,description\nx,NOPE,n,d\n")})
    assert bad.status_code == 200 and b"line 2: type:" in bad.content and not AssessmentPackage.objects.exists()
    # First the preview: what the file adds, nothing written; then the confirm imports it.
    preview = client.post(url, {"file": SimpleUploadedFile("c.json", GOOD_JSON)})
    assert preview.status_code == 200 and [a[0] for a in preview.context["added"]] == ["1001", "1002"]
    assert not AssessmentPackage.objects.exists()
    good = client.post(url, {"confirm": preview.context["token"]}, follow=True)
    assert "Imported c.json: 2 added, 0 updated, 0 unchanged." in [str(m) for m in good.context["messages"]]
    assert AssessmentPackage.objects.count() == 2
    # A confirm is used once.
    again = client.post(url, {"confirm": preview.context["token"]}, follow=True)
    assert "no longer available" in " ".join(str(m) for m in again.context["messages"])
    export = client.get(reverse("admin:packages_app_assessmentpackage_export"), {"format": "csv"})
    assert export["Content-Type"].startswith("text/csv") and b"1001,SKILLS_TEST,TypeScript" in export.content
    # Viewers without add/change permission cannot import.
    from django.contrib.auth.models import Permission, User
    viewer = User.objects.create_user("viewer", password="x", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_assessmentpackage"))
    client.force_login(viewer)
    assert client.post(url, {"file": SimpleUploadedFile("c.json", GOOD_JSON)}).status_code == 403
    assert client.get(reverse("admin:packages_app_assessmentpackage_export")).status_code == 200


def test_commands(tmp_path):
    path = tmp_path / "catalogue.csv"
    path.write_bytes(GOOD_CSV)
    out = StringIO()
    call_command("import_packages", str(path), stdout=out)
    assert out.getvalue().strip() == "catalogue.csv: 2 added, 0 updated, 0 unchanged."
    bad = tmp_path / "bad.json"
    bad.write_text('{"packages": [{"id": "", "type": "SKILLS_TEST", "name": "n", "description": "d"}]}')
    err = StringIO()
    with pytest.raises(CommandError, match="1 bad row"):
        call_command("import_packages", str(bad), stderr=err)
    assert "bad.json packages[0]: id:" in err.getvalue()
    out = StringIO()
    call_command("export_packages", "--format", "json", stdout=out)
    assert json.loads(out.getvalue())["packages"][0]["id"] == "1001"
