"""Bad input, generated: random unicode, control characters, very long strings, padding and wrong
types thrown at the package and integration add forms and at the catalogue import (the function
and the admin page), in JSON and CSV.

Properties: never a 500; a refused form names at least one error; a refused import writes nothing
and every error has a reason; an accepted one leaves only valid rows. Each example runs in a
savepoint that is rolled back, so examples do not see each other's rows.

Inputs that once crashed the import have tests of their own at the end (NUL in an id, lone
surrogates, deep nesting, huge integers, long descriptions, carriage returns in CSV exports,
Unicode line breaks in single-line fields), and the generators produce them too.
"""
import csv
import io
import json
import os
from contextlib import contextmanager

import pytest
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction
from django.forms import modelform_factory
from django.urls import reverse
from hypothesis import HealthCheck, event, example, given
from hypothesis import settings as fuzz_settings
from hypothesis import strategies as st

from packages_app import catalogue_io
from packages_app.models import AssessmentPackage, Integration, PackageType, Region

pytestmark = pytest.mark.django_db

# FUZZ_EXAMPLES=1000 for a longer hunt; 40 keeps the file well under a minute.
fuzz = fuzz_settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", 40)), deadline=None, database=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])

PACKAGE_ADD = reverse("admin:packages_app_assessmentpackage_add")
INTEGRATION_ADD = reverse("admin:packages_app_integration_add")
IMPORT_URL = reverse("admin:packages_app_assessmentpackage_import")


class _Rollback(Exception):
    pass


@contextmanager
def rolled_back():
    """Run one example in a savepoint and undo it, whatever it wrote (or broke)."""
    try:
        with transaction.atomic():
            yield
            raise _Rollback
    except _Rollback:
        pass


@pytest.fixture
def admin_client(client, superuser):
    client.force_login(superuser)  # outside the examples' savepoints: the session survives them
    return client


def package_rows():
    return sorted(AssessmentPackage.objects.values_list("package_id", "type", "name", "description"))


# --- generators --------------------------------------------------------------------------------

# The test client cannot send lone surrogates (they are not UTF-8), so form fields never hold one.
ANY_CHAR = st.characters(exclude_categories=["Cs"])
ODD_CHARS = st.sampled_from([
    "\x00", "\t", "\n", "\r", "\x0b", "\x1b", "\x7f",          # C0 controls and DEL
    "\x85", "\x9b", "\u2028", "\u2029",                       # C1 controls, Unicode line breaks
    "\u200b", "\u200e", "\u202e", "\ufeff", "\xa0", "\u3000",  # invisible, bidi, BOM, odd spaces
    "\u0301", "😀", "𝔘", "ß", "İ", ",", '"', ";", "'", "\\", "<", "&",
])
SPACES = st.sampled_from(["", " ", "  ", "\t", "\n", "\r\n", "\xa0", "\u3000", "\u2003"])
SAMPLES = st.sampled_from([
    "", " ", "1001", "null", "None", "0", "-1", "true", "[]", "{}", "<script>alert(1)</script>",
    "' OR 1=1 --", "Robert'); DROP TABLE packages_app_assessmentpackage;--", "%s%n", "${jndi:x}",
    "=HYPERLINK(\"http://x\")", "e\u0301", "\u202egnp.exe", "recruitee:Abc", "a" * 101, "b" * 201,
])


def text(exclude=""):
    """Strings that are wrong in as many ways as we can think of."""
    chars = st.one_of(ANY_CHAR, ODD_CHARS).filter(lambda c: c not in exclude)
    short = st.text(chars, max_size=25)
    return st.one_of(
        st.text(ANY_CHAR.filter(lambda c: c not in exclude), max_size=25),
        short,
        st.builds(lambda left, s, right: left + s + right, SPACES, short, SPACES),    # padded
        st.builds(lambda c, n: c * n, chars, st.integers(90, 4500)),                  # very long
        SAMPLES.filter(lambda s: not set(s) & set(exclude)),
    )


def printable_words(min_size=1, max_size=40):
    """Text a person would type: it must be accepted."""
    return st.text(st.characters(categories=["L", "N", "P", "S", "Zs"], exclude_characters="\xa0\u3000"),
                   min_size=min_size, max_size=max_size).map(str.strip).filter(bool)


PACKAGE_TYPES = st.sampled_from(PackageType.values)
VALID_ID = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,20}", fullmatch=True)


def form_value(strategy):
    """A form value, or the wrong kind of one: several values, a file, or none at all."""
    return st.one_of(
        strategy, strategy, strategy,
        st.lists(strategy, min_size=2, max_size=3),
        st.builds(lambda: SimpleUploadedFile("x.txt", b"a file where text belongs")),
        st.none(),
    )


def as_post(data):
    return {k: v for k, v in data.items() if v is not None}


def last_value(value):
    return value[-1] if isinstance(value, list) else value


# --- the package add form ------------------------------------------------------------------------

@st.composite
def package_forms(draw):
    """A form a person could submit, with none, some or all of its fields replaced by bad input."""
    form = {"package_id": draw(VALID_ID), "type": draw(PACKAGE_TYPES), "name": draw(printable_words()),
            "description": draw(printable_words(max_size=200))}
    bad = {"package_id": st.one_of(text(), VALID_ID), "type": st.one_of(PACKAGE_TYPES, text()),
           "name": text(), "description": text()}
    for field in draw(st.lists(st.sampled_from(sorted(form)), unique=True, max_size=4)):
        form[field] = draw(form_value(bad[field]))
    return form


@fuzz
@given(form=package_forms())
@example(form={"package_id": "bad\x00id", "type": "SKILLS_TEST", "name": "n", "description": "d"})
@example(form={"package_id": "  padded  ", "type": "SKILLS_TEST", "name": "\u3000name\u3000", "description": "d\r\n"})
@example(form={"package_id": "x" * 101, "type": "NOT_A_TYPE", "name": "y" * 201, "description": "z" * 4001})
@example(form={"package_id": ["a", "b"], "type": None, "name": "", "description": " "})
def test_package_add_form_never_fails_and_explains_every_refusal(admin_client, form):
    with rolled_back():
        before = package_rows()
        response = admin_client.post(PACKAGE_ADD, as_post(form))
        assert response.status_code in (200, 302)
        event(f"package form: {response.status_code}")
        if response.status_code == 200:
            assert response.context["adminform"].form.errors
            assert package_rows() == before
        else:
            (package,) = AssessmentPackage.objects.all()
            package.full_clean()
            # What was typed, minus the surrounding whitespace Django's form strips.
            assert package.package_id == last_value(form["package_id"]).strip()
            assert package.name == last_value(form["name"]).strip()


@fuzz
@given(package_id=VALID_ID, type_=PACKAGE_TYPES, name=printable_words(), description=printable_words(max_size=400))
def test_package_add_form_accepts_what_a_person_would_type(admin_client, package_id, type_, name, description):
    with rolled_back():
        response = admin_client.post(PACKAGE_ADD, {"package_id": package_id, "type": type_, "name": name,
                                                   "description": description})
        assert response.status_code == 302, response.context and response.context["adminform"].form.errors
        assert package_rows() == [(package_id, type_, name, description)]


# --- the integration add form --------------------------------------------------------------------

KOMBO_ID_VALID = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,15}:[A-Za-z0-9_.-]{1,30}", fullmatch=True)
KOMBO_ID = st.one_of(
    KOMBO_ID_VALID,
    st.builds(lambda a, b: f"{a}:{b}", text(), text()),
    text(),
)


@st.composite
def integration_forms(draw):
    form = {"name": draw(printable_words()), "kombo_integration_id": draw(KOMBO_ID_VALID),
            "region": draw(st.sampled_from(Region.values)), "is_active": "on", "packages": "existing"}
    bad = {
        "name": text(),
        "kombo_integration_id": KOMBO_ID,
        "region": text(),
        "is_active": st.one_of(st.sampled_from(["true", "false", "0", ""]), text()),
        "packages": st.lists(st.one_of(st.integers(-5, 10 ** 25), text()), max_size=3),
    }
    for field in draw(st.lists(st.sampled_from(sorted(form)), unique=True, max_size=5)):
        form[field] = draw(form_value(bad[field]))
    return form


@fuzz
@given(form=integration_forms())
@example(form={"name": "Acme\x00", "kombo_integration_id": "recruitee:abc\n", "region": "EU",
               "is_active": "on", "packages": None})
@example(form={"name": "  Acme  ", "kombo_integration_id": "  recruitee:abc  ", "region": "US",
               "is_active": "on", "packages": "existing"})
@example(form={"name": "Acme", "kombo_integration_id": "recruitee:abc", "region": "EU",
               "is_active": "on", "packages": ["99999999999999999999999", "1e3", "-1"]})
def test_integration_add_form_never_fails_and_explains_every_refusal(admin_client, make_package, form):
    with rolled_back():
        existing = make_package()
        if form["packages"] == "existing":
            form = {**form, "packages": [existing.pk]}
        before = Integration.objects.count()
        response = admin_client.post(INTEGRATION_ADD, as_post(form))
        assert response.status_code in (200, 302)
        event(f"integration form: {response.status_code}")
        if response.status_code == 200:
            assert response.context["adminform"].form.errors
            assert Integration.objects.count() == before
        else:
            (integration,) = Integration.objects.all()
            integration.full_clean()
            assert integration.kombo_integration_id == last_value(form["kombo_integration_id"]).strip()
            assert "\n" not in integration.kombo_integration_id


# --- the catalogue import: generated files -------------------------------------------------------

# NUL in an id and lone surrogates in JSON (built with ensure_ascii, so "\ud800" escapes) included.
ID_TEXT = st.one_of(st.sampled_from(["1001", "1002"]), VALID_ID, text(), st.just("a\x00b"),
                    st.just("\ud800"))
FIELD_TEXT = st.one_of(text(), printable_words())
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10 ** 30, 10 ** 30),
                    st.floats(allow_nan=False, allow_infinity=False), text(), st.just("x\ud800"))
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)), max_leaves=6)

GOOD_ROW = st.fixed_dictionaries({"id": st.one_of(VALID_ID, st.sampled_from(["1001", "1002"])),
                                  "type": PACKAGE_TYPES, "name": printable_words(),
                                  "description": printable_words(max_size=200)})
JSON_ROW = st.one_of(
    GOOD_ROW, GOOD_ROW,
    st.fixed_dictionaries({"id": ID_TEXT, "type": st.one_of(PACKAGE_TYPES, text()), "name": FIELD_TEXT,
                           "description": FIELD_TEXT},
                          optional={"extra": JSON_VALUES, "updated_at": JSON_VALUES}),
    st.dictionaries(st.sampled_from(["id", "type", "name", "description", "ID", ""]),
                    st.one_of(JSON_VALUES, ID_TEXT), max_size=5),   # missing fields, wrong types
    JSON_VALUES,                                                    # not an object at all
)
GOOD_ROWS = st.lists(GOOD_ROW, max_size=5, unique_by=lambda r: r["id"])


@st.composite
def one_bad_row(draw, bad_row):
    """Good rows with one bad row somewhere among them."""
    rows = draw(GOOD_ROWS)
    rows.insert(draw(st.integers(0, len(rows))), draw(bad_row))
    return rows


JSON_DOCUMENT = st.one_of(
    st.fixed_dictionaries({"packages": GOOD_ROWS}),
    st.fixed_dictionaries({"packages": one_bad_row(JSON_ROW)}),
    st.fixed_dictionaries({"packages": st.lists(JSON_ROW, max_size=5)}),
    st.fixed_dictionaries({"packages": st.lists(JSON_ROW, max_size=5)}, optional={"other": JSON_VALUES}),
    JSON_VALUES,
)
CSV_HEADERS = st.one_of(
    st.permutations(["id", "type", "name", "description"]),
    st.just(["Package_ID", " Type ", "NAME", "description"]),
    st.lists(st.sampled_from(["id", "type", "name", "description", "extra", "", "ID"]), max_size=6),
)
CSV_CELL = st.one_of(FIELD_TEXT, PACKAGE_TYPES, VALID_ID)


@st.composite
def json_files(draw):
    document = draw(JSON_DOCUMENT)
    # A lone surrogate can only travel as a \ud800 escape (ensure_ascii); UTF-8 cannot carry it.
    ascii_only = draw(st.booleans()) or "\\ud800" in json.dumps(document)
    data = json.dumps(document, ensure_ascii=ascii_only).encode()
    if draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data  # a BOM, as Excel and Notepad write
    return document, data


@st.composite
def csv_files(draw):
    header = draw(st.one_of(st.just(["id", "type", "name", "description"]), CSV_HEADERS))
    good = [[row.get({"package_id": "id"}.get(h.strip().lower(), h.strip().lower()), "")
             for h in header] for row in draw(GOOD_ROWS)]
    bad = st.one_of(
        st.lists(CSV_CELL, min_size=len(header), max_size=len(header)),
        st.lists(CSV_CELL, max_size=6),                      # the wrong number of columns
    )
    rows = draw(st.one_of(st.just(good), st.builds(lambda g, b, i: g[:i] + [b] + g[i:], st.just(good), bad,
                                                   st.integers(0, len(good))), st.lists(bad, max_size=5)))
    out = io.StringIO()
    writer = csv.writer(out, quoting=draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL])))
    writer.writerow(header)
    writer.writerows(rows)
    return header, rows, out.getvalue().encode("utf-8")


RAW_FILES = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200).map(lambda s: s.encode("utf-8")),
    st.sampled_from([b"", b"\n", b"{", b"[]", b'{"packages": null}', b'{"packages": {}}', b"id,type\n",
                     b"\xef\xbb\xbf", b"\xff\xfe{\x00}\x00", b'"', b"id,type,name,description\n\"unclosed",
                     b"id,type,name,description\n" + b"x" * 200000]),
)


def check_import(call):
    """Run one import and check the properties whatever its outcome."""
    before = package_rows()
    try:
        result = call()
    except catalogue_io.ImportFormatError as exc:
        event("import: file refused")
        assert str(exc).strip()
        assert package_rows() == before
        return None
    event("import: " + ("rows refused" if result.errors else "accepted"))
    if not result.ok:
        assert result.errors and result.added == [] and result.updated == []
        for error in result.errors:
            assert error.where.strip() and error.reason.strip(), error
        assert result.summary().endswith("nothing was imported.")
        assert package_rows() == before
        return result
    for package in AssessmentPackage.objects.all():
        package.full_clean()
    assert len(package_rows()) == len(before) + len(result.added)
    return result


def _seed():
    AssessmentPackage.objects.create(package_id="1001", type="SKILLS_TEST", name="TypeScript",
                                     description="TypeScript coding skills")
    AssessmentPackage.objects.create(package_id="1002", type="BEHAVIORAL", name="Teamwork",
                                     description="Working with others")


@fuzz
@given(file=json_files(), filename=st.sampled_from(["c.json", "C.JSON", "catalogue", "c.txt"]))
def test_json_import_writes_all_or_nothing(db, file, filename):
    document, data = file
    with rolled_back():
        _seed()
        result = check_import(lambda: catalogue_io.catalogue_import(data=data, filename=filename))
        if result is not None and result.ok:
            for row in document["packages"]:
                assert AssessmentPackage.objects.filter(
                    package_id=row["id"], type=row["type"], name=row["name"], description=row["description"]
                ).exists()


@fuzz
@given(file=csv_files(), filename=st.sampled_from(["c.csv", "C.CSV", "catalogue", "c.txt"]))
def test_csv_import_writes_all_or_nothing(db, file, filename):
    header, rows, data = file
    with rolled_back():
        _seed()
        result = check_import(lambda: catalogue_io.catalogue_import(data=data, filename=filename, fmt="csv"))
        if result is not None and result.ok:
            columns = [{"package_id": "id"}.get(h.strip().lower(), h.strip().lower()) for h in header]
            for row in rows:
                if any(v.strip() for v in row):
                    values = dict(zip(columns, row))
                    assert AssessmentPackage.objects.filter(
                        package_id=values["id"], type=values["type"], name=values["name"],
                        description=values["description"]).exists()


@fuzz
@given(data=RAW_FILES, filename=st.sampled_from(["c.json", "c.csv", "c", ""]))
def test_any_bytes_are_refused_cleanly_or_imported(db, data, filename):
    with rolled_back():
        _seed()
        check_import(lambda: catalogue_io.catalogue_import(data=data, filename=filename))


@fuzz
@given(rows=st.lists(GOOD_ROW, min_size=1, max_size=4, unique_by=lambda r: r["id"]),
       copy=st.data(), fmt=st.sampled_from(["json", "csv"]))
def test_duplicate_ids_are_refused(db, rows, copy, fmt):
    original = copy.draw(st.sampled_from(rows))
    duplicate = {**copy.draw(GOOD_ROW), "id": original["id"]}
    rows = rows[:]
    rows.insert(copy.draw(st.integers(rows.index(original) + 1, len(rows))), duplicate)
    if fmt == "json":
        data = json.dumps({"packages": rows}).encode()
    else:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=["id", "type", "name", "description"])
        writer.writeheader()
        writer.writerows(rows)
        data = out.getvalue().encode()
    with rolled_back():
        _seed()
        before = package_rows()
        result = catalogue_io.catalogue_import(data=data, fmt=fmt)
        assert not result.ok
        assert [e.reason for e in result.errors if "duplicate" in e.reason] == [
            f'id "{original["id"]}" is a duplicate of {"packages" if fmt == "json" else "line "}'
            f'{"[%d]" % rows.index(original) if fmt == "json" else rows.index(original) + 2}']
        assert package_rows() == before


@fuzz
@given(rows=st.lists(GOOD_ROW, max_size=5, unique_by=lambda r: r["id"]))
def test_export_then_import_changes_nothing(db, rows):
    """What the catalogue exports, it imports again unchanged, in both formats."""
    with rolled_back():
        assert catalogue_io.catalogue_import(data=json.dumps({"packages": rows}).encode(), fmt="json").ok
        snapshot = package_rows()
        for fmt, content in (("json", catalogue_io.export_json()), ("csv", catalogue_io.export_csv())):
            result = catalogue_io.catalogue_import(data=content.encode(), fmt=fmt)
            assert result.ok and result.added == [] and result.updated == []
            assert result.unchanged == len(snapshot) and package_rows() == snapshot


# --- the catalogue import page ---------------------------------------------------------------------

UPLOADS = st.one_of(
    json_files().map(lambda f: f[1]),
    csv_files().map(lambda f: f[2]),
    json_files().map(lambda f: f[1]),
    RAW_FILES,
)


@fuzz
@given(data=UPLOADS, filename=st.sampled_from(["c.json", "c.csv", "c.txt", "catalogue", "x" * 200 + ".csv",
                                               "ü ñ 😀.json", "../../etc/passwd"]),
       fmt=st.one_of(st.sampled_from(["", "", "", "json", "csv"]), text(exclude="\x00")))
def test_import_page_never_fails_and_explains_every_refusal(admin_client, data, filename, fmt):
    with rolled_back():
        _seed()
        before = package_rows()
        response = admin_client.post(IMPORT_URL, {"file": SimpleUploadedFile(filename, data), "format": fmt})
        assert response.status_code in (200, 302)
        event(f"import page: {response.status_code}")
        if response.status_code == 200:
            # A refusal that says why, or the preview of a file that can be imported (nothing
            # written until it is confirmed).
            result = response.context.get("result")
            previewed = response.context.get("preview") and result is not None and result.ok
            assert response.context["form"].errors or (result and result.errors) or previewed
            if result:
                assert all(e.reason.strip() for e in result.errors)
            assert package_rows() == before
        else:
            assert response.url == reverse("admin:packages_app_assessmentpackage_changelist")
            for package in AssessmentPackage.objects.all():
                package.full_clean()


def test_import_page_without_a_file_says_so(admin_client):
    response = admin_client.post(IMPORT_URL, {"format": "json"})
    assert response.status_code == 200 and response.context["form"].errors["file"]
    empty = admin_client.post(IMPORT_URL, {"file": SimpleUploadedFile("c.json", b"")})
    assert empty.status_code == 200 and "empty" in empty.context["form"].errors["file"][0]


# --- known crashes and gaps (each one a bug, see the reasons) ------------------------------------------

def _post_import(admin_client, data, filename):
    return admin_client.post(IMPORT_URL, {"file": SimpleUploadedFile(filename, data)})


@pytest.mark.parametrize("filename,data", [
    ("c.json", json.dumps({"packages": [{"id": "a\x00b", "type": "SKILLS_TEST", "name": "n",
                                         "description": "d"}]}).encode()),
    ("c.csv", b"id,type,name,description\na\x00b,SKILLS_TEST,n,d\n"),
], ids=["json", "csv"])
def test_nul_in_an_id_is_a_row_error_not_a_500(admin_client, filename, data):
    response = _post_import(admin_client, data, filename)
    assert response.status_code == 200 and response.context["result"].errors
    assert not AssessmentPackage.objects.exists()


@pytest.mark.parametrize("field", ["id", "name", "description"])
def test_lone_surrogates_in_json_are_a_row_error_not_a_500(admin_client, field):
    row = {"id": "x1", "type": "SKILLS_TEST", "name": "n", "description": "d"}
    data = json.dumps({"packages": [row]}).replace(f'"{row[field]}"', '"a\\ud800b"', 1).encode()
    response = _post_import(admin_client, data, "c.json")
    assert response.status_code == 200
    assert not AssessmentPackage.objects.exists()


def test_deeply_nested_json_is_refused_not_a_500(admin_client):
    response = _post_import(admin_client, b"[" * 100_000, "c.json")
    assert response.status_code == 200 and response.context["form"].errors["file"]


def test_a_huge_integer_in_json_is_refused_not_a_500(admin_client):
    data = b'{"packages": [], "n": 1' + b"0" * 5000 + b"}"
    response = _post_import(admin_client, data, "c.json")
    assert response.status_code == 200 and response.context["form"].errors["file"]


def test_import_refuses_descriptions_the_admin_form_refuses(db):
    row = {"id": "long", "type": "SKILLS_TEST", "name": "n", "description": "d" * 4001}
    form = modelform_factory(AssessmentPackage, fields=["package_id", "type", "name", "description"])(
        data={**row, "package_id": row["id"]})
    assert not form.is_valid() and "description" in form.errors  # the admin refuses it
    result = catalogue_io.catalogue_import(data=json.dumps({"packages": [row]}).encode(), fmt="json")
    assert not result.ok and "description" in str(result.errors[0])
    assert not AssessmentPackage.objects.exists()


def test_csv_export_of_line_breaks_imports_back_and_lone_carriage_returns_are_refused(db):
    AssessmentPackage.objects.create(package_id="crlf", type="SKILLS_TEST", name="n", description="first\r\nsecond")
    result = catalogue_io.catalogue_import(data=catalogue_io.export_csv().encode(), fmt="csv")
    assert result.ok and result.unchanged == 1, [str(e) for e in result.errors]
    lone = AssessmentPackage(package_id="cr", type="SKILLS_TEST", name="n", description="first\rsecond")
    with pytest.raises(ValidationError):
        lone.full_clean()


@pytest.mark.parametrize("char", ["\x85", "\x9b", "\u2028", "\u2029"], ids=["NEL", "CSI", "LS", "PS"])
def test_single_line_fields_refuse_every_line_break_and_control_character(admin_client, char):
    response = admin_client.post(PACKAGE_ADD, {"package_id": f"a{char}b", "type": "SKILLS_TEST",
                                               "name": f"first{char}second", "description": "d"})
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "package_id" in errors and "name" in errors
