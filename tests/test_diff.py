"""What a publish changes: added, changed field by field, removed, unchanged."""
from packages_app.diff import FieldChange, diff_bodies


def entry(i, type_="SKILLS_TEST", name=None, description="D"):
    return {"id": i, "type": type_, "name": name or f"Name {i}", "description": description}


def test_first_publish_adds_everything():
    d = diff_bodies(None, {"packages": [entry("2"), entry("1")]})
    assert [a["id"] for a in d.added] == ["1", "2"]
    assert d.changed == [] and d.removed == [] and d.unchanged_count == 0
    assert d.has_changes and d.previous_count == 0 and d.next_count == 2


def test_added_changed_removed_and_unchanged():
    old = {"packages": [entry("1"), entry("2"), entry("3", name="Old name", description="old")]}
    new = {"packages": [entry("1"), entry("3", name="New name", description="new", type_="BEHAVIORAL"), entry("4")]}
    d = diff_bodies(old, new)
    assert [a["id"] for a in d.added] == ["4"]
    assert [r["id"] for r in d.removed] == ["2"]
    assert d.unchanged_count == 1
    (changed,) = d.changed
    assert changed.id == "3" and changed.name == "New name"
    assert changed.changes == (
        FieldChange("type", "SKILLS_TEST", "BEHAVIORAL"),
        FieldChange("name", "Old name", "New name"),
        FieldChange("description", "old", "new"),
    )
    assert changed.fields == ["type", "name", "description"]


def test_identical_bodies_have_no_changes():
    body = {"packages": [entry("1"), entry("2")]}
    d = diff_bodies(body, body)
    assert not d.has_changes and d.unchanged_count == 2


def test_empty_list_removes_everything():
    d = diff_bodies({"packages": [entry("1"), entry("2")]}, {"packages": []})
    assert [r["id"] for r in d.removed] == ["1", "2"] and d.next_count == 0
