"""Pure functions from the catalogue to Kombo's request body, and its canonical bytes and hash.

The same catalogue always gives the same bytes: packages sorted by id, keys in the contract's
order, compact separators, UTF-8. That is what makes "in sync" a hash comparison and a re-run
of a publication byte-identical.
"""
import hashlib
import json

PACKAGE_FIELDS = ("id", "type", "name", "description")


def package_entry(package):
    """One package in Kombo's shape, from a model instance or anything with the same attributes."""
    return {
        "id": package.package_id,
        "type": package.type,
        "name": package.name,
        "description": package.description,
    }


def build_body(packages):
    """`{"packages": [...]}` for an iterable of AssessmentPackage, sorted by package id."""
    entries = [package_entry(p) for p in packages]
    entries.sort(key=lambda e: e["id"])
    return {"packages": entries}


def canonical_bytes(body):
    """The exact bytes to send for a body dict."""
    ordered = {
        "packages": [{field: entry[field] for field in PACKAGE_FIELDS} for entry in body["packages"]]
    }
    return json.dumps(ordered, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def body_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def parse_body(text):
    """A stored body (text) back to a dict."""
    return json.loads(text) if text else {"packages": []}
