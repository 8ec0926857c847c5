"""Retention: publications_prune, the prune_publications command and its optional daily beat run."""
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from kombo_admin.settings import retention_beat_schedule
from packages_app import publishing, tasks
from packages_app.models import Integration, Publication, PublicationAttempt, SyncStatus
from packages_app.publishing.retention import PruneResult

Status = Publication.Status


@pytest.fixture
def publish(db):
    """`publish(integration, status, days_ago, http_status=None, attempts=0)`: a publication row
    requested that many days ago (requested_at is auto_now_add, so it is set afterwards)."""
    def make(integration, status, days_ago, http_status=None, attempts=0):
        publication = Publication.objects.create(integration=integration, body="{}", body_sha256="x",
                                                 status=status, http_status=http_status)
        Publication.objects.filter(pk=publication.pk).update(
            requested_at=timezone.now() - timedelta(days=days_ago))
        for number in range(1, attempts + 1):
            PublicationAttempt.objects.create(publication=publication, number=number,
                                              started_at=timezone.now(), outcome="test")
        return publication.pk

    return make


@pytest.fixture
def ledger(make_integration, publish):
    """Two integrations' publications, oldest first. Returns (a, b, kept, deleted) for 30 days."""
    a, b = make_integration(), make_integration()
    deleted, kept = set(), set()
    deleted.add(publish(a, Status.SUCCEEDED, 400, http_status=200, attempts=2))  # a newer accepted follows
    deleted.add(publish(a, Status.SUPERSEDED, 390))
    deleted.add(publish(a, Status.FAILED, 380, http_status=400, attempts=3))
    deleted.add(publish(a, Status.CANCELLED, 370))                   # cancelled before any request
    kept.add(publish(a, Status.QUEUED, 365))                         # active, however old
    deleted.add(publish(a, Status.FAILED, 350, http_status=422, attempts=1))
    kept.add(publish(a, Status.RETRYING, 340))
    kept.add(publish(a, Status.WAITING, 335))
    kept.add(publish(a, Status.SENDING, 330))
    kept.add(publish(a, Status.CANCELLED, 320, http_status=200, attempts=1))  # a's latest accepted
    deleted.add(publish(a, Status.FAILED, 310, http_status=400))
    kept.add(publish(a, Status.CANCELLED, 300))                       # a's latest: "did not complete"
    deleted.add(publish(b, Status.SUCCEEDED, 300, http_status=200, attempts=1))
    kept.add(publish(b, Status.SUCCEEDED, 290, http_status=200, attempts=1))  # b's latest accepted
    deleted.add(publish(b, Status.SUPERSEDED, 280))
    deleted.add(publish(b, Status.FAILED, 270, http_status=500, attempts=2))
    recent = {publish(b, Status.SUPERSEDED, 5), publish(b, Status.FAILED, 4, http_status=400)}  # b's latest
    return a, b, kept | recent, deleted


def remaining():
    return set(Publication.objects.values_list("pk", flat=True))


def test_keeps_latest_accepted_latest_and_active_deletes_the_rest_with_attempts(ledger, make_integration, publish):
    a, b, kept, deleted = ledger
    other = make_integration()
    others = {publish(other, Status.SUCCEEDED, 3, http_status=200, attempts=1),
              publish(other, Status.FAILED, 2, attempts=1)}
    before = {i.pk: i.sync_status for i in Integration.objects.with_sync_state()}
    attempts_kept = PublicationAttempt.objects.exclude(publication_id__in=deleted).count()
    lines = []

    result = publishing.publications_prune(older_than_days=30, log=lines.append)

    assert remaining() == kept | others
    assert result.publications == len(deleted) == 9
    assert result.attempts == 2 + 3 + 1 + 1 + 2 and result.chunks == 1 and not result.dry_run
    assert result.kept == len(kept) - 2 == 7  # the two recent ones of b are not old
    assert set(PublicationAttempt.objects.values_list("publication_id", flat=True)) <= kept | others
    assert PublicationAttempt.objects.count() == attempts_kept
    # Sync status and the baseline of every diff are what they were.
    assert {i.pk: i.sync_status for i in Integration.objects.with_sync_state()} == before
    assert "Deleted 9 publication(s) and 9 attempt(s) in 1 chunk(s)" in lines[-1]
    assert lines[1].startswith("Chunk 1: deleted 9 publication(s)")


def test_latest_accepted_is_kept_however_old(make_integration, publish):
    integration = make_integration()
    old_success = publish(integration, Status.SUCCEEDED, 1000, http_status=200)
    publish(integration, Status.SUCCEEDED, 900, http_status=200)  # older than the next accepted: goes
    newest_success = publish(integration, Status.SUCCEEDED, 800, http_status=200)
    failures = [publish(integration, Status.FAILED, days, http_status=400) for days in (700, 600, 500)]
    publishing.publications_prune(older_than_days=1, log=lambda line: None)
    assert remaining() == {newest_success, failures[-1]}
    assert old_success not in remaining()
    annotated = Integration.objects.with_sync_state().get()
    assert annotated.sync_status == SyncStatus.FAILED and annotated.last_succeeded_sha256 == "x"


def test_nothing_old_enough_deletes_nothing(ledger):
    before = remaining()
    result = publishing.publications_prune(older_than_days=500, log=lambda line: None)
    assert remaining() == before
    assert (result.publications, result.attempts, result.chunks, result.kept) == (0, 0, 0, 0)


def test_dry_run_deletes_nothing_and_reports_the_same_counts(ledger):
    _, _, kept, deleted = ledger
    attempts = PublicationAttempt.objects.count()
    dry_lines, lines = [], []
    dry = publishing.publications_prune(older_than_days=30, dry_run=True, chunk_size=3, log=dry_lines.append)
    assert remaining() == kept | deleted and PublicationAttempt.objects.count() == attempts
    real = publishing.publications_prune(older_than_days=30, chunk_size=3, log=lines.append)
    assert remaining() == kept
    assert isinstance(dry, PruneResult) and dry.dry_run and not real.dry_run
    assert (dry.publications, dry.attempts, dry.kept, dry.chunks) == (real.publications, real.attempts,
                                                                      real.kept, real.chunks) == (9, 9, 7, 4)
    assert "Would delete 9 publication(s) and 9 attempt(s) in 4 chunk(s)" in dry_lines[-1]
    assert [line.replace("would delete", "deleted").split(" in ")[0] for line in dry_lines[1:-1]] == \
        [line.split(" in ")[0] for line in lines[1:-1]]


@pytest.mark.parametrize("chunk_size", [1, 2, 5000])
def test_chunks_give_the_same_result(make_integration, publish, chunk_size):
    integration = make_integration()
    ids = [publish(integration, Status.SUCCEEDED, 100 - n, http_status=200, attempts=1) for n in range(7)]
    lines = []
    result = publishing.publications_prune(older_than_days=10, chunk_size=chunk_size, log=lines.append)
    assert remaining() == {ids[-1]}
    assert (result.publications, result.attempts) == (6, 6)
    assert result.chunks == -(-6 // chunk_size) == len(lines) - 2


def test_only_attempts_refer_to_publications(db):
    """The prune's plain DELETEs cascade to the attempts by hand: it refuses to run if another
    model comes to refer to publications."""
    from packages_app.publishing import retention

    retention._check_relations()
    assert [r.related_model for r in Publication._meta.related_objects] == [PublicationAttempt]


def test_bad_arguments_are_refused_by_the_service(db):
    for days in (0, -1, "7", 1.5, None, True):
        with pytest.raises(ValueError, match="older_than_days"):
            publishing.publications_prune(older_than_days=days)
    with pytest.raises(ValueError, match="chunk_size"):
        publishing.publications_prune(older_than_days=1, chunk_size=0)


def run(*args):
    out, err = StringIO(), StringIO()
    try:
        call_command("prune_publications", *args, stdout=out, stderr=err)
        code = 0
    except CommandError as exc:
        err.write(str(exc))
        code = exc.returncode
    return code, out.getvalue(), err.getvalue()


def test_command_prints_per_chunk_and_total(ledger):
    _, _, kept, deleted = ledger
    code, out, err = run("--older-than", "30", "--dry-run", "--chunk-size", "5")
    assert code == 0, err
    assert remaining() == kept | deleted
    # Chunks of 5 candidates, less those the latest accepted rule keeps.
    assert "Chunk 1: would delete 5 publication(s)" in out and "Chunk 2: would delete 3 publication(s)" in out
    assert "Chunk 3: would delete 1 publication(s)" in out
    assert "Would delete 9 publication(s) and 9 attempt(s) in 3 chunk(s); kept 7 as old." in out
    code, out, err = run("--older-than", "30")
    assert code == 0, err
    assert remaining() == kept
    assert "Chunk 1: deleted 9 publication(s)" in out and "Deleted 9 publication(s) and 9 attempt(s)" in out


@pytest.mark.parametrize("args, message", [
    (["--older-than", "0"], "DAYS must be 1 or more (got 0)"),
    (["--older-than", "-3"], "DAYS must be 1 or more (got -3)"),
    (["--older-than", "ten"], "DAYS must be a whole number, 1 or more (got 'ten')"),
    (["--older-than", "1.5"], "DAYS must be a whole number"),
    (["--older-than", "30", "--chunk-size", "0"], "--chunk-size must be 1 or more"),
    ([], "the following arguments are required: --older-than"),
], ids=["zero", "negative", "word", "fraction", "chunk-size-zero", "missing"])
def test_bad_input_exits_non_zero_with_a_message_on_stderr(ledger, capsys, args, message):
    from packages_app.management.commands.prune_publications import Command

    before = remaining()
    with pytest.raises(SystemExit) as exited:
        Command().run_from_argv(["manage.py", "prune_publications", *args])
    assert exited.value.code == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.out == ""
    assert remaining() == before


def test_the_beat_entry_exists_only_when_retention_is_on(settings):
    assert retention_beat_schedule(0) == {}
    (name, entry), = retention_beat_schedule(90).items()
    assert entry["task"] == "packages_app.tasks.prune_publications" == tasks.prune_publications.name
    assert entry["schedule"].remaining_estimate(timezone.now()) <= timedelta(days=1)
    # Off by default (the tests run with the defaults).
    assert settings.KOMBO_RETENTION_DAYS == 0
    assert "packages_app.tasks.prune_publications" not in {
        entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}


def test_the_task_prunes_with_the_setting(ledger, settings, monkeypatch):
    _, _, kept, deleted = ledger
    settings.KOMBO_RETENTION_DAYS = 0
    assert tasks.prune_publications() == 0
    assert remaining() == kept | deleted
    calls = []
    real = publishing.publications_prune
    monkeypatch.setattr(publishing, "publications_prune", lambda **kw: calls.append(kw) or real(**kw))
    settings.KOMBO_RETENTION_DAYS = 30
    assert tasks.prune_publications() == 9
    assert [call["older_than_days"] for call in calls] == [30] and remaining() == kept
