"""What confirming a publish would delete at Kombo, one rule for the confirmation page and
`publish_packages`: each preview compared with Kombo's current list where it was read (else with
what we last published, and why), the OPEN orders of every package it removes, and which
integrations need the removal tick (DESIGN.md 4.5 and 4.9).

An integration needs the tick when it gets an empty list or loses half or more of its list (or
many packages: selectors' rule), loses a package Kombo holds that we never published, loses a
package with open orders, or loses packages whose open orders could not be read.
"""
import hashlib
from dataclasses import dataclass, field, fields

from django.utils import formats, timezone
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from . import diff, kombo_readback, selectors


@dataclass
class RemovalRow:
    """One package this publish removes, three ways: as last published, at Kombo now, sent."""

    entry: dict                    # as Kombo holds it (or as last published when Kombo was not read)
    last_published: bool
    at_kombo: bool | None          # None: Kombo's list was not read
    open_orders: int | None        # None: not read (see the preview's orders_error)

    @property
    def kombo_only(self):
        return self.at_kombo is True and not self.last_published


@dataclass
class ChangeRow:
    package_id: str
    field: str
    last_published: str | None     # None: not in what we last published
    at_kombo: str | None           # None: not read (only when compared with the last publish)
    will_be_sent: str
    first: bool                    # the package's first row


@dataclass
class ReviewedPreview(selectors.IntegrationPreview):
    """A preview whose `diff` is against Kombo's current list when it was read. `ledger_diff` is
    the diff against what we last published; `readback` what was read (None: not attempted)."""

    ledger_diff: diff.BodyDiff = None
    readback: kombo_readback.Readback | None = None
    not_read_reason: str = ""       # why the list was not read (when it was not)
    removal_rows: list = field(default_factory=list)
    change_rows: list = field(default_factory=list)

    @property
    def compared_with_kombo(self):
        return self.readback is not None and self.readback.packages is not None

    @property
    def orders_error(self):
        """Why the open orders of the packages removed were not read (None: read, or nothing removed)."""
        if not self.diff.removed:
            return None
        if self.readback is None:
            return self.not_read_reason
        return self.readback.orders_error

    @property
    def orders_unknown(self):
        """Orders were to be read and could not be: the tick is asked for."""
        return self.readback is not None and bool(self.diff.removed) and self.readback.open_orders is None

    @property
    def open_orders_total(self):
        return sum(r.open_orders or 0 for r in self.removal_rows)

    @property
    def kombo_only_removed(self):
        return [r for r in self.removal_rows if r.kombo_only]

    @property
    def tick_reasons(self):
        """Why this publish needs the tick: a subset of many, kombo_only, open_orders, orders_unknown."""
        reasons = []
        if selectors.IntegrationPreview.needs_removal_confirmation.fget(self):
            reasons.append("many")
        if self.kombo_only_removed:
            reasons.append("kombo_only")
        if self.open_orders_total:
            reasons.append("open_orders")
        if self.orders_unknown:
            reasons.append("orders_unknown")
        return reasons

    @property
    def needs_removal_confirmation(self):
        return bool(self.tick_reasons)

    @property
    def tick_reason_texts(self):
        """tick_reasons in plain words, for the command's refusals."""
        texts = []
        for reason in self.tick_reasons:
            if reason == "many":
                texts.append(_("removes half or more of its list, or sends an empty list"))
            elif reason == "kombo_only":
                n = len(self.kombo_only_removed)
                texts.append(ngettext("removes %(count)s package only Kombo had (never published by us)",
                                      "removes %(count)s packages only Kombo had (never published by us)",
                                      n) % {"count": n})
            elif reason == "open_orders":
                texts.append(ngettext("removes packages with %(count)s open order",
                                      "removes packages with %(count)s open orders",
                                      self.open_orders_total) % {"count": f"{self.open_orders_total:,}"})
            else:
                texts.append(_("removes packages whose open orders could not be read"))
        return texts

    @property
    def compared_with_text(self):
        """What the changes below are measured against, in one plain sentence or two."""
        if self.compared_with_kombo:
            return _("Compared with Kombo’s current list, read just now.")
        if self.previously_published:
            when = formats.date_format(timezone.localtime(self.last_published_at), "DATETIME_FORMAT") \
                if self.last_published_at else _("an unknown date")
            base = _("Compared with what we last published on %(date)s.") % {"date": when}
        else:
            base = _("Compared with nothing: never published successfully.")
        return _("%(compared)s Kombo’s current list was not read: %(reason)s") % {
            "compared": base, "reason": self.not_read_reason}


@dataclass
class PublishReview:
    """A selection's reviewed previews and their totals (`summary`, selectors.PublishSummary)."""

    previews: list
    summary: selectors.PublishSummary
    read: bool                      # Kombo was read (the selection is within the limit)
    not_read_reason: str = ""       # why not, for the whole selection

    @property
    def unread(self):
        """Integrations that were to be read and could not be."""
        return [p for p in self.previews if p.readback is not None and not p.compared_with_kombo]

    @property
    def open_orders_total(self):
        return sum(p.open_orders_total for p in self.summary.risky)

    @property
    def orders_unknown(self):
        return [p for p in self.summary.risky if p.orders_unknown]

    @property
    def kombo_only_total(self):
        return sum(len(p.kombo_only_removed) for p in self.summary.risky)

    @property
    def tick_heading(self):
        """“Need your tick: …”, naming the reasons present."""
        risky = self.summary.risky
        n = len(risky)
        reasons = {r for p in risky for r in p.tick_reasons}
        if reasons <= {"many"}:
            what = ngettext("loses half or more of its list, or gets an empty list",
                            "lose half or more of their list, or get an empty list", n)
        else:
            nouns = [noun for reason, noun in (
                ("many", ngettext("half or more of its list (or all of it)",
                                  "half or more of their list (or all of it)", n)),
                ("kombo_only", _("packages only Kombo had (never published by us)")),
                ("open_orders", _("packages with open orders")),
                ("orders_unknown", _("packages whose open orders could not be read")),
            ) if reason in reasons]
            listed = nouns[0] if len(nouns) == 1 else _("%(first)s or %(last)s") % {
                "first": ", ".join(nouns[:-1]), "last": nouns[-1]}
            what = ngettext("loses %(what)s", "lose %(what)s", n) % {"what": listed}
        return ngettext("Need your tick: %(count)s integration %(what)s",
                        "Need your tick: %(count)s integrations %(what)s", n) % {"count": f"{n:,}", "what": what}

    @property
    def removals_key(self):
        """A digest of what Kombo would delete for each integration, as this review saw it: the
        stored preview keeps it, and a confirm whose new review differs is refused."""
        lines = []
        for p in sorted(self.previews, key=lambda p: p.integration.pk):
            if p.paused:
                continue
            removed = ",".join(sorted(str(r["id"]) for r in p.diff.removed))
            ordered = ",".join(sorted(str(r.entry["id"]) for r in p.removal_rows if r.open_orders))
            lines.append(f"{p.integration.pk}|{'K' if p.compared_with_kombo else 'L'}|{removed}|{ordered}|"
                         f"{'?' if p.orders_unknown else ''}\n")
        return hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()


def publish_review(previews, *, publish_anyway=False, read_kombo=True):
    """Review `previews` (selectors.integrations_preview): read Kombo for the active ones when
    there are at most KOMBO_READBACK_MAX_INTEGRATIONS of them, and say why not otherwise."""
    active = [p for p in previews if not p.paused]
    limit = kombo_readback.readback_limit()
    reason = ""
    readbacks = {}
    if not read_kombo:
        reason = _("it was not asked for.")
    elif len(active) > limit:
        reason = ngettext(
            "%(count)s integration is selected, and Kombo is read for up to %(limit)s at a time "
            "(KOMBO_READBACK_MAX_INTEGRATIONS); open orders were not counted either.",
            "%(count)s integrations are selected, and Kombo is read for up to %(limit)s at a time "
            "(KOMBO_READBACK_MAX_INTEGRATIONS); open orders were not counted either.",
            len(active)) % {"count": f"{len(active):,}", "limit": limit}
    else:
        readbacks = kombo_readback.kombo_readbacks([
            kombo_readback.read_job(p.integration, sent_ids={e["id"] for e in p.plan.body["packages"]},
                                    ledger_removed_ids={e["id"] for e in p.diff.removed})
            for p in active
        ])
    reviewed = [_reviewed(p, readbacks.get(p.integration.pk), reason) for p in previews]
    summary = selectors.PublishSummary(reviewed, publish_anyway)
    for group in summary.tick_groups:  # what the page's tick table adds to each group of integrations
        group.open_orders = sum(p.open_orders_total for p in group.previews)
        group.orders_unknown = sum(1 for p in group.previews if p.orders_unknown)
        group.kombo_only_ids = {r.entry["id"] for p in group.previews for r in p.kombo_only_removed}
    return PublishReview(reviewed, summary, read=bool(readbacks), not_read_reason=reason)


def _reviewed(preview, readback, reason):
    values = {f.name: getattr(preview, f.name) for f in fields(selectors.IntegrationPreview)}
    if readback is not None and readback.packages is not None:
        sent = {e["id"]: e for e in preview.plan.body["packages"]}
        at_kombo = _kombo_packages(readback.packages, sent)
        values["diff"] = diff.diff_bodies({"packages": list(at_kombo.values())}, preview.plan.body)
        ledger = _ledger_packages(preview)
    else:
        # Compared with the last publish: its diff says all (and thousands are reviewed at once).
        at_kombo = None
        ledger = _LedgerOfDiff(preview.diff)
        if readback is not None:
            reason = readback.packages_error
    p = ReviewedPreview(**values, ledger_diff=preview.diff, readback=readback, not_read_reason=reason or "")
    counts = readback.open_orders if readback is not None else None
    p.removal_rows = [
        RemovalRow(entry, entry["id"] in ledger, None if at_kombo is None else entry["id"] in at_kombo,
                   None if counts is None else counts.get(entry["id"], 0))
        for entry in p.diff.removed
    ]
    for changed in p.diff.changed:
        for n, change in enumerate(changed.changes):
            before = ledger.get(changed.id)
            p.change_rows.append(ChangeRow(
                changed.id, change.field,
                None if before is None else (before.get(change.field) or ""),
                change.old if at_kombo is not None else None,
                change.new, n == 0))
    return p


class _LedgerOfDiff:
    """What we last published, as far as a diff against it needs: every removed package was in
    it, and a changed field's old value is its value there."""

    def __init__(self, ledger_diff):
        self._removed = {e["id"] for e in ledger_diff.removed}
        self._changed = {c.id: {f.field: f.old for f in c.changes} for c in ledger_diff.changed}

    def __contains__(self, package_id):
        return package_id in self._removed

    def get(self, package_id):
        return self._changed.get(package_id)


def _kombo_packages(packages, sent):
    """Kombo's list as request entries. A null type (Kombo may not report it) counts as the type we
    send, so it is not shown as a change; a null name or description as empty."""
    held = {}
    for package in packages:
        package_id = str(package.get("id"))
        ours = sent.get(package_id, {})
        held[package_id] = {
            "id": package_id,
            "type": package.get("type") or ours.get("type"),
            "name": package.get("name") or "",
            "description": package.get("description") or "",
        }
    return held


def _ledger_packages(preview):
    """What we last published, by package id, rebuilt from the preview's diff against it and the
    body to send (the baseline is selectors', whatever it counts as last published)."""
    if not preview.previously_published:
        return {}
    d = preview.diff
    added = {e["id"] for e in d.added}
    changed = {c.id: c for c in d.changed}
    held = {}
    for entry in preview.plan.body["packages"]:
        if entry["id"] in added:
            continue
        entry = dict(entry)
        for change in changed[entry["id"]].changes if entry["id"] in changed else ():
            entry[change.field] = change.old
        held[entry["id"]] = entry
    for entry in d.removed:
        held[entry["id"]] = entry
    return held
