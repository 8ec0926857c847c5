"""Catalogue import and export, as JSON in Kombo's request shape (`{"packages": [...]}`, plus the
plans under `"plans"`) or CSV with the same four columns (packages only). An import checks every
row before it writes any: all or nothing."""
import csv
import io
import json
from dataclasses import dataclass, field

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Prefetch
from django.db.models.functions import Lower
from django.utils.translation import gettext, ngettext

from . import history, payloads
from .models import AssessmentPackage, Plan, package_id_taken_message

COLUMNS = ("id", "type", "name", "description")
PLAN_FIELDS = ("name", "description", "is_default", "packages")
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
    # Plans, when the file has any (JSON only): names.
    plans_added: list = field(default_factory=list)
    plans_updated: list = field(default_factory=list)
    plans_unchanged: int = 0

    @property
    def ok(self):
        return not self.errors

    def summary(self):
        if self.errors:
            return ngettext("%(count)s bad row: nothing was imported.", "%(count)s bad rows: nothing was imported.",
                            len(self.errors)) % {"count": len(self.errors)}
        text = gettext("%(added)s added, %(updated)s updated, %(unchanged)s unchanged.") % {
            "added": len(self.added), "updated": len(self.updated), "unchanged": self.unchanged}
        if self.plans_added or self.plans_updated or self.plans_unchanged:
            text += gettext(" Plans: %(added)s added, %(updated)s updated, %(unchanged)s unchanged.") % {
                "added": len(self.plans_added), "updated": len(self.plans_updated),
                "unchanged": self.plans_unchanged}
        return text


# --- export ----------------------------------------------------------------------------------

def export_json(packages=None, plans=None):
    """`{"packages": [...], "plans": [...]}`: the packages in Kombo's request shape, then each plan
    with the ids of its packages (all of them unless told otherwise)."""
    packages = AssessmentPackage.objects.all() if packages is None else packages
    document = payloads.build_body(packages)
    document["plans"] = export_plans(plans)
    return json.dumps(document, ensure_ascii=False, indent=2) + "\n"


def export_plans(plans=None):
    """Plans as the JSON export writes them, by name, each with its package ids sorted."""
    plans = Plan.objects.all() if plans is None else plans
    plans = plans.prefetch_related(Prefetch("packages", queryset=AssessmentPackage.objects.only("package_id")))
    return [{"name": plan.name, "description": plan.description, "is_default": plan.is_default,
             "packages": sorted(p.package_id for p in plan.packages.all())}
            for plan in sorted(plans, key=lambda p: p.name)]


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
        raise ImportFormatError(gettext("The file is larger than %(size)s MiB.")
                                % {"size": MAX_IMPORT_BYTES // (1024 * 1024)})
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportFormatError(gettext("The file is not UTF-8 text (byte %(byte)s).")
                                % {"byte": exc.start}) from None


def _unknown_fields(row, known):
    """[the problem] if `row` has fields besides `known`, else []."""
    unknown = sorted(set(row) - set(known), key=str)
    if not unknown:
        return []
    return [ngettext("unknown field: %(names)s", "unknown fields: %(names)s", len(unknown))
            % {"names": ", ".join(map(str, unknown))}]


def parse_json_document(text):
    """([(where, package row)], [(where, plan row)] or None when the file has no "plans")."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ImportFormatError(gettext("Not valid JSON: %(error)s at line %(line)s, column %(column)s.")
                                % {"error": exc.msg, "line": exc.lineno, "column": exc.colno}) from None
    except RecursionError:
        raise ImportFormatError(gettext("Not valid JSON for a catalogue: nested too deeply.")) from None
    except ValueError as exc:  # e.g. an integer literal longer than Python converts
        raise ImportFormatError(gettext("Not valid JSON for a catalogue: %(error)s.") % {"error": exc}) from None
    if not isinstance(document, dict) or not isinstance(document.get("packages"), list):
        raise ImportFormatError(gettext('The JSON must be an object with a "packages" list, as Kombo receives it.'))
    rows = [(f"packages[{i}]", row) for i, row in enumerate(document["packages"])]
    if "plans" not in document:
        return rows, None
    if not isinstance(document["plans"], list):
        raise ImportFormatError(gettext('"plans" must be a list of plans, as the export writes it.'))
    return rows, [(f"plans[{i}]", row) for i, row in enumerate(document["plans"])]


def csv_delimiter(text):
    """The separator of the header line: a comma, or a semicolon (what Excel writes where the
    decimal separator is a comma, much of Europe), or a tab; a comma when none is found."""
    header = text.lstrip("\ufeff").split("\n", 1)[0]
    counts = {d: header.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def parse_csv(text):
    """[(where, row dict)] from a CSV with an id,type,name,description header (separated by
    commas, semicolons or tabs: see csv_delimiter)."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=csv_delimiter(text))
    try:
        header = next(reader)
    except StopIteration:
        raise ImportFormatError(gettext("The CSV file is empty.")) from None
    except csv.Error as exc:
        raise ImportFormatError(gettext("Not valid CSV: %(error)s.") % {"error": exc}) from None
    header = [h.strip().lower() for h in header]
    header = ["id" if h == "package_id" else h for h in header]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise ImportFormatError(
            gettext("The CSV header must name the columns %(columns)s; missing: %(missing)s.")
            % {"columns": ", ".join(COLUMNS), "missing": ", ".join(missing)}
        )
    rows = []
    try:
        for values in reader:
            line = reader.line_num
            if not any(v.strip() for v in values):
                continue
            if len(values) != len(header):
                rows.append((gettext("line %(line)s") % {"line": line}, ValueError(
                    gettext("expected %(expected)s columns, found %(found)s")
                    % {"expected": len(header), "found": len(values)})))
                continue
            rows.append((gettext("line %(line)s") % {"line": line}, dict(zip(header, values))))
    except csv.Error as exc:
        raise ImportFormatError(gettext("Not valid CSV at line %(line)s: %(error)s.")
                                % {"line": reader.line_num, "error": exc}) from None
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
    # Only ids the database can hold are looked up; the others fail validation below. Ids are
    # unique regardless of case (the model's rule): matched in lower case, in one query.
    lookup = {r["id"].lower() for _, r in rows if isinstance(r, dict) and _storable(r.get("id"))}
    existing = {p.package_id.lower(): p for p in AssessmentPackage.objects.annotate(
        package_id_lower=Lower("package_id")).filter(package_id_lower__in=lookup)}
    for where, row in rows:
        if isinstance(row, Exception):
            errors.append(RowError(where, str(row)))
            continue
        if not isinstance(row, dict):
            errors.append(RowError(where, gettext("must be an object with id, type, name and description")))
            continue
        problems = [gettext("%(field)s is required") % {"field": c} for c in COLUMNS if c not in row or row[c] is None]
        problems += [gettext("%(field)s must be a string") % {"field": c} for c in COLUMNS
                     if row.get(c) is not None and not isinstance(row[c], str)]
        problems += _unknown_fields(row, COLUMNS)
        if problems:
            errors.append(RowError(where, "; ".join(problems)))
            continue
        package_id = row["id"]
        if package_id.lower() in seen:
            first_where, first_id = seen[package_id.lower()]
            params = {"id": package_id, "where": first_where, "first_id": first_id}
            if first_id == package_id:
                reason = gettext('id "%(id)s" is a duplicate of %(where)s') % params
            else:
                reason = gettext('id "%(id)s" is a duplicate of %(where)s '
                                 '("%(first_id)s": ids are unique regardless of case)') % params
            errors.append(RowError(where, reason))
            continue
        seen[package_id.lower()] = (where, package_id)
        current = existing.get(package_id.lower())
        if current is not None and current.package_id != package_id:
            # Not an update of that package: its id would change without the form's confirmation.
            errors.append(RowError(where, gettext("id: %(message)s") % {"message": package_id_taken_message(current)}))
            continue
        candidate = AssessmentPackage(
            pk=current.pk if current else None, package_id=package_id, type=row["type"],
            name=row["name"], description=row["description"],
        )
        try:
            # Uniqueness is checked above for all the rows at once, not a query per row.
            candidate.full_clean(validate_unique=False, validate_constraints=False)
        except ValidationError as exc:
            reasons = [f"{name if name != '__all__' else gettext('row')}: {' '.join(messages)}"
                       for name, messages in exc.message_dict.items()]
            errors.append(RowError(where, "; ".join(reasons).replace("package_id:", "id:")))
            continue
        instances.append((candidate, current))
    return errors, instances


def _validate_plans(plan_rows, package_rows):
    """(errors, [(where, name, description, is_default, package ids)]) for the file's plans. A plan
    names packages of the file or of the catalogue; at most one plan is the default."""
    errors, plans, seen, default_at = [], [], {}, None
    in_file = {r["id"] for _, r in package_rows if isinstance(r, dict) and isinstance(r.get("id"), str)}
    named = {pid for _, r in plan_rows if isinstance(r, dict) and isinstance(r.get("packages"), list)
             for pid in r["packages"] if _storable(pid)}
    known = in_file | set(AssessmentPackage.objects.filter(package_id__in=named - in_file)
                          .values_list("package_id", flat=True))
    for where, row in plan_rows:
        if not isinstance(row, dict):
            errors.append(RowError(where, gettext("must be an object with name, description, is_default and packages")))
            continue
        problems = []
        if not isinstance(row.get("name"), str):
            problems.append(gettext("name is required and must be a string"))
        if not isinstance(row.get("description", ""), str):
            problems.append(gettext("description must be a string"))
        if not isinstance(row.get("is_default", False), bool):
            problems.append(gettext("is_default must be true or false"))
        ids = row.get("packages")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            problems.append(gettext("packages is required and must be a list of package ids"))
        problems += _unknown_fields(row, PLAN_FIELDS)
        if problems:
            errors.append(RowError(where, "; ".join(problems)))
            continue
        name, description, is_default = row["name"], row.get("description", ""), row.get("is_default", False)
        try:
            Plan(name=name, description=description).full_clean(
                exclude=["packages"], validate_unique=False, validate_constraints=False)
        except ValidationError as exc:
            errors.append(RowError(where, "; ".join(f"{n}: {' '.join(m)}" for n, m in exc.message_dict.items())))
            continue
        missing = [i for i in dict.fromkeys(ids) if i not in known]
        if missing:
            errors.append(RowError(where, ngettext(
                "unknown package id: %(ids)s (neither in this file nor in the catalogue)",
                "unknown package ids: %(ids)s (neither in this file nor in the catalogue)",
                len(missing)) % {"ids": ", ".join(missing)}))
            continue
        if name in seen:
            errors.append(RowError(where, gettext('name "%(name)s" is a duplicate of %(where)s')
                                   % {"name": name, "where": seen[name]}))
            continue
        seen[name] = where
        if is_default:
            if default_at is not None:
                errors.append(RowError(where, gettext("only one plan can be the default (%(where)s is)")
                                       % {"where": default_at}))
                continue
            default_at = where
        plans.append((where, name, description, is_default, list(dict.fromkeys(ids))))
    return errors, plans


def _import_plans(plans, result, *, user, via):
    """Add or update the validated plans (matched by name): each gets exactly the packages the file
    lists. A plan the file makes the default takes over from the current default."""
    existing = {p.name: p for p in Plan.objects.filter(name__in=[p[1] for p in plans]).prefetch_related("packages")}
    pks = dict(AssessmentPackage.objects.filter(package_id__in={i for p in plans for i in p[4]})
               .values_list("package_id", "pk"))
    undefaulted = set()
    if any(p[3] for p in plans):
        new_default = next(p[1] for p in plans if p[3])
        for plan in Plan.objects.filter(is_default=True).exclude(name=new_default):
            plan.is_default = False
            plan.save(update_fields=["is_default", "updated_at"])
            history.record_change(user=user, obj=plan, changes={"is_default": (True, False)}, via=via)
            undefaulted.add(plan.name)
    for _, name, description, is_default, ids in plans:
        current = existing.get(name)
        if current is None:
            plan = Plan.objects.create(name=name, description=description, is_default=is_default)
            plan.packages.set([pks[i] for i in ids])
            result.plans_added.append(name)
            history.record_addition(user=user, obj=plan, via=via)
            continue
        before = {p.package_id for p in current.packages.all()}
        if name in undefaulted:
            current.is_default = False  # as saved just above
        changes = {f: (getattr(current, f), new) for f, new in
                   (("description", description), ("is_default", is_default)) if getattr(current, f) != new}
        added, removed = sorted(set(ids) - before), sorted(before - set(ids))
        if added or removed:
            changes["packages"] = history.SetChange(added=added, removed=removed)
        if not changes:
            result.plans_unchanged += 1
            continue
        current.description, current.is_default = description, is_default
        current.save()
        current.packages.set([pks[i] for i in ids])
        result.plans_updated.append(name)
        history.record_change(user=user, obj=current, changes=changes, via=via)


def catalogue_import(*, data: bytes, filename="", fmt=None, user=None, via="import"):
    """Validate every row, then add new packages and update existing ones (matched by id), and
    the same for plans (JSON, matched by name), all in one transaction; with any bad row nothing
    is written."""
    text = decode(data)
    fmt = fmt or detect_format(filename, text)
    rows, plan_rows = parse_json_document(text) if fmt == "json" else (parse_csv(text), None)
    errors, instances = _validate(rows)
    plan_errors, plans = _validate_plans(plan_rows or [], rows)
    result = ImportResult(errors=errors + plan_errors)
    if result.errors:
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
        _import_plans(plans, result, user=user, via=via)
    return result
