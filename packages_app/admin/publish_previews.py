"""Publish previews stored in the staff member's session: the selected ids, each integration's
body hash and the digest of what Kombo would delete (publish_review's removals_key) as the
confirmation page first showed them, under a random id. The page and its form carry only that id
and the digest of the hashes (selectors.plans_digest); the removals key stays in the session (a
change at Kombo gives the page a new preview id)."""
import secrets
import time
from dataclasses import dataclass

from .. import selectors

SESSION_KEY = "kombo_publish_previews"
# Previews kept per session, and for how long. The session is read on every request: besides the
# newest, older previews are kept while they hold fewer than PREVIEW_IDS_KEPT integrations in all
# (about 52 bytes each once the session is compressed and signed: 260 kB for 5,000).
PREVIEWS_KEPT = 10
PREVIEW_IDS_KEPT = 10_000
PREVIEW_MAX_AGE_SECONDS = 12 * 3600


@dataclass
class StoredPreview:
    token: str
    ids: list
    sha256: dict | None  # integration pk -> body hash as the page first showed it
    created: float
    removals: str | None = None  # publish_review's removals_key as the page showed it

    @property
    def digest(self):
        return selectors.plans_digest(self.sha256) if self.sha256 is not None else ""


def _stored(request):
    """The session's previews, dropping those too old to confirm."""
    kept = request.session.get(SESSION_KEY, {})
    oldest = time.time() - PREVIEW_MAX_AGE_SECONDS
    return {token: raw for token, raw in kept.items() if raw.get("at", 0) >= oldest}


def preview_load(request, token):
    raw = _stored(request).get(token or "")
    if raw is None:
        return None
    ids, hashes = raw["ids"], raw.get("sha256")
    sha256 = None if hashes is None else {pk: hashes[i * 64:(i + 1) * 64] for i, pk in enumerate(ids)}
    return StoredPreview(token, ids, sha256, raw["at"], raw.get("removals"))


def preview_save(request, preview):
    """Store (or replace) a preview in the session; the oldest go beyond PREVIEWS_KEPT previews or
    PREVIEW_IDS_KEPT integrations."""
    kept = _stored(request)
    kept[preview.token] = {
        "ids": preview.ids,
        # One string, not 5,000 JSON strings: the session stays small and quick to decode.
        "sha256": None if preview.sha256 is None else "".join(preview.sha256[pk] for pk in preview.ids),
        "at": preview.created,
        "removals": preview.removals,
    }
    newest, ids = [], 0
    for token in sorted(kept, key=lambda t: kept[t]["at"], reverse=True)[:PREVIEWS_KEPT]:
        ids += len(kept[token]["ids"])
        if newest and ids > PREVIEW_IDS_KEPT:
            break
        newest.append(token)
    request.session[SESSION_KEY] = {token: kept[token] for token in newest}
    return preview


def preview_discard(request, token):
    kept = _stored(request)
    if kept.pop(token, None) is not None:
        request.session[SESSION_KEY] = kept


def preview_new(ids, sha256=None, removals=None):
    return StoredPreview(secrets.token_urlsafe(16), sorted(set(ids)), sha256, time.time(), removals)


def shown_preview(request, previews, *, removals=None):
    """A new stored preview of exactly these previews (what the page about to render shows);
    `removals`: the review's removals_key."""
    sha256 = {p.integration.pk: p.plan.sha256 for p in previews}
    return preview_save(request, preview_new(list(sha256), sha256, removals))
