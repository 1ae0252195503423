"""The scenario_*.rst walk-throughs, run with proteus.

`load_tests` is Tryton's, for unittest runners (python -m unittest);
pytest ignores that protocol, so test_scenario runs each scenario's
doctest case itself and fails with the doctest's own report. Each
scenario starts from a copy of the activated module (DB_CACHE, set for
the run by the root conftest.py)."""
import os
import unittest

import pytest

from trytond.tests.test_tryton import load_doc_tests


def load_tests(*args, **kwargs):
    return load_doc_tests(__name__, __file__, *args, **kwargs)


def scenario_cases():
    "One doctest case per scenario_*.rst, as unittest would load them."
    return list(load_tests(unittest.TestLoader(), unittest.TestSuite(), None))


def scenario_name(case):
    return os.path.basename(case._dt_test.filename)


@pytest.mark.parametrize('case', scenario_cases(), ids=scenario_name)
def test_scenario(case):
    result = unittest.TestResult()
    case.run(result)
    reports = [report for _, report in result.failures + result.errors]
    assert not reports, '\n'.join(reports)
