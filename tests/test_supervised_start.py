"""./crm start keeps a site up when one of its processes dies: the real
command on a demo site, its processes killed with SIGKILL while signed
WhatsApp deliveries keep coming, as Meta sends them."""
import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from kraya_site import sites, supervise

from .conftest import (
    TEST_DATABASE, RunningSite, configure, eventually, free_port)
from .test_whatsapp_webhook import new_wa_id
from .whatsapp_payloads import WebhookClient, inbound

# Long enough for trytond to load the database's pool on a busy machine.
BACK_WITHIN = 60
# On PostgreSQL ./crm start runs the production shape: two queue workers.
WORKER = 'worker-1' if TEST_DATABASE else 'worker'


@pytest.fixture(scope='module')
def demo_site(tmp_path_factory):
    "A demo site with the demo's local peers, every process on a free port."
    root = tmp_path_factory.mktemp('sites')
    name = f'kraya_start_{os.getpid()}'
    db_uri = f'{TEST_DATABASE}/{name}' if TEST_DATABASE else None
    site = sites.new_site(name, db_uri=db_uri, demo=True, root=root,
        listen=f'127.0.0.1:{free_port()}')
    configure(site, {
            ('kraya_crm', 'whatsapp_api_url'):
                f'http://127.0.0.1:{free_port()}',
            ('email', 'uri'): f'smtp://127.0.0.1:{free_port()}',
            ('kraya_crm', 'whatsapp_batch_size'): 4,
            })
    try:
        yield site
    finally:
        site.drop()


class Started:
    "./crm start --site PATH, in a session of its own as a terminal runs it."

    def __init__(self, site):
        self.site = site
        self.output = site.path / 'start.log'
        with open(self.output, 'w') as output:
            self.process = subprocess.Popen(
                [sys.executable, '-m', 'kraya_site.cli', 'start',
                    '--site', str(site.path)],
                env=dict(os.environ, KRAYA_ROOT=str(sites.ROOT)),
                stdout=output, stderr=subprocess.STDOUT,
                start_new_session=True)

    def text(self):
        return self.output.read_text()

    def supervisorctl(self, *args):
        return subprocess.run([sites.bin_path('supervisorctl'),
                '-c', str(self.site.path / 'supervisord.conf'), *args],
            capture_output=True, text=True).stdout

    def pid(self, name):
        "The process's pid as supervisord knows it, 0 when not running."
        answer = self.supervisorctl('pid', name).strip()
        return int(answer) if answer.isdigit() else 0

    def running(self, name):
        """The pid of the process once it has run past its start (a death
        sooner is a crash loop, backed off)."""
        pid = eventually(lambda: 'RUNNING' in self.supervisorctl(
                'status', name) and self.pid(name), timeout=60)
        # Never 0: os.kill(0, ...) would signal the tests' own group.
        assert pid, f'{name} never ran:\n{self.text()}'
        return pid

    def restarted(self, name, old_pid, timeout=BACK_WITHIN):
        "The new pid of the process once supervisord runs it again."
        return eventually(lambda: self.pid(name) not in {0, old_pid} and
            self.pid(name), timeout=timeout)

    def ctrl_c(self):
        "What Ctrl-C does: SIGINT to the terminal's foreground process."
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=30)


def processes_of(site):
    """The pids of every process whose command line names the site, which
    each of its processes does (trytond's pool children too)."""
    pids = []
    for cmdline in Path('/proc').glob('[0-9]*/cmdline'):
        try:
            if str(site.path).encode() in cmdline.read_bytes():
                pids.append(int(cmdline.parent.name))
        except OSError:
            pass
    return [pid for pid in pids if pid != os.getpid()]


@pytest.fixture
def start(demo_site):
    "Starts the site; whatever a failed test leaves running is killed."
    runs = []
    yield lambda: runs.append(Started(demo_site)) or runs[-1]
    for started in runs:
        if started.process.poll() is None:
            started.ctrl_c()
    for pid in processes_of(demo_site):
        os.kill(pid, signal.SIGKILL)


@pytest.fixture
def started(start):
    return start()


def answers(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


class Deliveries(threading.Thread):
    """Posts a signed delivery from a new number again and again, and
    keeps the numbers answered 200; refused ones Meta would send again."""

    def __init__(self, webhook, limit=2000):
        super().__init__(daemon=True)
        self.webhook = webhook
        self.limit = limit
        self.accepted = []
        self.refused = 0
        self.done = threading.Event()

    def run(self):
        for _ in range(self.limit):
            if self.done.is_set():
                return
            wa_id = new_wa_id()
            try:
                status, _ = self.webhook.post(inbound(wa_id, name="Meera Iyer"))
            except (OSError, http.client.HTTPException):
                # A web process killed mid-answer cuts the body short:
                # Meta counts that as not delivered and sends it again.
                status = None
            if status == 200:
                self.accepted.append(wa_id)
            else:
                self.refused += 1
                time.sleep(0.1)
            time.sleep(0.02)

    def accepted_more(self, count, timeout=BACK_WITHIN):
        "Whether `count` more deliveries are answered 200 within timeout."
        target = len(self.accepted) + count
        return eventually(lambda: len(self.accepted) >= target,
            timeout=timeout)

    def stop(self):
        self.done.set()
        self.join(timeout=60)


def test_killed_worker_and_web_are_restarted_and_every_answered_delivery_becomes_a_lead(
        demo_site, started):
    assert eventually(lambda: answers(demo_site.url), timeout=60), \
        started.text()
    running = RunningSite(demo_site, [], whatsapp=None, mail=None)
    webhook = WebhookClient(running)
    deliveries = Deliveries(webhook)
    deliveries.start()
    try:
        assert deliveries.accepted_more(10)
        worker = started.running(WORKER)
        os.kill(worker, signal.SIGKILL)
        assert started.restarted(WORKER, worker), started.text()
        assert deliveries.accepted_more(10)

        web = started.running('web')
        os.kill(web, signal.SIGKILL)
        assert started.restarted('web', web), started.text()
        assert eventually(lambda: answers(demo_site.url),
            timeout=BACK_WITHIN), "the desk did not answer again"
        assert deliveries.accepted_more(10), "the webhook did not answer again"
    finally:
        deliveries.stop()

    manager = running.login('manager')
    numbers = ['+' + wa_id for wa_id in deliveries.accepted]
    assert eventually(lambda: manager.search_count('crm.lead',
        [('whatsapp', 'in', numbers)]) == len(numbers), timeout=30), \
        "a delivery answered 200 did not become a lead"
    output = started.text()
    assert f'Kraya CRM is starting at {demo_site.url}' in output
    assert 'admin       admin' in output
    assert f'| {WORKER} (pid {worker}) exited unexpectedly: restarting it' \
        in output
    assert f'| web (pid {web}) exited unexpectedly: restarting it' in output
    # The processes' own lines, prefixed with their names.
    assert re.search(r'^\d\d:\d\d:\d\d web +\| ', output, re.MULTILINE)


def test_ctrl_c_after_a_crash_leaves_no_process_behind(demo_site, started):
    # Killed, trytond-worker and trytond-cron leave their pools behind for
    # the listener to clean; the new ones get a pool of their own.
    for name in [WORKER, 'cron']:
        pid = started.running(name)
        os.kill(pid, signal.SIGKILL)
        assert started.restarted(name, pid), started.text()
    assert started.ctrl_c() == 0, started.text()
    assert eventually(lambda: not processes_of(demo_site), timeout=5), \
        [Path(f'/proc/{pid}/cmdline').read_bytes()
            for pid in processes_of(demo_site)]
    assert started.text().rstrip().endswith('| stopped')


def test_process_that_cannot_start_backs_off_says_so_and_comes_up_later(
        demo_site, start):
    "The simulator's port is taken: it crash-loops until it is free."
    port = int(demo_site.config().get(
            'kraya_crm', 'whatsapp_api_url').rsplit(':', 1)[1])
    with socket.create_server(('127.0.0.1', port)):
        started = start()
        assert eventually(lambda: 'crash loop, next try in 2 s'
            in started.text(), timeout=60), started.text()
        assert (f'whatsapp exited within {supervise.STARTSECS} s of '
            'starting, 1 time(s) in a row') in started.text()
        assert eventually(lambda: answers(demo_site.url), timeout=60), \
            "the desk went down with it"
    assert eventually(lambda: connects(port), timeout=BACK_WITHIN), \
        started.text()


def connects(port):
    try:
        socket.create_connection(('127.0.0.1', port), timeout=2).close()
        return True
    except OSError:
        return False
