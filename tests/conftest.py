"""A real Kraya CRM site for the HTTP and browser tests: made by the same
code as ./crm new-site --demo, served by a real trytond process."""
import configparser
import contextlib
import os
import signal
import sqlite3
import subprocess
import time
import urllib.request
from pathlib import Path

import psycopg
import pytest

from kraya_site import sites
from kraya_site.own_postgres import free_port
from kraya_peers.smtp import SmtpSink
from kraya_peers.whatsapp import Simulator

from .rpc import RpcSession

TEST_DATABASE = os.environ.get('KRAYA_TEST_DATABASE', '').rstrip('/')
# KRAYA_SCREENSHOTS: another folder, for a run beside this one (.ci/run).
SCREENSHOTS = Path(os.environ.get('KRAYA_SCREENSHOTS')
    or Path(__file__).parent / 'screenshots')


class RunningSite:
    "A demo site with its web and worker processes, as ./crm start runs it."

    def __init__(self, site, processes, whatsapp, mail):
        self.site = site
        self.processes = processes
        self.url = site.url.rstrip('/')
        self.database = site.database
        self.whatsapp = whatsapp
        self.mail = mail

    def login(self, login, password=None):
        "A JSON-RPC session as the desk opens it (password = login in the demo)."
        return RpcSession(self.url, self.database, login,
            password if password is not None else login)

    def sql(self, query, params=()):
        """Run one statement on the site's database past Tryton and its
        rules, committed; its rows. Parameters are written %s."""
        site = self.site
        if site.is_sqlite:
            with contextlib.closing(sqlite3.connect(
                        site.path / f'{site.database}.sqlite')) as database:
                rows = database.execute(
                    query.replace('%s', '?'), params).fetchall()
                database.commit()
                return rows
        with psycopg.connect(f"{site.database_uri.rstrip('/')}/"
                f"{site.database}") as database:
            cursor = database.execute(query, params)
            return cursor.fetchall() if cursor.description else []


def wait_for(url, process, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f'trytond exited with {process.returncode}')
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f'{url} did not answer in {timeout}s')


def configure(site, values):
    "Set {(section, option): value} in the site's trytond.conf."
    parser = configparser.RawConfigParser()
    parser.read(site.config_file)
    for (section, option), value in values.items():
        if not parser.has_section(section):
            parser.add_section(section)
        parser.set(section, option, str(value))
    with open(site.config_file, 'w') as file:
        parser.write(file)


@pytest.fixture(scope='session')
def crm_site(tmp_path_factory):
    """The demo site, its WhatsApp Cloud API (the simulator) and its SMTP
    server (aiosmtpd), all real and on 127.0.0.1."""
    root = tmp_path_factory.mktemp('sites')
    name = f'kraya_http_{os.getpid()}'
    db_uri = f'{TEST_DATABASE}/{name}' if TEST_DATABASE else None
    site = sites.new_site(name, db_uri=db_uri, demo=True, root=root,
        listen=f'127.0.0.1:{free_port()}')
    conf = site.config()
    whatsapp = Simulator(
        webhook_url=f'{site.url}{site.database}/crm/whatsapp/webhook',
        app_secret=conf.get('kraya_crm', 'whatsapp_app_secret'),
        access_token=conf.get('kraya_crm', 'whatsapp_access_token'),
        phone_number_id=conf.get('kraya_crm', 'whatsapp_phone_number_id'),
        waba_id=conf.get('kraya_crm', 'whatsapp_business_account_id'),
        ).start()
    mail = SmtpSink().start()
    configure(site, {
            ('kraya_crm', 'whatsapp_api_url'): whatsapp.url,
            ('email', 'uri'): f'smtp://127.0.0.1:{mail.port}',
            # Retries and the recovery of a dead worker's sends in seconds,
            # not minutes, so that the tests can wait for them.
            ('kraya_crm', 'outbox_retry_seconds'): 1,
            ('kraya_crm', 'outbox_lease_seconds'): 4,
            ('kraya_crm', 'media_retry_seconds'): 1,
            ('kraya_crm', 'webhook_retry_seconds'): 1,
            # Small batches, so that the worker's batch after batch path
            # runs under the tests' bursts of deliveries.
            ('kraya_crm', 'whatsapp_batch_size'): 4,
            })
    try:
        with serving(site, root / 'trytond.log') as processes:
            yield RunningSite(site, processes, whatsapp, mail)
    finally:
        whatsapp.stop()
        mail.stop()
        site.drop()


@contextlib.contextmanager
def serving(site, log_path):
    """The site's web and worker processes, as ./crm start runs them,
    until the end of the with block; yields them."""
    log = open(log_path, 'w')
    config = ['-c', str(site.config_file), '-d', site.database]
    # Each in a process group of its own, so that the worker's pool
    # processes end with it.
    web = subprocess.Popen([sites.bin_path('trytond'), *config],
        env=site.environ(), stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True)
    worker = subprocess.Popen(
        [sites.bin_path('python'), '-m', 'kraya_site.worker', *config],
        env=site.environ(), stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True)
    # The list the tests see: a test that restarts the worker puts its new
    # one here, to be stopped with the rest.
    processes = [web, worker]
    try:
        wait_for(site.url, web)
        yield processes
    finally:
        for process in processes:
            stop_group(process)
        log.close()


def stop_group(process):
    """End a process started in a session of its own, and what it forked:
    trytond-worker's pool processes outlive a SIGTERM to their parent."""
    process.terminate()
    try:
        process.wait(timeout=10)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture(scope='session')
def manager(crm_site):
    "The demo's CRM Manager over JSON-RPC, one session for the whole run."
    return crm_site.login('manager')


@pytest.fixture(scope='session')
def admin(crm_site):
    "The demo's administrator over JSON-RPC."
    return crm_site.login('admin')


@pytest.fixture(scope='module')
def run_crons(crm_site, admin):
    """run_crons(*methods): one run of these crons by trytond-cron, as when
    they fall due."""
    site = crm_site.site

    def run(*methods):
        cron_ids = admin.search('ir.cron', [('method', 'in', list(methods))])
        assert len(cron_ids) == len(methods)
        admin.model('ir.cron', 'write', cron_ids, {'next_call': None})
        subprocess.run([sites.bin_path('trytond-cron'), '--once', '-c',
                str(site.config_file), '-d', site.database],
            env=site.environ(), check=True, timeout=120)
    return run


@pytest.fixture(scope='module')
def tick(run_crons):
    """One run of the follow-up crons, as every minute: due enrollments
    run, the outbox is woken."""
    return lambda: run_crons(
        'crm.enrollment|run_due', 'crm.message|wake_outbox')


def eventually(check, timeout=15, interval=0.1):
    """The first truthy result of check(), retried while the worker
    processes what a request queued."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(interval)


@pytest.fixture(scope='session')
def screenshots():
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


@pytest.fixture(scope='session')
def chromium_browser():
    "Debian's chromium, headless, for the browser tests."
    from playwright.sync_api import sync_playwright
    from .test_desk_browser import CHROMIUM, CHROMIUM_ARGS
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM,
            headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def back_to_desk(page, crm_site, login):
    """After the desk's login: the demo's manager and reps land on the
    dashboard (their login action, demo_dashboard.LANDING); its Desk link
    takes them back to the desk, which then stays."""
    from playwright.sync_api import expect
    from kraya_site.demo_dashboard import LANDING
    if login not in LANDING:
        return
    expect(page.locator('#dashboard[aria-busy="false"]'),
        f'{login} should land on the dashboard').to_be_visible()
    page.locator('#desk-link').click()
    expect(page.locator('#menu .column-char', has_text='CRM'),
        f'the dashboard should lead {login} back to the desk').to_be_visible()


def until(act, done, tries=4, between=None):
    """Do act, then wait a few seconds for done (called with a timeout in
    ms, a Playwright expectation), again while it is not: sao ignores a
    press that comes while it still draws (CI saw it, with both
    databases' suites side by side) and a second one while it runs the
    first, so acting again is safe. between(), if given, runs before each
    try after the first. The last wait is the expectation's full one."""
    from playwright.sync_api import TimeoutError as Timeout
    for attempt in range(tries):
        if attempt and between:
            between()
        try:
            act()
            done(timeout=5_000)
            return
        except (AssertionError, Timeout):
            pass
    done(timeout=None)


def ask_for_password(page, database, login):
    """Fill sao's login dialog up to its password prompt. An Enter sao
    did not take (the database list redrawn under it, a server slow to
    answer) is pressed again while the dialog still waits for one; sao
    greys the dialog while it asks the server, so no second request
    goes. Returns the password field."""
    from playwright.sync_api import TimeoutError as Timeout
    choose_desk_database(page, database)
    name = page.locator('input#login:visible')
    name.fill(login)
    password = page.locator('input[type="password"]:visible')
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if name.count() and name.is_enabled():
            if not name.input_value():
                name.fill(login)
            name.press('Enter')
        try:
            password.wait_for(timeout=5_000)
            return password
        except Timeout:
            pass
    raise AssertionError(f'the login dialog never asked for the password '
        f'of {login!r}')


def desk_login(page, crm_site, login, password=None):
    "Log in through sao's dialog, which sets the session cookie."
    from playwright.sync_api import expect
    page.goto(f'{crm_site.url}/')
    field = ask_for_password(page, crm_site.database, login)
    field.fill(password if password is not None else login)
    field.press('Enter')
    back_to_desk(page, crm_site, login)
    expect(page.locator('#menu .column-char', has_text='CRM'),
        f'the desk should log {login} in').to_be_visible()


def choose_desk_database(page, database):
    """Have sao's login dialog on the site's database: sao fills and locks
    it when the server has only that one, and offers a list when it has
    more (a PostgreSQL server shared with other sites). Until then,
    submitting the login does nothing."""
    field = page.locator('input#database:visible')
    listed = page.locator('select#database:visible')
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if field.count() and field.input_value() == database:
            return
        if listed.count() and listed.locator(
                f'option[value="{database}"]').count():
            listed.select_option(database)
            return
        time.sleep(0.1)
    # The list comes from connecting to every database of the server; on a
    # busy shared server it may fail, and sao then asks for the name, as a
    # user types it.
    if field.count() and field.is_editable():
        field.fill(database)
        return
    raise AssertionError(f'the login dialog never offered {database!r}')
