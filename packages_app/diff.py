"""Pure: what a publish changes at Kombo, from the last published body to the next one.

Kombo replaces the whole list, so a package missing from the next body is one Kombo marks
deleted for that customer: `removed` is what staff must see before they confirm.
"""
from dataclasses import dataclass, field

COMPARED_FIELDS = ("type", "name", "description")


@dataclass(frozen=True)
class FieldChange:
    field: str
    old: str
    new: str


@dataclass(frozen=True)
class ChangedPackage:
    id: str
    name: str
    changes: tuple

    @property
    def fields(self):
        return [c.field for c in self.changes]


@dataclass
class BodyDiff:
    added: list = field(default_factory=list)      # package entries (dicts)
    changed: list = field(default_factory=list)    # ChangedPackage
    removed: list = field(default_factory=list)    # package entries (dicts) as last published
    unchanged_count: int = 0
    previous_count: int = 0
    next_count: int = 0

    @property
    def has_changes(self):
        return bool(self.added or self.changed or self.removed)


def diff_bodies(previous, next_):
    """Compare two request bodies (`{"packages": [...]}`); `previous` may be None (never published)."""
    old = {p["id"]: p for p in (previous or {"packages": []})["packages"]}
    new = {p["id"]: p for p in next_["packages"]}
    result = BodyDiff(previous_count=len(old), next_count=len(new))
    for package_id in sorted(new):
        entry = new[package_id]
        before = old.get(package_id)
        if before is None:
            result.added.append(entry)
            continue
        changes = tuple(
            FieldChange(f, before.get(f) or "", entry.get(f) or "")
            for f in COMPARED_FIELDS
            if (before.get(f) or "") != (entry.get(f) or "")
        )
        if changes:
            result.changed.append(ChangedPackage(package_id, entry["name"], changes))
        else:
            result.unchanged_count += 1
    result.removed = [old[i] for i in sorted(old) if i not in new]
    return result
