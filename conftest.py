"""Choose the database of the whole suite before trytond is imported.

KRAYA_TEST_DATABASE=postgresql://127.0.0.1:5432 runs everything on
PostgreSQL (a fresh database per run, dropped at the end); unset, on SQLite.

Tryton's test cases drop and create their database for every class; with
DB_CACHE (a folder of this run, removed at the end) each one after the
first restores a copy of the activated module instead of activating it
again, a minute each.
"""
import os
import shutil
import tempfile
import time

TEST_DATABASE = os.environ.get('KRAYA_TEST_DATABASE', '').rstrip('/')

if TEST_DATABASE:
    os.environ['TRYTOND_DATABASE_URI'] = TEST_DATABASE + '/'
    os.environ.setdefault('DB_NAME', f'kraya_test_{os.getpid()}_{int(time.time())}')

OWN_DB_CACHE = 'DB_CACHE' not in os.environ
if OWN_DB_CACHE:
    os.environ['DB_CACHE'] = tempfile.mkdtemp(prefix='kraya-db-cache-')


def pytest_sessionfinish(session, exitstatus):
    if OWN_DB_CACHE:
        shutil.rmtree(os.environ['DB_CACHE'], ignore_errors=True)
    if not TEST_DATABASE:
        return
    from kraya_site.sites import _pg_drop
    _pg_drop(TEST_DATABASE + '/', os.environ['DB_NAME'])
