"""The publish_packages command: selection, dry run, guards, exit status and stderr."""
import pytest
from django.core.management import CommandError, call_command

from packages_app import publishing
from packages_app.models import Publication




def run(*args):
    from io import StringIO

    out, err = StringIO(), StringIO()
    try:
        call_command("publish_packages", *args, stdout=out, stderr=err)
        code = 0
    except CommandError as exc:
        err.write(str(exc))
        code = exc.returncode
    return code, out.getvalue(), err.getvalue()


def test_dry_run_prints_the_diff_and_sends_nothing(make_package, make_integration, no_broker):
    make_integration([make_package("1001", name="TypeScript")], kombo_integration_id="recruitee:A1")
    code, out, err = run("--integration", "recruitee:A1", "--dry-run")
    assert code == 0, err
    assert "recruitee:A1 (Customer 1): 1 added, 0 changed, 0 removed, 0 unchanged" in out
    assert "  + 1001  TypeScript (SKILLS_TEST)" in out and "nothing sent" in out
    assert not Publication.objects.exists() and no_broker == []


@pytest.mark.django_db(transaction=True)
def test_publishes_named_integrations(make_package, make_integration, no_broker):
    make_integration([make_package()], kombo_integration_id="recruitee:A1")
    code, out, err = run("--integration", "recruitee:A1")
    assert code == 0, err
    (pub,) = Publication.objects.all()
    assert f"Queued publication #{pub.pk} for recruitee:A1" in out and no_broker == [pub.pk]


def test_unknown_integration_and_no_selection_are_errors(db):
    code, _, err = run("--integration", "nope:x")
    assert code == 1 and "Unknown integration(s): nope:x" in err
    code, _, err = run()
    assert code == 1 and "--all-out-of-sync" in err


def test_removals_need_allow_removals(make_integration, no_broker):
    make_integration([], kombo_integration_id="recruitee:Empty")
    code, out, err = run("--integration", "recruitee:Empty")
    assert code == 1 and "--allow-removals" in err and "empty list" in out
    assert not Publication.objects.exists()
    code, _, err = run("--integration", "recruitee:Empty", "--allow-removals")
    assert code == 0, err
    assert Publication.objects.get().body == '{"packages":[]}'


def test_all_out_of_sync_skips_those_in_sync(make_package, make_integration, no_broker):
    package = make_package()
    synced = make_integration([package], kombo_integration_id="recruitee:Synced")
    make_integration([package], kombo_integration_id="recruitee:New")
    (pub,) = publishing.publications_create(integrations=[synced])
    Publication.objects.filter(pk=pub.pk).update(status="succeeded")
    code, out, err = run("--all-out-of-sync")
    assert code == 0, err
    assert "recruitee:New" in out and "recruitee:Synced" not in out
    assert ("In all: 1 integration, 1 to publish (1 package(s) to add, 0 to change, 0 to remove); "
            "skipped 0 in sync, 0 paused.\nQueued publication #") in out
    assert Publication.objects.filter(status="queued").get().integration.kombo_integration_id == "recruitee:New"


@pytest.mark.django_db(transaction=True)
def test_wait_reports_final_states_and_fails_on_failure(make_package, make_integration, sandbox, monkeypatch):
    # Execute synchronously instead of through a broker: the command waits on the database.
    monkeypatch.setattr(publishing.queueing, "publications_enqueue",
                        lambda *, publication_ids, countdown=None: [
                            pk for pk in publication_ids if publishing.publication_execute(publication_id=pk)])
    sandbox.extra_warnings = ["Names are cut at 50 characters."]
    make_integration([make_package()], kombo_integration_id="recruitee:Ok1")
    make_integration([make_package()], kombo_integration_id="notfound:Gone1")
    code, out, err = run("--integration", "recruitee:Ok1", "--integration", "notfound:Gone1", "--wait", "--timeout", "10")
    assert code == 1
    assert "recruitee:Ok1: succeeded with 1 warning(s): Names are cut at 50 characters." in out
    assert "notfound:Gone1: failed: Kombo answered HTTP 404 PLATFORM.INTEGRATION_NOT_FOUND" in err
    assert "1 publication(s) failed, 0 refused." in err
