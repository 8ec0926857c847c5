"""Attempts on PostgreSQL as set-wise SQL statements: take, record successes, hand back.

`take` holds the integrations' leases, marks the publications sending and opens their attempt
rows; `finish_succeeded` stores Kombo's answers, closes those attempts and releases the leases;
`hand_back` undoes a take for publications that were not sent after all (a batch out of time,
Kombo asking everyone to slow down). Each is one atomic statement whether it covers one
publication or a batch of them. Every other case (a busy lease, a row left sending by a dead
worker, a newer publication, attempts spent, any error answer) and every other database go
through the ORM path in services, which makes the same changes in several statements.

Why SQL here: this is the one path that runs once per request to Kombo. Through the ORM it took
eight statements in three transactions per publication, about fourteen round trips, and capped
a worker with four processes at a quarter of what the network allows (bench/throughput.py).
Data-modifying CTEs make each step one round trip that happens whole or not at all, for a whole
batch at once. `take` locks what it changes with SKIP LOCKED: a row another transaction holds
(another worker's take, the admin saving that integration, the enqueuer marking rows) counts as
busy instead of being waited for, so the statement never waits and cannot deadlock with another
multi-row writer. Table and column names come from the models' _meta, so a rename cannot leave
this file behind silently.
"""
import json
from dataclasses import dataclass

from django.db import connection

from .models import Integration, Publication, PublicationAttempt

Status = Publication.Status
# Attempt outcomes that do not count against KOMBO_MAX_ATTEMPTS.
NOT_COUNTED = "sync_pending"


def available():
    """Data-modifying CTEs and RETURNING as used here: PostgreSQL only."""
    return connection.vendor == "postgresql"


def _names(model):
    meta = model._meta
    return {"table": connection.ops.quote_name(meta.db_table)} | {
        field.name: connection.ops.quote_name(field.column) for field in meta.concrete_fields
    }


def _sql_take():
    p, i, a = _names(Publication), _names(Integration), _names(PublicationAttempt)
    return f"""
WITH wanted AS (
    SELECT {p["id"]} AS id, {p["integration"]} AS integration_id
      FROM {p["table"]} WHERE {p["id"]} = ANY(%(ids)s::bigint[])
), free AS (
    SELECT i.{i["id"]} AS id, wanted.id AS publication_id
      FROM {i["table"]} AS i JOIN wanted ON i.{i["id"]} = wanted.integration_id
     WHERE i.{i["publish_lease_owner"]} IS NULL OR i.{i["publish_lease_until"]} < now()
       FOR UPDATE OF i SKIP LOCKED
), lease AS (
    UPDATE {i["table"]} AS i
       SET {i["publish_lease_owner"]} = free.publication_id,
           {i["publish_lease_token"]} = %(token)s,
           {i["publish_lease_until"]} = now() + %(lease_seconds)s * interval '1 second'
      FROM free
     WHERE i.{i["id"]} = free.id
 RETURNING i.{i["id"]} AS id, i.{i["publish_lease_owner"]} AS owner,
           i.{i["kombo_integration_id"]} AS kombo_integration_id, i.{i["region"]} AS region
), before AS (
    SELECT p.{p["id"]} AS id, p.{p["status"]} AS status, p.{p["next_attempt_at"]} AS next_attempt_at,
           p.{p["started_at"]} AS started_at
      FROM {p["table"]} AS p JOIN lease ON p.{p["id"]} = lease.owner
       FOR UPDATE OF p SKIP LOCKED
), claimed AS (
    UPDATE {p["table"]} AS p
       SET {p["status"]} = %(sending)s,
           {p["attempts"]} = p.{p["attempts"]} + 1,
           {p["started_at"]} = COALESCE(p.{p["started_at"]}, %(now)s),
           {p["next_attempt_at"]} = NULL
      FROM lease, before
     WHERE p.{p["id"]} = lease.owner AND p.{p["integration"]} = lease.id AND before.id = p.{p["id"]}
       AND (p.{p["status"]} = %(queued)s
            OR (p.{p["status"]} IN (%(retrying)s, %(waiting)s)
                AND (p.{p["next_attempt_at"]} IS NULL OR p.{p["next_attempt_at"]} <= %(due_by)s)))
       AND NOT EXISTS (SELECT 1 FROM {p["table"]} AS newer
                        WHERE newer.{p["integration"]} = p.{p["integration"]} AND newer.{p["id"]} > p.{p["id"]})
       AND (SELECT count(*) FROM {a["table"]} AS spent
             WHERE spent.{a["publication"]} = p.{p["id"]} AND spent.{a["outcome"]} <> %(not_counted)s)
           < %(max_attempts)s
 RETURNING p.{p["id"]} AS id, p.{p["attempts"]} AS attempts, p.{p["started_at"]} AS started_at,
           p.{p["body"]} AS body, before.status AS previous_status,
           before.next_attempt_at AS previous_next_attempt_at, before.started_at AS previous_started_at
), attempt AS (
    INSERT INTO {a["table"]} ({a["publication"]}, {a["number"]}, {a["started_at"]}, {a["error_code"]},
                              {a["outcome"]}, {a["message"]})
    SELECT claimed.id, claimed.attempts, %(now)s, '', '', '' FROM claimed
 RETURNING {a["id"]} AS id, {a["publication"]} AS publication_id
)
SELECT wanted.id, wanted.integration_id, lease.id, lease.kombo_integration_id, lease.region,
       claimed.attempts, claimed.started_at, claimed.body, claimed.previous_status,
       claimed.previous_next_attempt_at, claimed.previous_started_at, attempt.id
  FROM wanted
  LEFT JOIN lease ON lease.owner = wanted.id
  LEFT JOIN claimed ON claimed.id = wanted.id
  LEFT JOIN attempt ON attempt.publication_id = wanted.id
"""


def _sql_held(i):
    # The rows of `v` whose integration this run still leases: nothing else is touched.
    return f"""held AS (
    SELECT v.* FROM v JOIN {i["table"]} AS i
        ON i.{i["id"]} = v.integration_id AND i.{i["publish_lease_token"]} = %(token)s
)"""


def _sql_release(i):
    return f"""released AS (
    UPDATE {i["table"]} AS i
       SET {i["publish_lease_owner"]} = NULL, {i["publish_lease_until"]} = NULL, {i["publish_lease_token"]} = ''
      FROM v
     WHERE i.{i["id"]} = v.integration_id AND i.{i["publish_lease_token"]} = %(token)s
 RETURNING 1
)"""


def _sql_finish_succeeded():
    p, i, a = _names(Publication), _names(Integration), _names(PublicationAttempt)
    # Data-modifying CTEs run whether or not the final SELECT reads them.
    return f"""
WITH v AS (
    SELECT * FROM unnest(%(ids)s::bigint[], %(attempt_ids)s::bigint[], %(integration_ids)s::bigint[],
                         %(http_statuses)s::integer[], %(response_bodies)s::text[], %(warnings)s::text[],
                         %(rate_limit_headers)s::text[], %(messages)s::text[], %(finished_at)s::timestamptz[])
        AS v(id, attempt_id, integration_id, http_status, response_body, warnings, rate_limit_headers,
             message, finished_at)
), {_sql_held(i)}, done_publication AS (
    UPDATE {p["table"]} AS p
       SET {p["status"]} = %(succeeded)s, {p["http_status"]} = held.http_status,
           {p["response_body"]} = held.response_body, {p["warnings"]} = held.warnings::jsonb,
           {p["rate_limit_headers"]} = held.rate_limit_headers::jsonb, {p["finished_at"]} = held.finished_at,
           {p["error_code"]} = '', {p["error_title"]} = '', {p["error_message"]} = '',
           {p["error_log_url"]} = '', {p["failure_reason"]} = ''
      FROM held
     WHERE p.{p["id"]} = held.id AND p.{p["status"]} = %(sending)s
 RETURNING p.{p["id"]} AS id
), done_attempt AS (
    UPDATE {a["table"]} AS a
       SET {a["finished_at"]} = held.finished_at, {a["http_status"]} = held.http_status,
           {a["outcome"]} = %(succeeded)s, {a["message"]} = held.message
      FROM held JOIN done_publication ON done_publication.id = held.id
     WHERE a.{a["id"]} = held.attempt_id
 RETURNING 1
), {_sql_release(i)}
SELECT 1
"""


def _sql_hand_back():
    p, i, a = _names(Publication), _names(Integration), _names(PublicationAttempt)
    return f"""
WITH v AS (
    SELECT * FROM unnest(%(ids)s::bigint[], %(attempt_ids)s::bigint[], %(integration_ids)s::bigint[],
                         %(statuses)s::text[], %(next_attempt_at)s::timestamptz[], %(started_at)s::timestamptz[])
        AS v(id, attempt_id, integration_id, status, next_attempt_at, started_at)
), {_sql_held(i)}, handed_back AS (
    UPDATE {p["table"]} AS p
       SET {p["status"]} = held.status, {p["attempts"]} = p.{p["attempts"]} - 1,
           {p["next_attempt_at"]} = held.next_attempt_at, {p["started_at"]} = held.started_at
      FROM held
     WHERE p.{p["id"]} = held.id AND p.{p["status"]} = %(sending)s
 RETURNING p.{p["id"]} AS id
), dropped AS (
    DELETE FROM {a["table"]} AS a USING held, handed_back
     WHERE a.{a["id"]} = held.attempt_id AND handed_back.id = held.id AND a.{a["finished_at"]} IS NULL
 RETURNING 1
), {_sql_release(i)}
SELECT 1
"""


_statements = {}


def _statement(name, build):
    # Built on first use: the models' _meta and the connection's quoting are ready by then.
    if name not in _statements:
        _statements[name] = build()
    return _statements[name]


@dataclass
class Taken:
    """What `take` did for one publication: whether it holds the lease, and the attempt opened."""

    publication_id: int
    integration_id: int
    leased: bool
    publication: Publication | None = None  # unsaved stand-in with the fields the attempt needs
    attempt: PublicationAttempt | None = None
    previous: tuple = ()                    # (status, next_attempt_at, started_at) before the take

    @property
    def claimed(self):
        return self.attempt is not None


def take(*, publication_ids, token, lease_seconds, now, due_by, max_attempts):
    """Hold the integrations' leases and open one attempt per publication, in one statement.
    Returns {publication id: Taken} for the ids that exist.

    Not leased: another attempt of the integration is in flight. Leased but not claimed: the
    publication is not plainly due for a first or next attempt (final, sending, a newer one
    exists, attempts spent): the caller holds the lease and decides through the ORM path.
    """
    with connection.cursor() as cursor:
        cursor.execute(_statement("take", _sql_take), {
            "ids": list(publication_ids), "token": token, "lease_seconds": lease_seconds,
            "now": now, "due_by": due_by, "max_attempts": max_attempts, "not_counted": NOT_COUNTED,
            "sending": Status.SENDING, "queued": Status.QUEUED, "retrying": Status.RETRYING,
            "waiting": Status.WAITING,
        })
        rows = cursor.fetchall()
    taken = {}
    for (publication_id, integration_id, leased_id, kombo_id, region, attempts, started_at, body,
         previous_status, previous_next_attempt_at, previous_started_at, attempt_id) in rows:
        if attempt_id is None:
            taken[publication_id] = Taken(publication_id, integration_id, leased=leased_id is not None)
            continue
        integration = Integration(pk=integration_id, kombo_integration_id=kombo_id, region=region)
        publication = Publication(
            pk=publication_id, integration=integration, status=Status.SENDING, attempts=attempts,
            started_at=started_at, body=body,
        )
        attempt = PublicationAttempt(pk=attempt_id, publication=publication, number=attempts, started_at=now)
        taken[publication_id] = Taken(
            publication_id, integration_id, leased=True, publication=publication, attempt=attempt,
            previous=(previous_status, previous_next_attempt_at, previous_started_at),
        )
    return taken


@dataclass
class Succeeded:
    """A successful attempt to record."""

    publication: Publication
    attempt: PublicationAttempt
    success: object  # kombo.KomboSuccess
    message: str
    finished_at: object


def finish_succeeded(succeeded, *, token):
    """Store successful answers, close their attempts and release their leases, in one statement.
    Only rows still sending under this run's lease (`token`) are written."""
    if not succeeded:
        return
    with connection.cursor() as cursor:
        cursor.execute(_statement("finish_succeeded", _sql_finish_succeeded), {
            "ids": [s.publication.pk for s in succeeded],
            "attempt_ids": [s.attempt.pk for s in succeeded],
            "integration_ids": [s.publication.integration_id for s in succeeded],
            "http_statuses": [s.success.http_status for s in succeeded],
            "response_bodies": [s.success.body_text for s in succeeded],
            "warnings": [json.dumps(s.success.warnings) for s in succeeded],
            "rate_limit_headers": [json.dumps(s.success.limit_headers) for s in succeeded],
            "messages": [s.message for s in succeeded],
            "finished_at": [s.finished_at for s in succeeded],
            "succeeded": Status.SUCCEEDED, "sending": Status.SENDING, "token": token,
        })


def hand_back(taken, *, token):
    """Undo `take` for attempts that were never sent: the publications as they were before,
    their open attempt rows gone, their leases released. One statement; only rows still sending
    under this run's lease (`token`) are touched."""
    if not taken:
        return
    with connection.cursor() as cursor:
        cursor.execute(_statement("hand_back", _sql_hand_back), {
            "ids": [t.publication_id for t in taken],
            "attempt_ids": [t.attempt.pk for t in taken],
            "integration_ids": [t.integration_id for t in taken],
            "statuses": [t.previous[0] for t in taken],
            "next_attempt_at": [t.previous[1] for t in taken],
            "started_at": [t.previous[2] for t in taken],
            "sending": Status.SENDING, "token": token,
        })
