"""Choose the database of the whole suite before trytond is imported.

KRAYA_TEST_DATABASE=postgresql://127.0.0.1:5432 runs everything on
PostgreSQL (a fresh database per run, dropped at the end); unset, on SQLite.

Tryton's test cases drop and create their database for every class; with
DB_CACHE each one after the first restores a copy of the activated module
instead of activating it again, a minute each. On SQLite the copy is a
file in a folder of this run; on PostgreSQL it is a template database
(test-<hash>), which CREATE DATABASE copies in a second where pg_restore
of a dump took ten or more for each of the fifty-odd classes.
"""
import os
import shutil
import tempfile
import time

TEST_DATABASE = os.environ.get('KRAYA_TEST_DATABASE', '').rstrip('/')
# Tryton names its template databases test-<hash of the modules>.
PG_CACHE_PATTERN = 'test-%'

if TEST_DATABASE:
    os.environ['TRYTOND_DATABASE_URI'] = TEST_DATABASE + '/'
    os.environ.setdefault('DB_NAME', f'kraya_test_{os.getpid()}_{int(time.time())}')

OWN_DB_CACHE = 'DB_CACHE' not in os.environ
if OWN_DB_CACHE:
    os.environ['DB_CACHE'] = (TEST_DATABASE if TEST_DATABASE
        else tempfile.mkdtemp(prefix='kraya-db-cache-'))

if not TEST_DATABASE:
    # On SQLite the module tests run in one in-memory database, whose one
    # connection every transaction of the process shares, nested ones too.
    # Tryton's cache checks the other processes' changes every
    # clean_timeout seconds, at a transaction's start, on an autocommit
    # connection: that is this one, and making it autocommit commits the
    # test's transaction, which its rollback can then no longer undo. A
    # test's data then leaked into the next ones five minutes apart. The
    # suite's process shares its cache with no other: it never checks.
    from trytond import config as trytond_config
    trytond_config.set('cache', 'clean_timeout', str(10 ** 9))

# The sites the tests make (sites.new_site) start from a copy of the first
# one's activated modules (sites.py, KRAYA_SITE_TEMPLATES).
OWN_SITE_TEMPLATES = 'KRAYA_SITE_TEMPLATES' not in os.environ
if OWN_SITE_TEMPLATES:
    os.environ['KRAYA_SITE_TEMPLATES'] = tempfile.mkdtemp(
        prefix='kraya-site-templates-')


def drop_pg_templates():
    """Drop Tryton's template databases: one left by an earlier run holds
    the module as that run's code had it."""
    from kraya_site.sites import drop_databases_like
    drop_databases_like(TEST_DATABASE + '/', PG_CACHE_PATTERN)


def pytest_sessionstart(session):
    if OWN_DB_CACHE and TEST_DATABASE:
        drop_pg_templates()


def pytest_sessionfinish(session, exitstatus):
    if OWN_SITE_TEMPLATES:
        shutil.rmtree(os.environ['KRAYA_SITE_TEMPLATES'], ignore_errors=True)
    if not TEST_DATABASE:
        if OWN_DB_CACHE:
            shutil.rmtree(os.environ['DB_CACHE'], ignore_errors=True)
        return
    from kraya_site.sites import _pg_drop, drop_activated_templates
    _pg_drop(TEST_DATABASE + '/', os.environ['DB_NAME'])
    if OWN_DB_CACHE:
        drop_pg_templates()
    if OWN_SITE_TEMPLATES:
        drop_activated_templates(TEST_DATABASE + '/')
