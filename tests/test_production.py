"""The production shape on PostgreSQL: several web processes and queue
workers share through the database what one process would keep in memory.
Two web processes (gunicorn, as Procfile.production runs it, one per
port: the test is its own round robin) and two trytond-workers: a change
made through one web process is obeyed by the other at once, and sends
split across the workers keep the WhatsApp number's rate together."""
import contextlib
import csv
import os
import signal
import subprocess

import pytest

from kraya_site import sites, supervise

from .conftest import (
    TEST_DATABASE, RunningSite, configure, eventually, free_port, wait_for)
from .test_follow_up import ALWAYS, sends_by_message
from .test_whatsapp_webhook import new_wa_id

pytestmark = pytest.mark.skipif(not TEST_DATABASE, reason="the production "
    "shape runs on PostgreSQL; a SQLite site runs one web process and one "
    "worker, which keep their counts in memory")

SENDS = 2000
FORMS_A_MINUTE = 6  # web_form_rate_limit: per client, every process together
THROUGHPUT = 50  # the number's messages a second, low for a short test


class Production(RunningSite):
    "A demo site on PostgreSQL with two web processes, one URL each."

    def __init__(self, site, processes, whatsapp, urls):
        super().__init__(site, processes, whatsapp, mail=None)
        self.urls = urls
        self.url = urls[0]

    def login_at(self, url, login):
        from .rpc import RpcSession
        return RpcSession(url, self.database, login, login)

    def console(self, code):
        """Run Python in trytond-console on the site (pool, transaction):
        the way an admin scripts the application itself."""
        result = subprocess.run([sites.bin_path('trytond-console'), '-c',
                str(self.site.config_file), '-d', self.database],
            input=code, text=True, capture_output=True, env=self.site.environ(),
            timeout=300)
        assert result.returncode == 0 and 'Traceback' not in result.stderr, \
            result.stderr
        return result.stdout


def start(argv, site, log):
    return subprocess.Popen(argv, env=site.environ(), stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True, cwd=sites.ROOT)


def stop(processes):
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture(scope='module')
def production(tmp_path_factory):
    from kraya_peers.whatsapp import Simulator
    root = tmp_path_factory.mktemp('sites')
    name = f'kraya_prod_{os.getpid()}'
    site = sites.new_site(name, db_uri=f'{TEST_DATABASE}/{name}', demo=True,
        root=root, listen=f'127.0.0.1:{free_port()}')
    conf = site.config()
    assert conf.get('cache', 'clean_timeout') == '0'
    whatsapp = Simulator(app_secret=conf.get('kraya_crm',
            'whatsapp_app_secret'),
        access_token=conf.get('kraya_crm', 'whatsapp_access_token'),
        phone_number_id=conf.get('kraya_crm', 'whatsapp_phone_number_id'),
        throughput=THROUGHPUT, pair_interval=0, statuses=[]).start()
    configure(site, {
            ('kraya_crm', 'whatsapp_api_url'): whatsapp.url,
            ('kraya_crm', 'whatsapp_throughput'): THROUGHPUT,
            ('kraya_crm', 'web_form_rate_limit'): FORMS_A_MINUTE,
            ('email', 'uri'): f'smtp://127.0.0.1:{free_port()}',
            })
    shape = supervise.process_settings(site, web_workers=1)
    web, = supervise.site_commands(site, ['web'], shape)
    urls, processes = [], []
    log = open(root / 'processes.log', 'w')
    try:
        for _ in range(2):
            port = free_port()
            argv = list(web.argv)
            argv[argv.index('--bind') + 1] = f'127.0.0.1:{port}'
            processes.append(start(argv, site, log))
            urls.append(f'http://127.0.0.1:{port}')
        for url, process in zip(urls, processes):
            wait_for(url, process)
        yield Production(site, processes, whatsapp, urls)
    finally:
        stop(processes)
        log.close()
        whatsapp.stop()
        site.drop()


def test_production_shape_is_gunicorn_two_workers_and_cron(production):
    processes = supervise.site_commands(production.site,
        ['web', 'cron', 'worker'], supervise.process_settings(
            production.site, web_workers=3))
    names = [p.name for p in processes]
    assert names == ['web', 'cron', 'worker-1', 'worker-2']
    web = processes[0].argv
    assert os.path.basename(web[0]) == 'gunicorn'
    assert web[web.index('--workers') + 1] == '3'
    assert web[-1] == 'trytond.application:app'


def test_record_rule_changed_through_one_web_process_is_obeyed_by_the_other(
        production):
    first, second = production.urls
    admin = production.login_at(first, 'admin')
    rep = production.login_at(second, 'rep')
    seen = rep.search_count('crm.lead', [])
    assert seen > 0
    # A rule for everyone (the rep's own come from the module's data,
    # which the desk does not let anyone edit).
    group_id, = admin.model('ir.rule.group', 'create', [{
                'name': "No leads for a while", 'model': 'crm.lead',
                'global_p': True, 'rules': [['create', [
                            {'domain': '[["id", "=", -1]]'}]]]}])
    try:
        # At once: no wait, no retry.
        assert rep.search_count('crm.lead', []) == 0
    finally:
        admin.model('ir.rule.group', 'delete', [group_id])
    assert rep.search_count('crm.lead', []) == seen


def test_setting_changed_through_one_web_process_is_obeyed_by_the_other(
        production):
    first, second = production.urls
    manager = production.login_at(first, 'manager')
    rep = production.login_at(second, 'rep')

    def new_lead_band():
        "A lead with a company name scores 5 points (the demo's rules)."
        lead_id, = rep.model('crm.lead', 'create', [{
                    'name': "Farhan Qureshi", 'company_name': "Qureshi Exports",
                    'phone': '+' + new_wa_id()}])
        lead, = rep.model('crm.lead', 'read', [lead_id], ['score', 'band'])
        return lead
    before = new_lead_band()
    assert 0 < before['score'] < 40 and before['band'] == 'cold'
    thresholds = manager.model('crm.configuration', 'read', [1],
        ['band_hot_from', 'band_warm_from'])[0]
    manager.model('crm.configuration', 'write', [1],
        {'band_warm_from': 1, 'band_hot_from': before['score']})
    try:
        assert new_lead_band()['band'] == 'hot'
    finally:
        manager.model('crm.configuration', 'write', [1], {
                'band_hot_from': thresholds['band_hot_from'],
                'band_warm_from': thresholds['band_warm_from']})
    assert new_lead_band()['band'] == 'cold'


def sends_in_any_second(times):
    "The most sends within any one second."
    times = sorted(times)
    most, start = 0, 0
    for end, at in enumerate(times):
        while at - times[start] >= 1.0:
            start += 1
        most = max(most, end - start + 1)
    return most


def queue_sends(production, tmp_path):
    """SENDS leads imported with a WhatsApp opt-in into a source whose
    follow-up sends a template, and one cron run: SENDS queued messages."""
    manager = production.login('manager')
    sequence_id, = manager.model('crm.sequence', 'create', [{
                'name': "Production pace", **ALWAYS,
                'steps': [['create', [{'name': "Welcome", 'delay': 0,
                                'delay_unit': 'minutes',
                                'channel': 'whatsapp_template',
                                'template_name': 'welcome'}]]]}])
    source, = manager.search_read('crm.source', [('code', '=', 'import')],
        ['id'])
    manager.model('crm.source', 'write', [source['id']],
        {'follow_up_sequence': sequence_id})
    path = tmp_path / 'leads.csv'
    with open(path, 'w', newline='') as file:
        writer = csv.writer(file)
        writer.writerow(['Name', 'Mobile'])
        for number in range(SENDS):
            writer.writerow([f"Lead {number}", f'+9198{number:08d}'])
    subprocess.run([sites.bin_path('python'), '-m', 'kraya_site.cli',
            'import', str(path), '--source', 'import', '--site',
            str(production.site.path), '--consent-basis',
            "Asked for a call back at the expo"],
        check=True, env=production.site.environ(), capture_output=True,
        timeout=300)
    subprocess.run([sites.bin_path('trytond-cron'), '--once', '-c',
            str(production.site.config_file), '-d', production.database],
        env=production.site.environ(), check=True, timeout=300)
    return [i for i, in production.sql(
            "SELECT id FROM crm_message WHERE enrollment IN (SELECT id FROM "
            "crm_enrollment WHERE sequence = %s)", (sequence_id,))]


PUSH_SENDS = '''
Message = pool.get('crm.message')
due = Message.outbox_due_one()
with transaction.set_context(queue_name='crm_outbox'):
    for _ in range({count}):
        Message.__queue__.send_outbox(Message.browse([due]))
transaction.commit()
'''


def waiting_sends(production):
    return production.sql("SELECT count(*) FROM ir_queue WHERE name = "
        "'crm_outbox' AND dequeued_at IS NULL")[0][0]


def test_sends_split_across_two_workers_go_once_each_within_the_rate(
        production, tmp_path):
    ids = queue_sends(production, tmp_path)
    assert len(ids) == SENDS
    site = production.site
    first, second = supervise.site_commands(site, ['worker'])
    cron, = supervise.site_commands(site, ['cron'])
    log = open(tmp_path / 'workers.log', 'w')
    # The first worker fills its pool (a process per core) with outbox
    # tasks; the second takes the two left: both send at once.
    in_pool = os.cpu_count()
    production.console(PUSH_SENDS.format(count=in_pool + 2
            - waiting_sends(production)))
    workers = [start(first.argv, site, log)]
    try:
        assert eventually(lambda: waiting_sends(production) == 2,
            timeout=60), "the first worker took no task"
        workers.append(start(second.argv, site, log))
        assert eventually(lambda: waiting_sends(production) == 0,
            timeout=60), "the second worker took no task"
        # An outbox task sends for 50 s at most; on a slow machine the
        # cron's minute wakes the outbox for the rest, as in production.
        workers.append(start(cron.argv, site, log))

        def sent():
            return production.sql("SELECT count(*) FROM crm_message WHERE "
                "id = ANY(%s) AND status = 'sent'", (ids,))[0][0]
        assert eventually(lambda: sent() == SENDS,
            timeout=SENDS / THROUGHPUT * 8, interval=1), (
            sent(), (tmp_path / 'workers.log').read_text()[-3000:])
    finally:
        stop(workers)
        log.close()
    sends = [s for s in production.whatsapp.sent
        if s['biz_opaque_callback_data']]
    counts = sends_by_message(production.whatsapp, ids)
    assert set(counts.values()) == {1}, "a message went twice, or never"
    attempts = production.sql("SELECT attempts, count(*) FROM crm_message "
        "WHERE id = ANY(%s) GROUP BY attempts", (ids,))
    # None refused by WhatsApp's throughput limit and tried again.
    assert attempts == [(1, SENDS)]
    # The first sends may go as one burst (a tenth of a second's worth).
    assert sends_in_any_second([s['at'] for s in sends]) \
        <= THROUGHPUT * 1.1 + 1
    seconds = max(s['at'] for s in sends) - min(s['at'] for s in sends)
    assert seconds >= (SENDS - THROUGHPUT / 10) / THROUGHPUT * 0.98


def test_rate_limit_counts_the_requests_of_every_web_process_together(
        production):
    manager = production.login('manager')
    website, = manager.search('crm.source', [('code', '=', 'website')])
    manager.model('crm.source', 'write', [website], {'web_form': True})
    key = manager.model('crm.source', 'read', [website],
        ['capture_key'])[0]['capture_key']

    def post(url):
        import json
        import urllib.error
        import urllib.request
        request = urllib.request.Request(
            f'{url}/{production.database}/crm/capture/{key}',
            data=json.dumps({'name': "Ritu Shah",
                    'mobile': '+' + new_wa_id()}).encode(),
            headers={'Content-Type': 'application/json'})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code
    # Alternately through each web process: one count for the client.
    answers = [post(production.urls[i % 2])
        for i in range(FORMS_A_MINUTE + 2)]
    assert answers == [200] * FORMS_A_MINUTE + [429, 429]


REQUEUE = '''
Queue = pool.get('ir.queue')
Lead = pool.get('crm.lead')
company, = pool.get('company.company').search([], limit=1)
lead, = Lead.create([{{'name': "Harsh Vora", 'phone': '+{number}',
            'company': company.id}}])
with transaction.set_context(queue_name='crm_assignment'):
    Lead.__queue__.assign_captured([lead])
task, = Queue.search([('name', '=', 'crm_assignment')],
    order=[('id', 'DESC')], limit=1)
transaction.commit()
print(lead.id, task.id)
'''


def run_cron(production, method):
    admin = production.login('admin')
    cron_ids = admin.search('ir.cron', [('method', '=', method)])
    admin.model('ir.cron', 'write', cron_ids, {'next_call': None})
    subprocess.run([sites.bin_path('trytond-cron'), '--once', '-c',
            str(production.site.config_file), '-d', production.database],
        env=production.site.environ(), check=True, timeout=300)


def test_task_of_a_worker_that_died_is_queued_again_and_a_running_one_is_not(
        production, tmp_path):
    import psycopg
    lead_id, task_id = map(int, production.console(REQUEUE.format(
                number=new_wa_id())).split()[-2:])
    # A worker took it two minutes ago (as ir.queue.pull marks it) and
    # died before finishing it.
    production.sql("UPDATE ir_queue SET dequeued_at = timezone('UTC', now())"
        " - interval '2 minutes' WHERE id = %s", (task_id,))
    uri = f"{production.site.database_uri.rstrip('/')}/{production.database}"
    with psycopg.connect(uri) as running:
        # As a live worker's task does: its row locked by its transaction.
        running.execute('SELECT 1 FROM ir_queue WHERE id = %s FOR UPDATE',
            (task_id,))
        run_cron(production, 'ir.queue|requeue_abandoned')
        assert production.sql('SELECT dequeued_at IS NOT NULL, requeued '
            'FROM ir_queue WHERE id = %s', (task_id,)) == [(True, 0)]
        running.rollback()
    run_cron(production, 'ir.queue|requeue_abandoned')
    assert production.sql('SELECT dequeued_at IS NULL, requeued FROM '
        'ir_queue WHERE id = %s', (task_id,)) == [(True, 1)]
    worker, = supervise.site_commands(production.site, ['worker'],
        supervise.process_settings(production.site, queue_workers=1))
    with open(tmp_path / 'worker.log', 'w') as log:
        process = start(worker.argv, production.site, log)
        try:
            assert eventually(lambda: production.sql('SELECT finished_at '
                    'IS NOT NULL FROM ir_queue WHERE id = %s', (task_id,)
                    )[0][0], timeout=60), (tmp_path / 'worker.log'
                ).read_text()[-3000:]
        finally:
            stop([process])
    owner, = production.sql('SELECT owner FROM crm_lead WHERE id = %s',
        (lead_id,))[0]
    assert owner, "the lead was never assigned"


CAPTURE_RACE = '''
from trytond import backend
Lead = pool.get('crm.lead')
company, = pool.get('company.company').search([], limit=1)
person = [{{'name': "Farah Khan", 'phone': '{number}', 'whatsapp': '{number}'}}]
with transaction.set_context(company=company.id):
    # This capture's snapshot is taken before the other one commits, as
    # when two workers each take a delivery of one new sender.
    Lead.search([], limit=1)
    with transaction.new_transaction() as other:
        Lead.capture(person, source='whatsapp')
        other.commit()
    try:
        Lead.capture(person, source='whatsapp')
        print('created a second lead')
    except backend.DatabaseOperationalError:
        print('conflict: run again')
    transaction.rollback()
    with transaction.new_transaction():
        (lead, created), = Lead.capture(person, source='whatsapp')
        print('created' if created else 'found the first lead')
'''


def test_two_captures_of_one_person_at_once_make_one_lead(production):
    number = '+' + new_wa_id()
    output = production.console(CAPTURE_RACE.format(number=number))
    assert output.split('\n')[:2] == [
        'conflict: run again', 'found the first lead'], output
    assert production.sql("SELECT count(*) FROM crm_lead WHERE whatsapp = %s",
        (number,)) == [(1,)]
