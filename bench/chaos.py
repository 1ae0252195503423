"""Fault injection: mixed traffic on the production shape while its
processes are killed and its database restarts, then an account of every
lead, message and task. Loopback only, bounded in time.

    ./crm chaos [--seconds 180] [--kill-every 5] [--no-postgres-restart]
        [--no-results]

The harness starts a PostgreSQL server of its own (kraya_site.own_postgres,
under /tmp, on a free port of 127.0.0.1) so that restarting it touches
nothing else, makes a demo site on it and runs it with ./crm start (gunicorn,
two trytond-workers, trytond-cron, the WhatsApp simulator, the mail sink
under supervisord). For --seconds it sends:

- WhatsApp deliveries as Meta posts them: new messages, each redelivered
  now and then, retried while not answered 2xx; and the statuses of sends
  out of order (read before delivered);
- web-form posts to a capture URL;
- imports (./crm import of a small CSV, with a WhatsApp opt-in) into a
  source whose follow-up sends a template through the simulator;
- RPC reads and writes by reps (lead lists, tasks created);

and meanwhile SIGKILLs a random web (gunicorn's master or one of its
workers), worker or cron process every few seconds (supervisord starts it
again) and restarts PostgreSQL once. Then it lets the site settle and
checks:

- every delivery answered 2xx is a message on a lead, once;
- every accepted web form and every imported row is a lead;
- every send in the simulator's log is recorded on its message (sent, with
  a WhatsApp id the simulator gave it), and none went more often than its
  recorded attempts;
- no follow-up is stuck past its due time, no task is lost in the queue;
- every task a rep was told was created exists; a status never moved a
  message backwards.

It prints the figures and appends them to bench/RESULTS.md."""
import argparse
import contextlib
import csv
import http.client
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.machine import record_results  # noqa: E402
from kraya_site import sites  # noqa: E402
from kraya_site.own_postgres import OwnPostgres  # noqa: E402
from tests.conftest import (  # noqa: E402
    RunningSite, configure, eventually, free_port)
from tests.rpc import RpcError, RpcSession  # noqa: E402
from tests.whatsapp_payloads import (  # noqa: E402
    WebhookClient, inbound, status, wamid)

KILLABLE = ('web', 'worker-1', 'worker-2', 'cron')
SENT = ('sent', 'delivered', 'read')
# How long the site may take to settle after the traffic: the cron's
# minute, then the minute before a dead worker's task is put back.
SETTLE_SECONDS = 240


@dataclass
class Ledger:
    "What the site acknowledged, to account for afterwards."
    deliveries: dict = field(default_factory=dict)  # wamid -> (wa_id, 2xx)
    redeliveries: int = 0
    retried: int = 0
    statuses: dict = field(default_factory=dict)  # wamid we sent -> last
    forms: list = field(default_factory=list)  # phones answered 200
    form_refusals: int = 0
    imported: list = field(default_factory=list)  # phones of imports done
    imports: int = 0
    failed_imports: int = 0
    tasks: list = field(default_factory=list)  # names of tasks created
    rpc_calls: int = 0
    rpc_errors: int = 0
    kills: dict = field(default_factory=dict)  # kind -> count
    postgres_restarts: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count_kill(self, kind):
        with self.lock:
            self.kills[kind] = self.kills.get(kind, 0) + 1


_numbers = itertools.count(random.randrange(10 ** 6) * 1000)


def new_number():
    return f'9197{next(_numbers) % 10 ** 8:08d}'


class Chaos:

    def __init__(self, seconds, kill_every, restart_postgres, root):
        self.seconds = seconds
        self.kill_every = kill_every
        self.restart_postgres = restart_postgres
        self.root = Path(root)
        self.ledger = Ledger()
        self.stop = threading.Event()
        self.postgres = self.site = self.started = None

    # --- the site ---

    def set_up(self):
        self.postgres = OwnPostgres().start()
        self.postgres.wait_ready()
        name = 'chaos'
        self.site = sites.new_site(name, db_uri=f'{self.postgres.uri}/{name}',
            demo=True, root=self.root, listen=f'127.0.0.1:{free_port()}')
        self.sim_url = f'http://127.0.0.1:{free_port()}'
        configure(self.site, {
                ('kraya_crm', 'whatsapp_api_url'): self.sim_url,
                ('email', 'uri'): f'smtp://127.0.0.1:{free_port()}',
                # Everything comes from 127.0.0.1 here: the per-client
                # limits would refuse the harness, not protect the site.
                ('kraya_crm', 'whatsapp_rate_limit'): 10 ** 6,
                ('kraya_crm', 'web_form_rate_limit'): 10 ** 6,
                ('kraya_crm', 'web_form_source_rate_limit'): 10 ** 6,
                # A send a dead worker left goes again within the run.
                ('kraya_crm', 'outbox_lease_seconds'): 20,
                ('kraya_crm', 'outbox_retry_seconds'): 2,
                })
        self.running = RunningSite(self.site, [], None, None)
        self.log = open(self.root / 'start.log', 'w')
        self.started = subprocess.Popen([sys.executable, '-m',
                'kraya_site.cli', 'start', '--site', str(self.site.path),
                '--web-workers', '2'],
            env=dict(os.environ, KRAYA_ROOT=str(sites.ROOT)), stdout=self.log,
            stderr=subprocess.STDOUT, start_new_session=True, cwd=sites.ROOT)
        if not eventually(self._answers, timeout=240, interval=1):
            raise RuntimeError('the site did not start: ' + self._tail())
        self.manager = self._login('manager')
        self.sequence_id = self._follow_up_on_imports()
        self.capture_key = self._web_form()

    def _tail(self):
        return (self.root / 'start.log').read_text()[-4000:]

    def _answers(self):
        try:
            with urllib.request.urlopen(self.site.url, timeout=5):
                return True
        except OSError:
            return False

    def _login(self, login):
        return eventually(lambda: _try(lambda: RpcSession(
                    self.running.url, self.site.database, login, login)),
            timeout=120, interval=1)

    def _follow_up_on_imports(self):
        always = {'business_days': [str(d) for d in range(7)],
            'business_hours_start': _time(0, 0),
            'business_hours_end': _time(23, 59)}
        sequence_id, = self.manager.model('crm.sequence', 'create', [{
                    'name': "Chaos welcome", **always,
                    'steps': [['create', [{'name': "Welcome", 'delay': 0,
                                    'delay_unit': 'minutes',
                                    'channel': 'whatsapp_template',
                                    'template_name': 'welcome',
                                    'template_parameters':
                                        '{lead.first_name}'}]]]}])
        source, = self.manager.search('crm.source', [('code', '=', 'import')])
        self.manager.model('crm.source', 'write', [source],
            {'follow_up_sequence': sequence_id})
        return sequence_id

    def _web_form(self):
        website, = self.manager.search('crm.source',
            [('code', '=', 'website')])
        self.manager.model('crm.source', 'write', [website],
            {'web_form': True})
        return self.manager.model('crm.source', 'read', [website],
            ['capture_key'])[0]['capture_key']

    def supervisorctl(self, *args):
        return subprocess.run([sites.bin_path('supervisorctl'), '-c',
                str(self.site.path / 'supervisord.conf'), *args],
            capture_output=True, text=True).stdout

    def pid(self, name):
        answer = self.supervisorctl('pid', name).strip()
        return int(answer) if answer.isdigit() else 0

    # --- the traffic ---

    def whatsapp(self):
        "New messages, redelivered now and then, retried until 2xx."
        webhook = WebhookClient(self.running)
        pending = []  # (body, wamid) to deliver again
        while not self.stop.is_set():
            if pending and random.random() < 0.5:
                body, message_id = pending.pop(0)
                self.ledger.redeliveries += 1
            else:
                wa_id = new_number()
                message_id = wamid()
                body = json.dumps(inbound(wa_id, name="Chaos Lead",
                        message_id=message_id)).encode()
                self.ledger.deliveries[message_id] = (wa_id, False)
            code = _post_status(lambda: webhook.post(body=body))
            if 200 <= code < 300:
                wa_id, _ = self.ledger.deliveries[message_id]
                self.ledger.deliveries[message_id] = (wa_id, True)
                if random.random() < 0.3:
                    pending.append((body, message_id))
            else:
                # Meta delivers what was not answered 2xx again, later.
                self.ledger.retried += 1
                pending.append((body, message_id))
            time.sleep(random.uniform(0.02, 0.1))

    def statuses(self):
        "Statuses of our sends out of order, now and then."
        while not self.stop.wait(1):
            self.post_statuses_out_of_order(share=0.3)

    def post_statuses_out_of_order(self, share):
        """For a share of the sends not done yet: read first, then sent and
        delivered, as Meta's webhooks may arrive."""
        webhook = WebhookClient(self.running)
        for sent in _sim_get(self.sim_url, 'messages') or []:
            if sent['wamid'] in self.ledger.statuses \
                    or random.random() >= share:
                continue
            for state in ['read', 'sent', 'delivered']:
                body = status(sent['wamid'], state, recipient=sent['to'])
                if 200 <= _post_status(lambda: webhook.post(body)) < 300:
                    self.ledger.statuses[sent['wamid']] = 'read'

    def web_forms(self):
        url = (f'{self.running.url}/{self.site.database}/crm/capture/'
            f'{self.capture_key}')
        while not self.stop.is_set():
            phone = '+' + new_number()
            body = json.dumps({'name': "Form Lead", 'mobile': phone,
                    'email': f'{phone[1:]}@example.in', 'city': 'Pune'})
            request = urllib.request.Request(url, data=body.encode(),
                headers={'Content-Type': 'application/json'})
            code = _post_status(lambda: _open(request))
            if code == 200:
                self.ledger.forms.append(phone)
            else:
                self.ledger.form_refusals += 1
            time.sleep(random.uniform(0.2, 0.6))

    def imports(self):
        number = 0
        while not self.stop.wait(random.uniform(4, 8)):
            number += 1
            path = self.root / f'import-{number}.csv'
            phones = ['+' + new_number() for _ in range(25)]
            with open(path, 'w', newline='') as file:
                writer = csv.writer(file)
                writer.writerow(['Name', 'Mobile', 'City'])
                writer.writerows([f"Imported {number}-{i}", phone, 'Mumbai']
                    for i, phone in enumerate(phones))
            result = subprocess.run([sys.executable, '-m', 'kraya_site.cli',
                    'import', str(path), '--source', 'import', '--site',
                    str(self.site.path), '--consent-basis',
                    "Asked for the brochure at the expo"],
                env=dict(os.environ, KRAYA_ROOT=str(sites.ROOT)),
                capture_output=True, cwd=sites.ROOT, timeout=300)
            if result.returncode == 0:
                self.ledger.imports += 1
                self.ledger.imported.extend(phones)
            else:
                self.ledger.failed_imports += 1

    def reps(self, login):
        session = None
        while not self.stop.wait(random.uniform(0.3, 1.0)):
            try:
                if session is None:
                    session = RpcSession(self.running.url, self.site.database,
                        login, login)
                self.ledger.rpc_calls += 1
                leads = session.search_read('crm.lead', [], ['name', 'city'],
                    limit=20, order=[('id', 'DESC')])
                if leads:
                    name = f"Call back {login} {time.time_ns()}"
                    self.ledger.rpc_calls += 1
                    session.model('crm.task', 'create', [{'name': name,
                                'lead': random.choice(leads)['id'],
                                'kind': 'call'}])
                    self.ledger.tasks.append(name)
            except (RpcError, OSError, http.client.HTTPException):
                self.ledger.rpc_errors += 1
                session = None

    # --- the faults ---

    def kills(self):
        restart_at = time.monotonic() + self.seconds * 0.4
        while not self.stop.wait(random.uniform(
                    self.kill_every * 0.6, self.kill_every * 1.4)):
            if (self.restart_postgres and not self.ledger.postgres_restarts
                    and time.monotonic() >= restart_at):
                self.postgres.restart()
                self.ledger.postgres_restarts += 1
                continue
            kind = random.choice(KILLABLE)
            pid = self.pid(kind)
            if kind == 'web' and random.random() < 0.75:
                # Mostly one of gunicorn's workers (its master forks
                # another at once); the master itself takes the whole
                # web down until supervisord has it load the pool again.
                children = _children(pid)
                if children:
                    kind, pid = 'web worker', random.choice(children)
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                    self.ledger.count_kill(kind)

    # --- the run ---

    def run(self):
        threads = [threading.Thread(target=target, args=args, daemon=True)
            for target, args in [(self.whatsapp, ()), (self.whatsapp, ()),
                (self.statuses, ()), (self.web_forms, ()), (self.imports, ()),
                (self.reps, ('rep',)), (self.reps, ('rep2',)),
                (self.kills, ())]]
        for thread in threads:
            thread.start()
        self.stop.wait(self.seconds)
        self.stop.set()
        for thread in threads:
            thread.join(timeout=330)
        self._deliver_the_rest()

    def _deliver_the_rest(self):
        "What Meta would still deliver: the messages never answered 2xx."
        webhook = WebhookClient(self.running)
        eventually(self._answers, timeout=120, interval=1)
        for message_id, (wa_id, accepted) in list(
                self.ledger.deliveries.items()):
            if not accepted:
                body = inbound(wa_id, name="Chaos Lead", message_id=message_id)
                if eventually(lambda: 200 <= _post_status(
                            lambda: webhook.post(body)) < 300, timeout=60):
                    self.ledger.deliveries[message_id] = (wa_id, True)

    # --- the account ---

    def settled(self):
        "Nothing left to do: inbox written, outbox empty, queue done."
        pending = self.running.sql('''SELECT
            (SELECT count(*) FROM crm_whatsapp_inbox
                WHERE processed_at IS NULL),
            (SELECT count(*) FROM crm_message
                WHERE status IN ('queued', 'sending')),
            (SELECT count(*) FROM crm_enrollment WHERE next_run_at <
                timezone('UTC', now()) - interval '5 seconds'),
            (SELECT count(*) FROM ir_queue WHERE finished_at IS NULL
                AND COALESCE(requeued, 0) < 5 AND (scheduled_at IS NULL
                OR scheduled_at < timezone('UTC', now())))''')[0]
        return not any(pending), pending

    def account(self):
        sql = self.running.sql
        ok, pending = eventually(lambda: _truthy_pair(self.settled()),
            timeout=SETTLE_SECONDS, interval=2) or self.settled()
        # The sends of the last cron ticks got none during the traffic.
        self.post_statuses_out_of_order(share=0.5)
        eventually(lambda: _truthy_pair(self.settled()), timeout=60)
        accepted = {m: w for m, (w, a) in self.ledger.deliveries.items() if a}
        found = dict(sql('SELECT provider_id, count(*) FROM crm_message '
                "WHERE channel = 'whatsapp' AND direction = 'inbound' AND "
                'lead IS NOT NULL AND provider_id = ANY(%s) '
                'GROUP BY provider_id', (list(accepted),)))
        leads_by_phone = {}
        phones = self.ledger.forms + self.ledger.imported
        for phone, count in sql('SELECT phone, count(*) FROM crm_lead '
                'WHERE active AND phone = ANY(%s) GROUP BY phone', (phones,)):
            leads_by_phone[phone] = count
        sends = _sim_get(self.sim_url, 'messages') or []
        per_message = {}
        for sent in sends:
            data = sent.get('biz_opaque_callback_data') or ''
            if data.startswith('kraya:'):
                message_id = int(data.split(':')[1])
                per_message.setdefault(message_id, []).append(sent['wamid'])
        messages = {row[0]: row[1:] for row in sql(
                'SELECT id, status, provider_id, attempts FROM crm_message '
                'WHERE id = ANY(%s)', (list(per_message),))}
        unrecorded = [m for m, wamids in per_message.items()
            if m not in messages or messages[m][0] not in SENT
            or messages[m][1] not in wamids]
        twice_unrecorded = [m for m, wamids in per_message.items()
            if m in messages and len(wamids) > (messages[m][2] or 0)]
        sent_twice = [m for m, wamids in per_message.items()
            if len(wamids) > 1]
        backwards = [w for w, in sql('SELECT provider_id FROM crm_message '
                "WHERE provider_id = ANY(%s) AND status != 'read'",
                (list(self.ledger.statuses),))]
        tasks = {n for n, in sql('SELECT name FROM crm_task WHERE name = '
                'ANY(%s)', (self.ledger.tasks,))}
        stuck_enrollments = sql("SELECT count(*) FROM crm_enrollment WHERE "
            "next_run_at < timezone('UTC', now()) - interval '5 seconds'")[0][0]
        # Taken and never finished, or due and never taken (a task
        # scheduled for later, a retry's, is neither).
        lost_tasks = sql("SELECT count(*) FROM ir_queue WHERE finished_at "
            "IS NULL AND (dequeued_at IS NOT NULL OR scheduled_at IS NULL OR "
            "scheduled_at < timezone('UTC', now()) - interval '1 minute')"
            )[0][0]
        requeued = sql('SELECT COALESCE(sum(requeued), 0) FROM ir_queue')[0][0]
        left = sql("SELECT name, dequeued_at IS NOT NULL, "
            "COALESCE(requeued, 0), count(*) FROM ir_queue WHERE finished_at "
            "IS NULL GROUP BY 1, 2, 3 ORDER BY 1, 2, 3")
        restarts = self.started_restarts()
        return {
            'seconds': self.seconds,
            'settled': ok,
            'pending': pending,
            'deliveries': len(self.ledger.deliveries),
            'deliveries answered 2xx': len(accepted),
            'redeliveries': self.ledger.redeliveries,
            'deliveries retried after non-2xx': self.ledger.retried,
            'lost deliveries': len([m for m in accepted if m not in found]),
            'double deliveries': len([m for m, c in found.items() if c > 1]),
            'web forms accepted': len(self.ledger.forms),
            'web forms refused (retry later)': self.ledger.form_refusals,
            'lost web forms': len([p for p in self.ledger.forms
                    if p not in leads_by_phone]),
            'imports done': self.ledger.imports,
            'imports failed (run again later)': self.ledger.failed_imports,
            'lost imported rows': len([p for p in self.ledger.imported
                    if p not in leads_by_phone]),
            'double leads': len([p for p, c in leads_by_phone.items()
                    if c > 1]),
            'provider sends': len(sends),
            'messages sent': len(per_message),
            'sends unrecorded': len(unrecorded),
            'messages sent twice (recorded attempts)': len(sent_twice),
            'messages sent twice unrecorded': len(twice_unrecorded),
            'statuses out of order': len(self.ledger.statuses),
            'statuses moved backwards': len(backwards),
            'rep RPC calls': self.ledger.rpc_calls,
            'rep RPC errors (retried)': self.ledger.rpc_errors,
            'lost rep tasks': len(set(self.ledger.tasks) - tasks),
            'follow-ups stuck past due': stuck_enrollments,
            'tasks lost in the queue': lost_tasks,
            'tasks put back after a dead worker': requeued,
            'tasks unfinished (name, taken, put back, count)': left,
            'tasks that failed (worker logs)': self.failed_tasks(),
            'kills': dict(self.ledger.kills),
            'process restarts by supervisord': restarts,
            'postgresql restarts': self.ledger.postgres_restarts,
            }

    def failed_tasks(self):
        "{task name: times} trytond-worker logged a task as failed."
        import re
        failed = {}
        for log in (self.site.path / 'logs').glob('worker-*.log*'):
            for line in log.read_text(errors='replace').splitlines():
                match = re.search(r'<Task (\d+)@\S+> failed', line)
                if match:
                    failed[match[1]] = failed.get(match[1], 0) + 1
        if not failed:
            return {}
        names = dict(self.running.sql('SELECT id::text, name FROM ir_queue '
                'WHERE id = ANY(%s::int[])', (list(failed),)))
        by_name = {}
        for task_id, times in failed.items():
            name = names.get(task_id, 'gone')
            by_name[name] = by_name.get(name, 0) + times
        return by_name

    def started_restarts(self):
        return self._tail_all().count('exited unexpectedly: restarting it')

    def _tail_all(self):
        return (self.root / 'start.log').read_text(errors='replace')

    def tear_down(self):
        if self.started and self.started.poll() is None:
            self.started.send_signal(signal.SIGINT)
            try:
                self.started.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.started.pid, signal.SIGKILL)
        for pid in _processes_naming(self.root):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.postgres:
            self.postgres.stop()


LOST_KEYS = ('lost deliveries', 'double deliveries', 'lost web forms',
    'lost imported rows', 'double leads', 'sends unrecorded',
    'messages sent twice unrecorded', 'statuses moved backwards',
    'lost rep tasks', 'follow-ups stuck past due', 'tasks lost in the queue')


def lost_or_double(figures):
    "The figures that must be 0, with their values."
    return {key: figures[key] for key in LOST_KEYS if figures[key]}


def run_chaos(seconds=180, kill_every=5, restart_postgres=True, root=None):
    import tempfile
    with tempfile.TemporaryDirectory(prefix='kraya-chaos-') as folder:
        chaos = Chaos(seconds, kill_every, restart_postgres, root or folder)
        try:
            chaos.set_up()
            chaos.run()
            return chaos.account()
        finally:
            chaos.tear_down()


def _truthy_pair(result):
    return result if result[0] else None


def _time(hour, minute):
    return {'__class__': 'time', 'hour': hour, 'minute': minute,
        'second': 0, 'microsecond': 0}


def _try(call):
    try:
        return call()
    except (RpcError, OSError, http.client.HTTPException):
        return None


def _open(request):
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _post_status(post):
    "The HTTP status of a post, 0 when nothing (or half an answer) came."
    try:
        return post()[0]
    except (OSError, http.client.HTTPException):
        return 0


def _sim_get(sim_url, name):
    try:
        with urllib.request.urlopen(f'{sim_url}/_sim/{name}',
                timeout=30) as response:
            return json.loads(response.read())
    except (OSError, http.client.HTTPException):
        return None


def _children(pid):
    try:
        return [int(p) for p in Path(f'/proc/{pid}/task/{pid}/children')
            .read_text().split()]
    except OSError:
        return []


def _processes_naming(folder):
    pids = []
    for cmdline in Path('/proc').glob('[0-9]*/cmdline'):
        try:
            if str(folder).encode() in cmdline.read_bytes():
                pids.append(int(cmdline.parent.name))
        except OSError:
            pass
    return [pid for pid in pids if pid != os.getpid()]


def report(figures):
    lines = ['| figure | value |', '|---|---|']
    lines += [f'| {key} | {value} |' for key, value in figures.items()]
    bad = lost_or_double(figures)
    verdict = ('**0 lost, 0 double.**' if not bad and figures['settled']
        else f'**Not clean: {bad or "the site did not settle"}.**')
    return '\n'.join(lines) + '\n\n' + verdict


def main(argv=None):
    parser = argparse.ArgumentParser(prog='./crm chaos',
        description=__doc__.split('\n\n')[0])
    parser.add_argument('--seconds', type=int, default=180,
        help="how long the traffic and the faults last (default 180)")
    parser.add_argument('--kill-every', type=float, default=5,
        help="seconds between two kills, on average (default 5)")
    parser.add_argument('--no-postgres-restart', action='store_true')
    parser.add_argument('--no-results', action='store_true',
        help="print only, do not append to bench/RESULTS.md")
    args = parser.parse_args(argv)
    started = time.monotonic()
    figures = run_chaos(args.seconds, args.kill_every,
        not args.no_postgres_restart)
    text = (f'{args.seconds} s of traffic on the production shape '
        f'(gunicorn 2 workers, 2 trytond-workers, cron) on a PostgreSQL of '
        f'its own, a kill every {args.kill_every} s on average; '
        f'{time.monotonic() - started:.0f} s in all.\n\n' + report(figures))
    print(text)
    if not args.no_results:
        record_results('Fault injection (./crm chaos)', text)
    return 1 if lost_or_double(figures) or not figures['settled'] else 0


if __name__ == '__main__':
    sys.exit(main())
