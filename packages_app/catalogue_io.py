"""Catalogue import and export, as JSON in Kombo's request shape (`{"packages": [...]}`) or CSV
with the same four columns. An import checks every row before it writes any: all or nothing."""
import csv
import io
import json
from dataclasses import dataclass, field

from django.core.exceptions import ValidationError
from django.db import transaction

from . import history, payloads
from .models import AssessmentPackage

COLUMNS = ("id", "type", "name", "description")
MAX_IMPORT_BYTES = 10 * 1024 * 1024


class ImportFormatError(ValueError):
    """The file as a whole cannot be read (not JSON, no header, wrong shape)."""


@dataclass
class RowError:
    where: str      # "line 4" (CSV) or "packages[3]" (JSON)
    reason: str

    def __str__(self):
        return f"{self.where}: {self.reason}"


@dataclass
class ImportResult:
    errors: list = field(default_factory=list)
    added: list = field(default_factory=list)
    updated: list = field(default_factory=list)
    unchanged: int = 0

    @property
    def ok(self):
        return not self.errors

    def summary(self):
        if self.errors:
            return f"{len(self.errors)} bad row(s): nothing was imported."
        return (f"{len(self.added)} added, {len(self.updated)} updated, "
                f"{self.unchanged} unchanged.")


# --- export ----------------------------------------------------------------------------------

def export_json(packages=None):
    packages = AssessmentPackage.objects.all() if packages is None else packages
    body = payloads.build_body(packages)
    return json.dumps(body, ensure_ascii=False, indent=2) + "\n"


def export_csv(packages=None):
    packages = AssessmentPackage.objects.all() if packages is None else packages
    out = io.StringIO()
    # RFC 4180 line ends: a field holding any \r or \n is then quoted and reads back whole.
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for entry in payloads.build_body(packages)["packages"]:
        writer.writerow([entry[c] for c in COLUMNS])
    return out.getvalue()


# --- import ----------------------------------------------------------------------------------

def detect_format(filename, text):
    name = (filename or "").lower()
    if name.endswith(".json"):
        return "json"
    if name.endswith(".csv"):
        return "csv"
    return "json" if text.lstrip().startswith(("{", "[")) else "csv"


def decode(data: bytes):
    if len(data) > MAX_IMPORT_BYTES:
        raise ImportFormatError(f"The file is larger than {MAX_IMPORT_BYTES // (1024 * 1024)} MiB.")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportFormatError(f"The file is not UTF-8 text (byte {exc.start}).") from None


def parse_json(text):
    """[(where, row dict)] from Kombo's request shape."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ImportFormatError(f"Not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}.") from None
    except RecursionError:
        raise ImportFormatError("Not valid JSON for a catalogue: nested too deeply.") from None
    except ValueError as exc:  # e.g. an integer literal longer than Python converts
        raise ImportFormatError(f"Not valid JSON for a catalogue: {exc}.") from None
    if not isinstance(document, dict) or not isinstance(document.get("packages"), list):
        raise ImportFormatError('The JSON must be an object with a "packages" list, as Kombo receives it.')
    return [(f"packages[{i}]", row) for i, row in enumerate(document["packages"])]


def parse_csv(text):
    """[(where, row dict)] from a CSV with an id,type,name,description header."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise ImportFormatError("The CSV file is empty.") from None
    except csv.Error as exc:
        raise ImportFormatError(f"Not valid CSV: {exc}.") from None
    header = [h.strip().lower() for h in header]
    header = ["id" if h == "package_id" else h for h in header]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise ImportFormatError(
            f"The CSV header must name the columns {', '.join(COLUMNS)}; missing: {', '.join(missing)}."
        )
    rows = []
    try:
        for values in reader:
            line = reader.line_num
            if not any(v.strip() for v in values):
                continue
            if len(values) != len(header):
                rows.append((f"line {line}", ValueError(
                    f"expected {len(header)} columns, found {len(values)}")))
                continue
            rows.append((f"line {line}", dict(zip(header, values))))
    except csv.Error as exc:
        raise ImportFormatError(f"Not valid CSV at line {reader.line_num}: {exc}.") from None
    return rows


def _storable(value):
    """A string PostgreSQL can store and compare: no NUL, valid UTF-8."""
    if not isinstance(value, str) or "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _validate(rows):
    """Model instances ready to save, or the errors of every bad row."""
    errors, instances, seen = [], [], {}
    # Only ids the database can hold are looked up; the others fail validation below.
    lookup = [r.get("id") for _, r in rows if isinstance(r, dict) and _storable(r.get("id"))]
    existing = {p.package_id: p for p in AssessmentPackage.objects.filter(package_id__in=lookup)}
    for where, row in rows:
        if isinstance(row, Exception):
            errors.append(RowError(where, str(row)))
            continue
        if not isinstance(row, dict):
            errors.append(RowError(where, "must be an object with id, type, name and description"))
            continue
        problems = [f"{c} is required" for c in COLUMNS if c not in row or row[c] is None]
        problems += [f"{c} must be a string" for c in COLUMNS
                     if row.get(c) is not None and not isinstance(row[c], str)]
        unknown = sorted(set(row) - set(COLUMNS))
        if unknown:
            problems.append(f"unknown field(s): {', '.join(map(str, unknown))}")
        if problems:
            errors.append(RowError(where, "; ".join(problems)))
            continue
        package_id = row["id"]
        if package_id in seen:
            errors.append(RowError(where, f'id "{package_id}" is a duplicate of {seen[package_id]}'))
            continue
        seen[package_id] = where
        current = existing.get(package_id)
        candidate = AssessmentPackage(
            pk=current.pk if current else None, package_id=package_id, type=row["type"],
            name=row["name"], description=row["description"],
        )
        try:
            candidate.full_clean(validate_unique=False)
        except ValidationError as exc:
            reasons = [f"{name if name != '__all__' else 'row'}: {' '.join(messages)}"
                       for name, messages in exc.message_dict.items()]
            errors.append(RowError(where, "; ".join(reasons).replace("package_id:", "id:")))
            continue
        instances.append((candidate, current))
    return errors, instances


def catalogue_import(*, data: bytes, filename="", fmt=None, user=None, via="import"):
    """Validate every row, then add new packages and update existing ones (matched by id),
    all in one transaction; with any bad row nothing is written."""
    text = decode(data)
    fmt = fmt or detect_format(filename, text)
    rows = parse_json(text) if fmt == "json" else parse_csv(text)
    errors, instances = _validate(rows)
    result = ImportResult(errors=errors)
    if errors:
        return result
    with transaction.atomic():
        for candidate, current in instances:
            if current is None:
                candidate.save()
                result.added.append(candidate.package_id)
                history.record_addition(user=user, obj=candidate, via=via)
                continue
            changes = {f: (getattr(current, f), getattr(candidate, f))
                       for f in ("type", "name", "description") if getattr(current, f) != getattr(candidate, f)}
            if not changes:
                result.unchanged += 1
                continue
            for f, (_, new) in changes.items():
                setattr(current, f, new)
            current.save()
            result.updated.append(current.package_id)
            history.record_change(user=user, obj=current, changes=changes, via=via)
    return result
