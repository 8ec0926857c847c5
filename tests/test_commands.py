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
    assert code == 1 and "Unknown integration: nope:x" in err
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
    assert ("In all: 1 integration, 1 to publish (1 package to add, 0 to change, 0 to remove); "
            "skipped 0 in sync, 0 paused.\nQueued publication #") in out
    assert Publication.objects.filter(status="queued").get().integration.kombo_integration_id == "recruitee:New"


@pytest.mark.django_db(transaction=True)
def test_wait_reports_final_states_and_fails_on_failure(make_package, make_integration, sandbox, monkeypatch):
    # Execute synchronously instead of through a broker: the command waits on the database.
    monkeypatch.setattr(publishing.queueing, "publications_enqueue",
                        lambda *, publication_ids, countdown=None, followed_by=0: [
                            pk for pk in publication_ids if publishing.publication_execute(publication_id=pk)])
    sandbox.extra_warnings = ["Names are cut at 50 characters."]
    make_integration([make_package()], kombo_integration_id="recruitee:Ok1")
    make_integration([make_package()], kombo_integration_id="notfound:Gone1")
    code, out, err = run("--integration", "recruitee:Ok1", "--integration", "notfound:Gone1", "--wait", "--timeout", "10")
    assert code == 1
    assert "recruitee:Ok1: succeeded with 1 warning: Names are cut at 50 characters." in out
    assert "notfound:Gone1: failed: Kombo answered HTTP 404 PLATFORM.INTEGRATION_NOT_FOUND" in err
    assert "1 publication failed, 0 refused." in err


def _published_at_kombo(integration, sandbox):
    """What a succeeded publish leaves: the ledger's row, and Kombo's list (sent with a real PUT)."""
    from django.utils import timezone

    (pub,) = publishing.publications_create(integrations=[integration])
    publishing.kombo_client().set_packages(base_url=sandbox.url, integration_id=integration.kombo_integration_id,
                                           body=pub.body.encode())
    Publication.objects.filter(pk=pub.pk).update(status="succeeded", finished_at=timezone.now())


def test_prints_kombo_only_packages_and_open_orders_and_needs_allow_removals(make_package, make_integration,
                                                                           sandbox, no_broker):
    packages = [make_package(f"p{i}", name=f"Package {i}") for i in range(4)]
    integration = make_integration(packages, kombo_integration_id="recruitee:Cmd1")
    _published_at_kombo(integration, sandbox)
    integration.packages.remove(packages[3])  # 1 of 4: alone it would need no --allow-removals
    sandbox.add_packages("recruitee:Cmd1", [{"id": "legacy-7", "name": "Old test"}])
    sandbox.add_orders("recruitee:Cmd1", package_id="p3", count=260)  # two pages of orders
    sandbox.add_orders("recruitee:Cmd1", package_id="p0", count=4)    # a kept package's

    code, out, err = run("--integration", "recruitee:Cmd1")
    assert code == 1 and Publication.objects.filter(status="queued").count() == 0
    assert "recruitee:Cmd1 (Customer 1): 0 added, 0 changed, 2 removed, 3 unchanged" in out
    assert "  Compared with Kombo’s current list, read just now." in out
    assert "  - p3  Package 3  (Kombo will mark it deleted; 260 open orders)" in out
    assert "  - legacy-7  Old test  (Kombo will mark it deleted; only at Kombo: never published by us)" in out
    assert "Open orders on the packages to remove: 260." in out
    assert ("Refused: recruitee:Cmd1 removes 1 package only Kombo had (never published by us); "
            "removes packages with 260 open orders.") in err
    assert "--allow-removals" in err

    code, out, err = run("--integration", "recruitee:Cmd1", "--allow-removals")
    assert code == 0, err
    (queued,) = Publication.objects.filter(status="queued")
    assert [p["id"] for p in queued.body_dict()["packages"]] == ["p0", "p1", "p2"]


def test_open_orders_that_cannot_be_read_need_allow_removals(make_package, make_integration, sandbox, no_broker):
    from packages_app.sandbox import Fault

    packages = [make_package(f"q{i}") for i in range(4)]
    integration = make_integration(packages, kombo_integration_id="recruitee:Cmd2")
    _published_at_kombo(integration, sandbox)
    integration.packages.remove(packages[0])
    sandbox.enqueue_fault(Fault(status=503, body="<html>down</html>", path="/assessment/orders"))
    code, out, err = run("--integration", "recruitee:Cmd2", "--dry-run")
    assert code == 2
    assert "open orders not read: Kombo answered HTTP 503 with a non-JSON body: down" in out
    assert "Refused: recruitee:Cmd2 removes packages whose open orders could not be read." in err
