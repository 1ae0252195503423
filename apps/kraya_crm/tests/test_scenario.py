"""The scenario_*.rst walk-throughs, run with proteus.

`load_tests` is Tryton's, for unittest runners (python -m unittest);
pytest ignores that protocol, so test_scenario runs each scenario's
doctest case itself and fails with the doctest's own report."""
import os
import unittest

import pytest

from trytond.tests import test_tryton
from trytond.tests.test_tryton import load_doc_tests


def load_tests(*args, **kwargs):
    return load_doc_tests(__name__, __file__, *args, **kwargs)


def scenario_cases():
    "One doctest case per scenario_*.rst, as unittest would load them."
    return list(load_tests(unittest.TestLoader(), unittest.TestSuite(), None))


def scenario_name(case):
    return os.path.basename(case._dt_test.filename)


@pytest.fixture(scope='module')
def activation_cache(tmp_path_factory):
    """Every scenario starts from the module activated with a company: the
    first one activates it and the others restore a copy (Tryton's DB_CACHE)
    rather than spend a minute each activating it again."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(test_tryton, 'DB_CACHE',
            str(tmp_path_factory.mktemp('db_cache')))
        yield


@pytest.mark.parametrize('case', scenario_cases(), ids=scenario_name)
def test_scenario(case, activation_cache):
    result = unittest.TestResult()
    case.run(result)
    reports = [report for _, report in result.failures + result.errors]
    assert not reports, '\n'.join(reports)
