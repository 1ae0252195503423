"""Choose the database of the whole suite before trytond is imported.

KRAYA_TEST_DATABASE=postgresql://127.0.0.1:5432 runs everything on
PostgreSQL (a fresh database per run, dropped at the end); unset, on SQLite.
"""
import os
import time

TEST_DATABASE = os.environ.get('KRAYA_TEST_DATABASE', '').rstrip('/')

if TEST_DATABASE:
    os.environ['TRYTOND_DATABASE_URI'] = TEST_DATABASE + '/'
    os.environ.setdefault('DB_NAME', f'kraya_test_{os.getpid()}_{int(time.time())}')


def pytest_sessionfinish(session, exitstatus):
    if not TEST_DATABASE:
        return
    from kraya_site.sites import _pg_drop
    _pg_drop(TEST_DATABASE + '/', os.environ['DB_NAME'])
