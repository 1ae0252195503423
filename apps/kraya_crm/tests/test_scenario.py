"""The scenario_*.rst walk-throughs, run with proteus.

`load_tests` is Tryton's, for unittest runners (python -m unittest);
pytest ignores that protocol, so test_scenario runs each scenario's
doctest case itself and fails with the doctest's own report. Each
scenario starts from a copy of the activated module (DB_CACHE, set for
the run by the root conftest.py), the same copy as the module's test
cases, then sets up its company: activate_modules keeps a copy per list
of set-up functions, and each copy is an activation of its own, minutes
on PostgreSQL."""
import os
import unittest

import pytest

from trytond.tests.test_tryton import drop_db, load_doc_tests


def load_tests(*args, **kwargs):
    return load_doc_tests(__name__, __file__, *args, **kwargs)


def scenario_cases():
    "One doctest case per scenario_*.rst, as unittest would load them."
    return list(load_tests(unittest.TestLoader(), unittest.TestSuite(), None))


def scenario_name(case):
    return os.path.basename(case._dt_test.filename)


@pytest.mark.parametrize('case', scenario_cases(), ids=scenario_name)
def test_scenario(case):
    # A module test case run before in this process leaves the test
    # database with open connections, which Tryton's restore from the
    # cache would fail to drop.
    drop_db()
    result = unittest.TestResult()
    case.run(result)
    reports = [report for _, report in result.failures + result.errors]
    assert not reports, '\n'.join(reports)
