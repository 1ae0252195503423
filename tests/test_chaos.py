"""A short fault-injection run (bench/chaos.py, what ./crm chaos runs for
minutes): 75 s of mixed traffic on the production shape while a web,
worker or cron process is SIGKILLed every few seconds and PostgreSQL
restarts once. Nothing answered 2xx, accepted or sent may be lost or
doubled."""
import pytest

from bench.chaos import lost_or_double, report, run_chaos
from kraya_site.own_postgres import postgres_bin
from kraya_site.sites import SiteError

from .conftest import TEST_DATABASE


def initdb_available():
    try:
        return bool(postgres_bin('initdb'))
    except SiteError:
        return False


@pytest.mark.skipif(not TEST_DATABASE, reason="the production shape and "
    "its database restart are PostgreSQL's; a SQLite site runs one web "
    "process and one worker")
@pytest.mark.skipif(not initdb_available(), reason="initdb is needed to run a "
    "PostgreSQL of the test's own, which it may restart")
def test_killed_processes_and_a_database_restart_lose_and_double_nothing(
        tmp_path):
    figures = run_chaos(seconds=75, kill_every=4, restart_postgres=True,
        root=tmp_path)
    print(report(figures))
    assert figures['settled'], report(figures)
    assert lost_or_double(figures) == {}, report(figures)
    # The faults did happen, and the traffic went on around them.
    assert sum(figures['kills'].values()) >= 8, figures['kills']
    assert figures['postgresql restarts'] == 1
    assert figures['deliveries answered 2xx'] > 50
    assert figures['web forms accepted'] > 5
    assert figures['imports done'] >= 2
    assert figures['messages sent'] > 0
