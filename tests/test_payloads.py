"""Body building and hashing: deterministic bytes for the same catalogue."""
import hashlib
import json
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from packages_app import payloads
from packages_app.models import Integration


def pkg(package_id, type_="SKILLS_TEST", name="N", description="D"):
    return SimpleNamespace(package_id=package_id, type=type_, name=name, description=description)


def test_body_is_sorted_by_package_id_with_contract_fields():
    body = payloads.build_body([pkg("b"), pkg("a", "BEHAVIORAL", "Näme", "Désc")])
    assert body == {"packages": [
        {"id": "a", "type": "BEHAVIORAL", "name": "Näme", "description": "Désc"},
        {"id": "b", "type": "SKILLS_TEST", "name": "N", "description": "D"},
    ]}


def test_canonical_bytes_are_compact_utf8_in_field_order():
    body = payloads.build_body([pkg("1001", name="Café ☕")])
    data = payloads.canonical_bytes(body)
    assert data == '{"packages":[{"id":"1001","type":"SKILLS_TEST","name":"Café ☕","description":"D"}]}'.encode()
    assert json.loads(data) == body


def test_same_catalogue_in_any_order_gives_same_bytes_and_hash():
    a = payloads.canonical_bytes(payloads.build_body([pkg("x"), pkg("y"), pkg("z")]))
    b = payloads.canonical_bytes(payloads.build_body([pkg("z"), pkg("x"), pkg("y")]))
    assert a == b
    assert payloads.body_sha256(a) == hashlib.sha256(a).hexdigest() == payloads.body_sha256(b)


def test_key_order_of_input_dict_does_not_matter():
    shuffled = {"packages": [{"description": "D", "name": "N", "type": "SKILLS_TEST", "id": "1"}]}
    ordered = {"packages": [{"id": "1", "type": "SKILLS_TEST", "name": "N", "description": "D"}]}
    assert payloads.canonical_bytes(shuffled) == payloads.canonical_bytes(ordered)


def test_any_field_change_changes_the_hash():
    base = payloads.body_sha256(payloads.canonical_bytes(payloads.build_body([pkg("1")])))
    for changed in (pkg("2"), pkg("1", type_="BEHAVIORAL"), pkg("1", name="M"), pkg("1", description="E")):
        other = payloads.body_sha256(payloads.canonical_bytes(payloads.build_body([changed])))
        assert other != base


def test_empty_catalogue_and_parse_round_trip():
    data = payloads.canonical_bytes(payloads.build_body([]))
    assert data == b'{"packages":[]}'
    assert payloads.parse_body(data.decode()) == {"packages": []}
    assert payloads.parse_body("") == {"packages": []}


# --- bodies for many integrations at once ----------------------------------------------------

_text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30)


@given(st.lists(st.tuples(_text, st.sampled_from(["SKILLS_TEST", "BEHAVIORAL"]), _text, _text),
                max_size=8, unique_by=lambda row: row[0]))
def test_canonical_bytes_are_one_json_document_of_the_ordered_body(rows):
    """The entry-by-entry encoding is exactly the single json.dumps the format was defined by."""
    body = payloads.build_body([pkg(*row) for row in rows])
    ordered = {"packages": [{f: e[f] for f in payloads.PACKAGE_FIELDS} for e in body["packages"]]}
    assert payloads.canonical_bytes(body) == json.dumps(ordered, ensure_ascii=False, separators=(",", ":")).encode()


@pytest.mark.django_db
def test_plans_for_many_integrations_equal_each_integrations_own_plan(make_package, make_integration):
    from packages_app import publishing

    packages = [make_package("b-2", name='Quote " and \\ backslash', description="Line\nbreak, ünïcödé, 漢字"),
                make_package("a-1"), make_package("C-3", name="Emoji 🎯"), make_package("a-10")]
    integrations = [make_integration(packages), make_integration(packages[:2]), make_integration([]),
                    make_integration(packages[2:])]
    many = publishing.publication_plans(integrations=integrations)
    for integration, plan in zip(integrations, many):
        one = publishing.publication_plan(integration=Integration.objects.get(pk=integration.pk))
        assert (plan.body, plan.body_bytes, plan.sha256) == (one.body, one.body_bytes, one.sha256)
    assert many[2].body_bytes == b'{"packages":[]}'
