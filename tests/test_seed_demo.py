"""The seed_demo command: sizes, a realistic mix of sync states, real bodies, sequences left right
for the ORM, refusal of a non-empty database, and the same rows for the same seed."""
from collections import Counter
from io import StringIO

import pytest
from django.core.management import ManagementUtility, call_command
from django.utils import timezone

from packages_app import payloads
from packages_app.models import (AssessmentPackage, Integration, Publication, PublicationAttempt,
                                 SyncStatus)

SIZES = ["--integrations", "30", "--packages", "20", "--packages-per-integration", "5",
         "--publications", "2000", "--seed", "7"]

pytestmark = pytest.mark.django_db(transaction=True)  # COPY, DDL and ANALYZE in real transactions


def seed(*extra):
    out = StringIO()
    call_command("seed_demo", *SIZES, *extra, stdout=out, stderr=StringIO())
    return out.getvalue()


def fingerprint():
    return list(Publication.objects.order_by("pk").values_list(
        "integration__kombo_integration_id", "status", "body_sha256", "attempts", "failure_reason"))


def test_builds_the_dataset_at_the_sizes_asked():
    out = seed()
    assert AssessmentPackage.objects.count() == 20
    assert Integration.objects.count() == 30
    assert Publication.objects.count() == 2000
    assert "2,000 publications" in out and "publications" in out and " s\n" in out

    integrations = list(Integration.objects.with_sync_state())
    assert [len(i.current_body()["packages"]) for i in integrations] == [5] * 30
    assert all(i.packages.count() == 5 for i in integrations)
    statuses = Counter(i.sync_status for i in integrations)
    assert {SyncStatus.IN_SYNC, SyncStatus.CHANGED, SyncStatus.FAILED, SyncStatus.NEVER_PUBLISHED} <= set(statuses)
    assert statuses[SyncStatus.IN_SYNC] > len(integrations) / 2
    assert SyncStatus.PUBLISHING not in statuses  # nothing left for a worker or the sweep to send

    by_status = Counter(Publication.objects.values_list("status", flat=True))
    assert set(by_status) <= set(Publication.FINAL_STATUSES)
    assert by_status[Publication.Status.SUCCEEDED] > 0.9 * 2000
    assert by_status[Publication.Status.FAILED] and by_status[Publication.Status.SUPERSEDED]
    for body, sha256, count in Publication.objects.values_list("body", "body_sha256", "package_count"):
        assert payloads.body_sha256(body.encode("utf-8")) == sha256
        assert len(payloads.parse_body(body)["packages"]) == count

    # The attempts add up, and are numbered from 1 for each publication.
    assert PublicationAttempt.objects.count() == sum(Publication.objects.values_list("attempts", flat=True))
    numbers = {}
    for publication_id, number in PublicationAttempt.objects.values_list("publication_id", "number"):
        numbers.setdefault(publication_id, []).append(number)
    assert all(sorted(n) == list(range(1, len(n) + 1)) for n in numbers.values())

    # Newer publications have higher ids (the admin and "latest" read them by id), all in the past.
    times = list(Publication.objects.order_by("pk").values_list("requested_at", flat=True))
    assert times == sorted(times) and times[-1] < timezone.now()
    assert (times[-1] - times[0]).days > 300


def test_the_orm_inserts_after_it():
    seed()
    package = AssessmentPackage.objects.create(package_id="after-seed", type="SKILLS_TEST", name="After",
                                               description="Added after seeding.")
    integration = Integration.objects.create(kombo_integration_id="greenhouse:AfterSeed", name="After GmbH")
    integration.packages.add(package)
    publication = Publication.objects.create(integration=integration, body='{"packages":[]}',
                                             body_sha256=payloads.body_sha256(b'{"packages":[]}'))
    attempt = PublicationAttempt.objects.create(publication=publication, number=1, started_at=timezone.now())
    assert publication.pk > 2000 and attempt.pk > 2000
    assert integration.pk == 31 and package.pk == 21


def test_refuses_a_database_with_data_unless_flush(capsys):
    seed()
    before = fingerprint()
    with pytest.raises(SystemExit) as exit:
        ManagementUtility(["manage.py", "seed_demo", *SIZES]).execute()
    assert exit.value.code == 1
    err = capsys.readouterr().err
    assert "already has 20 packages, 30 integrations, 2,000 publications" in err and "--flush" in err
    assert fingerprint() == before

    seed("--flush")  # the same seed gives the same rows again
    assert fingerprint() == before
    assert Integration.objects.count() == 30

    seed("--flush", "--seed", "8")
    assert fingerprint() != before
