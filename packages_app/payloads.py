"""Pure functions from the catalogue to Kombo's request body, and its canonical bytes and hash.

The same catalogue always gives the same bytes: packages sorted by id, keys in the contract's
order, compact separators, UTF-8. That is what makes "in sync" a hash comparison and a re-run
of a publication byte-identical.
"""
import hashlib
import json

PACKAGE_FIELDS = ("id", "type", "name", "description")


def package_entry(values):
    """One package in Kombo's shape from `(package_id, type, name, description)`."""
    return dict(zip(PACKAGE_FIELDS, values))


def build_body(packages):
    """`{"packages": [...]}` for an iterable of AssessmentPackage, sorted by package id."""
    entries = [package_entry((p.package_id, p.type, p.name, p.description)) for p in packages]
    entries.sort(key=lambda e: e["id"])
    return {"packages": entries}


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def entry_bytes(entry):
    """The exact bytes of one package entry, keys in the contract's order."""
    return _ENCODER.encode({field: entry[field] for field in PACKAGE_FIELDS}).encode("utf-8")


def join_entries(parts):
    """The exact bytes of a body from its entries' bytes, in order: publishing many integrations
    at once encodes each package once, however many of them offer it."""
    return b'{"packages":[' + b",".join(parts) + b"]}"


def canonical_bytes(body):
    """The exact bytes to send for a body dict."""
    return join_entries([entry_bytes(entry) for entry in body["packages"]])


def body_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def parse_body(text):
    """A stored body (text) back to a dict."""
    return json.loads(text) if text else {"packages": []}
