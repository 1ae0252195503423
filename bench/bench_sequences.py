"""Benchmark of the follow-up engine (`./crm bench sequences`).

On a fresh site (with marketing_automation activated beside kraya_crm),
builds by SQL 100,000 leads with a WhatsApp opt-in, each enrolled in one
sequence (5,000 of the enrollments due), and, for the peer, a
marketing_automation scenario on 100,000 parties with 100,000 waiting
record activities (5,000 due). Then times:

- ours: one cron tick, `Enrollment.run_due()` (select the due enrollments
  through the next_run_at index, run their step, queue 5,000 WhatsApp
  messages, wake the outbox), in a transaction as the cron runs it;
- Tryton's marketing_automation engine at the same scale: its cron method
  `RecordActivity.process` plus the `do` tasks it queues, run as the
  worker runs them;
- the raw-SQL bound: what our tick writes, in five statements: one
  SELECT of the due enrollments through the index with their leads, one
  executemany INSERT of their messages, one UPDATE of the enrollments,
  one INSERT of the leads' conversations (the inbox's rows, which our
  tick makes or brings up to date) and one UPDATE of the leads now
  contacted; committed, as the tick commits (then undone, untimed);
- the sends: `Message.send_outbox()` for 2,000 queued messages through the
  WhatsApp Cloud API simulator, started in this process at 80 messages/s
  (Meta's default throughput per business number).

on SQLite, and on PostgreSQL when KRAYA_BENCH_POSTGRESQL (e.g.
postgresql://127.0.0.1:5432) is set or a server answers on 127.0.0.1:5432.
Prints the figures and ratios and appends a dated section to
bench/RESULTS.md.

    ./crm bench sequences [--enrollments 100000] [--due 5000] [--sends 2000]
        [--no-postgresql] [--profile]
"""
import argparse
import configparser
import datetime as dt
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.machine import (  # noqa: E402
    describe, postgresql_server, record_results)

THROUGHPUT = 80  # WhatsApp Cloud API messages a second per business number
PHONE_NUMBER_ID = '100000000000001'
CAMPAIGN = 'bench-sequences'
TEMPLATE = 'bench_follow_up'


# ---- the measurements, each in a process of its own (trytond reads the
# site's configuration once, when first imported) ----

def worker(args):
    sys.path.insert(0, str(ROOT / 'apps'))
    from kraya_site.import_cli import use_site, user_context
    from kraya_site.sites import Site
    site = Site(args.site, root=args.site_root)
    use_site(site)
    from trytond.pool import Pool
    from trytond.transaction import Transaction
    database = site.database
    Pool(database).init()
    with Transaction().start(database, 0, readonly=True):
        user_id, context = user_context('admin')
    # As trytond-cron runs its jobs.
    context = dict(context, _skip_warnings=True)
    run = {'setup': build_data, 'raw': time_raw, 'peer': time_peer,
        'ours': time_ours, 'sends': time_sends}[args.worker]
    # Both engines' ticks run in a process as a cron's: its pool loaded
    # and out of the garbage collector's sight, as kraya_crm's first cron
    # run leaves it (cron_process.py; marketing_automation's process() runs
    # in the same cron processes).
    from kraya_crm.cron_process import freeze_loaded_objects
    freeze_loaded_objects()
    result = run(database, user_id, context, args)
    print(json.dumps(result))


class Bulk:
    "Set-based SQL on the bench site's database, for SQLite and PostgreSQL."

    def __init__(self, transaction):
        from trytond import backend
        self.transaction = transaction
        self.cursor = transaction.connection.cursor()
        self.postgresql = backend.name == 'postgresql'
        self.mark = '%s' if self.postgresql else '?'

    def execute(self, query, params=()):
        "Run a query written with %s for its parameters (and no other %)."
        self.cursor.execute(query.replace('%s', self.mark), params)
        return self.cursor

    def numbers(self, count):
        "A WITH clause giving the rows n(i), i = 1..count."
        if self.postgresql:
            return f'WITH n(i) AS (SELECT generate_series(1, {int(count)}))'
        return (f'WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL '
            f'SELECT i + 1 FROM n WHERE i < {int(count)})')

    def minutes_after(self, expression):
        "A timestamp: the %s parameter plus `expression` minutes."
        if self.postgresql:
            return f"(%s + ({expression}) * INTERVAL '1 minute')"
        return f"datetime(%s, ({expression}) || ' minutes')"

    def run_at(self, first_id, count, due):
        """When the row of id `id` is due (the first of the `count` rows
        being `first_id`): `due` of them, spread evenly over the ids, in the
        last hour, the others in the next week. Two %s: the time now."""
        stride = max(count // due, 1)
        rank = f'(id - {int(first_id)})'

        def mod(value, by):  # % would be taken for a parameter
            return f'({value} - ({value}) / {by} * {by})'
        return (f'CASE WHEN {mod(rank, stride)} = 0 '
            f'AND {rank} / {stride} < {int(due)} '
            f'THEN {self.minutes_after(f"-1 - {mod(rank, 60)}")} '
            f'ELSE {self.minutes_after(f"60 + {mod(rank, 10000)}")} END')

    def max_id(self, table):
        return self.execute(f'SELECT COALESCE(MAX(id), 0) FROM {table}'
            ).fetchone()[0]

    def first_id(self, table, after):
        "The first id above `after`: of the rows just inserted."
        return self.execute(f'SELECT MIN(id) FROM {table} WHERE id > %s',
            (after,)).fetchone()[0]

    def version(self):
        if self.postgresql:
            version, = self.execute('SHOW server_version').fetchone()
            return f'PostgreSQL {version.split()[0]}'
        import sqlite3
        return f'SQLite {sqlite3.sqlite_version}'


def build_data(database, user_id, context, args):
    """The sequence, the leads with their WhatsApp opt-in and enrollments,
    and marketing_automation's scenario, parties, records and waiting
    activities: the rows by SQL (the setup is not what is measured)."""
    from trytond.pool import Pool
    from trytond.transaction import Transaction
    from kraya_crm.message import utcnow
    pool = Pool(database)
    Sequence = pool.get('crm.sequence')
    Source = pool.get('crm.source')
    Scenario = pool.get('marketing.automation.scenario')
    Activity = pool.get('marketing.automation.activity')
    count, due = args.enrollments, args.due
    step = {'channel': 'whatsapp_template', 'template_name': TEMPLATE,
        'template_language': 'en',
        'template_parameters': '{lead.first_name}\n{lead.city}'}
    timings = {}
    with Transaction().start(database, user_id, context=context) \
            as transaction:
        sequence, = Sequence.create([{
                    'name': "Bench: site visit follow-up",
                    'applies_to': 'lead',
                    'business_days': [str(d) for d in range(7)],
                    'business_hours_start': dt.time(0, 0),
                    'business_hours_end': dt.time(23, 59, 59),
                    'steps': [('create', [
                                dict(step, name="Welcome", position=1,
                                    delay=0, delay_unit='minutes'),
                                dict(step, name="Site visit nudge",
                                    position=2, delay=2, delay_unit='days'),
                                ])],
                    }])
        first_step = sequence.steps[0]
        scenario, = Scenario.create([{
                    'name': "Bench: follow-up", 'model': 'party.party',
                    'domain': '[]',
                    }])
        Scenario.run([scenario])
        # marketing_automation's only action sends an email; an activity
        # without one is its least work: it is marked done, nothing else.
        activity, = Activity.create([{
                    'name': "Follow-up", 'parent': str(scenario),
                    'action': None,
                    }])
        source = Source.get_by_code('import')
        bulk = Bulk(transaction)
        now, local_now = utcnow(), dt.datetime.now()
        company = int(context['company'])

        start = time.perf_counter()
        last = bulk.max_id('crm_lead')
        bulk.execute(
            'INSERT INTO crm_lead (name, phone, whatsapp, city, campaign, '
            'company, owner, source, status, score, active, '
            'not_on_whatsapp, create_uid, create_date) '
            f'{bulk.numbers(count)} '
            "SELECT 'Lead ' || i, '+91' || (9000000000 + i), "
            "'+91' || (9000000000 + i), 'Mumbai', "
            f"'{CAMPAIGN}', {company}, {int(user_id)}, {int(source.id)}, "
            "'new', 0, %s, %s, %s, %s FROM n",
            (True, False, user_id, now))
        first = bulk.first_id('crm_lead', last)
        bulk.execute(
            'INSERT INTO crm_lead_consent (lead, channel, state, '
            'opted_in_at, opted_in_how, opted_in_basis, create_uid, '
            'create_date) '
            "SELECT id, 'whatsapp', 'opted_in', %s, 'form', "
            "'Ticked \"WhatsApp me about site visits\" on the website', "
            '%s, %s FROM crm_lead WHERE id >= %s',
            (now, user_id, now, first))
        bulk.execute(
            'INSERT INTO crm_enrollment (sequence, lead, state, next_step, '
            'next_run_at, enrolled_at, create_uid, create_date) '
            f"SELECT {int(sequence.id)}, id, 'active', {int(first_step.id)}, "
            f'{bulk.run_at(first, count, due)}, %s, %s, %s '
            'FROM crm_lead WHERE id >= %s',
            (now, now, now, user_id, now, first))
        timings['ours'] = time.perf_counter() - start

        start = time.perf_counter()
        last_party = bulk.max_id('party_party')
        bulk.execute(
            'INSERT INTO party_party (name, code, active, create_uid, '
            f'create_date) {bulk.numbers(count)} '
            "SELECT 'Party ' || i, 'BENCH' || i, %s, %s, %s FROM n",
            (True, user_id, now))
        last_record = bulk.max_id('marketing_automation_record')
        bulk.execute(
            'INSERT INTO marketing_automation_record (scenario, record, '
            'blocked, uuid, create_uid, create_date) '
            f"SELECT {int(scenario.id)}, 'party.party,' || id, %s, "
            "'bench' || id, %s, %s FROM party_party WHERE id > %s",
            (False, user_id, now, last_party))
        first_record = bulk.first_id('marketing_automation_record',
            last_record)
        # marketing_automation times its activities in server local time.
        bulk.execute(
            'INSERT INTO marketing_automation_record_activity (record, '
            'activity, at, state, email_opened, email_clicked, create_uid, '
            'create_date) '
            f'SELECT id, {int(activity.id)}, '
            f'{bulk.run_at(first_record, count, due)}, '
            "'waiting', %s, %s, %s, %s "
            'FROM marketing_automation_record WHERE id >= %s',
            (local_now, local_now, False, False, user_id, now, first_record))
        timings['peer'] = time.perf_counter() - start
        # The demo's own follow-ups wait a month: the tick runs ours alone.
        bulk.execute('UPDATE crm_enrollment SET next_run_at = %s '
            'WHERE sequence != %s AND next_run_at IS NOT NULL',
            (now + dt.timedelta(days=30), sequence.id))
        transaction.commit()
        if bulk.postgresql:
            # What autovacuum would have done by the next tick.
            start = time.perf_counter()
            for table in ['crm_lead', 'crm_lead_consent', 'crm_enrollment',
                    'party_party', 'marketing_automation_record',
                    'marketing_automation_record_activity']:
                bulk.execute(f'ANALYZE {table}')
            transaction.commit()
            timings['analyze'] = time.perf_counter() - start
        counts = {
            'enrollments': bulk.execute('SELECT COUNT(*) FROM crm_enrollment '
                'WHERE sequence = %s', (sequence.id,)).fetchone()[0],
            'enrollments_due': bulk.execute('SELECT COUNT(*) FROM '
                'crm_enrollment WHERE sequence = %s AND next_run_at <= %s',
                (sequence.id, utcnow())).fetchone()[0],
            'all_due': bulk.execute('SELECT COUNT(*) FROM crm_enrollment '
                'WHERE next_run_at <= %s', (utcnow(),)).fetchone()[0],
            'activities': bulk.execute('SELECT COUNT(*) FROM '
                "marketing_automation_record_activity "
                "WHERE state = 'waiting'").fetchone()[0],
            'activities_due': bulk.execute('SELECT COUNT(*) FROM '
                "marketing_automation_record_activity "
                "WHERE state = 'waiting' AND at <= %s",
                (dt.datetime.now(),)).fetchone()[0],
            }
        version = bulk.version()
    return {'seconds': timings, 'counts': counts, 'version': version,
        'sequence': sequence.id, 'step': first_step.id}


def explain(query):
    "The plan of a python-sql query: EXPLAIN ANALYZE, or SQLite's plan."
    from trytond.transaction import Transaction
    transaction = Transaction()
    cursor = transaction.connection.cursor()
    sql, params = tuple(query)
    if transaction.database.flavor.paramstyle == 'qmark':
        cursor.execute('EXPLAIN QUERY PLAN ' + sql, params)
        return [row[-1] for row in cursor]
    cursor.execute('EXPLAIN (ANALYZE, COSTS) ' + sql, params)
    return [row[0] for row in cursor]


def time_raw(database, user_id, context, args):
    """The bound: what the tick writes, in five statements, committed as
    the tick commits it: the due enrollments with their lead's number and
    name, one executemany INSERT of their messages, one UPDATE of the
    enrollments, one INSERT of the leads' conversations (none exists yet:
    the leads are new) with their last message, one UPDATE of the leads to
    contacted. Then, untimed, it is all undone (committed too), so that the
    peer and our tick find the same data."""
    from trytond import backend
    from trytond.pool import Pool
    from trytond.transaction import Transaction
    from kraya_crm.enrollment import BATCH_SIZE
    from kraya_crm.message import utcnow
    pool = Pool(database)
    Enrollment = pool.get('crm.enrollment')
    Step = pool.get('crm.sequence.step')
    with Transaction().start(database, user_id, context=context) \
            as transaction:
        step = Step(args.step)
        steps = list(step.sequence.steps)
        following = steps[steps.index(step) + 1:]
        next_step = following[0].id if following else None
        bulk = Bulk(transaction)
        now = utcnow()
        plan = explain(Enrollment.due_query(now, BATCH_SIZE))
        due = ('FROM crm_enrollment AS e JOIN crm_lead AS l ON l.id = e.lead '
            'WHERE e.next_run_at <= %s ORDER BY e.next_run_at LIMIT %s')
        before = {
            'enrollments': bulk.execute('SELECT e.next_step, e.next_run_at, '
                'e.last_step_at, e.write_uid, e.write_date, e.id ' + due,
                (now, args.due)).fetchall(),
            'leads': bulk.execute('SELECT l.status, l.write_uid, '
                'l.write_date, l.id ' + due, (now, args.due)).fetchall(),
            'conversation': bulk.max_id('crm_conversation'),
            }
        transaction.rollback()
        columns = ['lead', 'enrollment', 'step', 'direction', 'channel',
            'kind', 'status', 'address', 'template_name',
            'template_language', 'template_parameters', 'send_after', 'at',
            'attempts', 'create_uid', 'create_date']
        insert = 'INSERT INTO crm_message (%s) VALUES (%s)' % (
            ', '.join(f'"{c}"' for c in columns),
            ', '.join([bulk.mark] * len(columns)))
        start = time.perf_counter()
        last_message, = bulk.execute(
            'SELECT COALESCE(MAX(id), 0) FROM crm_message').fetchone()
        rows = bulk.execute(
            'SELECT e.id, e.lead, l.whatsapp, l.name, l.city ' + due,
            (now, args.due)).fetchall()
        bulk.cursor.executemany(insert, [
                (lead, enrollment, step.id, 'outbound', 'whatsapp',
                    'template', 'queued', number, TEMPLATE, 'en',
                    json.dumps([name.split()[0], city]), now, now, 0,
                    user_id, now)
                for enrollment, lead, number, name, city in rows])
        ids = [r[0] for r in rows]
        bulk.execute(
            'UPDATE crm_enrollment SET next_step = %s, next_run_at = %s, '
            'last_step_at = %s, write_uid = %s, write_date = %s '
            f'WHERE id IN ({", ".join(["%s"] * len(ids))})',
            [next_step, now + dt.timedelta(days=2), now, user_id, now]
            + ids)
        bulk.execute(
            'INSERT INTO crm_conversation (lead, last_message, '
            'last_message_at, changed_at, state, unread, waiting, '
            'create_uid, create_date) '
            "SELECT lead, id, at, %s, 'open', 0, %s, %s, %s "
            'FROM crm_message WHERE id > %s',
            (now, False, user_id, now, last_message))
        leads = [r[1] for r in rows]
        bulk.execute(
            "UPDATE crm_lead SET status = 'contacted', write_uid = %s, "
            f'write_date = %s WHERE id IN ({", ".join(["%s"] * len(leads))}) '
            "AND status = 'new'", [user_id, now] + leads)
        transaction.commit()
        seconds = time.perf_counter() - start
        undo(bulk, before, last_message)
        transaction.commit()
    if backend.name == 'postgresql':
        # The undone rows are dead tuples in the tables and indexes our
        # tick runs on next: gone by then, as autovacuum would leave them
        # between two ticks.
        with Transaction().start(database, user_id, context=context,
                autocommit=True) as transaction:
            cursor = transaction.connection.cursor()
            for table in ['crm_enrollment', 'crm_lead', 'crm_message',
                    'crm_conversation']:
                cursor.execute(f'VACUUM ANALYZE {table}')
    return {'seconds': seconds, 'rows': len(rows), 'plan': plan}


def undo(bulk, before, last_message):
    "Put back what the raw bound changed, from the rows read before it."
    bulk.execute('DELETE FROM crm_conversation WHERE id > %s',
        (before['conversation'],))
    bulk.execute('DELETE FROM crm_message WHERE id > %s', (last_message,))
    bulk.cursor.executemany(('UPDATE crm_enrollment SET next_step = %s, '
            'next_run_at = %s, last_step_at = %s, write_uid = %s, '
            'write_date = %s WHERE id = %s').replace('%s', bulk.mark),
        before['enrollments'])
    bulk.cursor.executemany(('UPDATE crm_lead SET status = %s, '
            'write_uid = %s, write_date = %s WHERE id = %s').replace(
            '%s', bulk.mark), before['leads'])


def time_peer(database, user_id, context, args):
    """marketing_automation's tick: its cron method, process(), selects the
    due waiting activities and queues `do` for them in batches; the worker
    then runs each batch in its own transaction, as trytond-worker does."""
    from trytond.pool import Pool
    from trytond.transaction import Transaction
    from trytond.worker import run_task
    from sql import Null
    pool = Pool(database)
    RecordActivity = pool.get('marketing.automation.record.activity')
    Queue = pool.get('ir.queue')
    with Transaction().start(database, user_id, context=context) \
            as transaction:
        queue = Queue.__table__()
        cursor = transaction.connection.cursor()
        cursor.execute(*queue.select(queue.id,
                order_by=[queue.id.desc], limit=1))
        last_task, = cursor.fetchone() or (0,)
        # The same search as process(), to show how it reaches the rows.
        plan = explain(RecordActivity.search([
                    ('state', '=', 'waiting'),
                    ('at', '<=', dt.datetime.now()),
                    ('record.blocked', '!=', True),
                    ], query=True))
        transaction.rollback()
        start = time.perf_counter()
        RecordActivity.process()
        transaction.commit()
        process_seconds = time.perf_counter() - start
        cursor = transaction.connection.cursor()
        cursor.execute(*queue.select(queue.id,
                where=(queue.id > last_task) & (queue.dequeued_at == Null),
                order_by=[queue.id.asc]))
        tasks = [i for i, in cursor]
    start = time.perf_counter()
    for task_id in tasks:
        run_task(database, task_id)
    do_seconds = time.perf_counter() - start
    with Transaction().start(database, user_id, context=context):
        done = RecordActivity.search([('state', '=', 'done')], count=True)
    return {'process_seconds': process_seconds, 'do_seconds': do_seconds,
        'seconds': process_seconds + do_seconds, 'tasks': len(tasks),
        'done': done, 'plan': plan}


def time_ours(database, user_id, context, args):
    """One cron tick, Enrollment.run_due(), with the time of its parts:
    due() (the select), advance() (the steps and the rows they write) and
    the rest (commits, waking the outbox)."""
    from trytond.pool import Pool
    from trytond.transaction import Transaction
    pool = Pool(database)
    Enrollment = pool.get('crm.enrollment')
    Message = pool.get('crm.message')
    parts = {'due': 0.0, 'advance': 0.0}

    def timed(name, method):
        def wrapper(cls, *args, **kwargs):
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                parts[name] += time.perf_counter() - start
        return classmethod(wrapper)
    Enrollment.due = timed('due', Enrollment.due)
    Enrollment.advance = timed('advance', Enrollment.advance)
    profile = None
    if args.profile:
        import cProfile
        profile = cProfile.Profile()
    with Transaction().start(database, user_id, context=context):
        start = time.perf_counter()
        if profile:
            profile.enable()
        Enrollment.run_due()
        if profile:
            profile.disable()
        seconds = time.perf_counter() - start
    if profile:
        import pstats
        stats = pstats.Stats(profile, stream=sys.stderr)
        stats.sort_stats('cumulative').print_stats(45)
        stats.sort_stats('tottime').print_stats(25)
    with Transaction().start(database, user_id, context=context):
        sequence = pool.get('crm.sequence.step')(args.step).sequence
        queued = Message.search([
                ('step', '=', args.step), ('status', '=', 'queued')],
            count=True)
        skipped = Message.search([
                ('step', '=', args.step), ('status', '=', 'skipped')],
            count=True)
        advanced = Enrollment.search([
                ('sequence', '=', sequence.id),
                ('next_step', '!=', args.step)], count=True)
    return {'seconds': seconds, 'due_seconds': parts['due'],
        'advance_seconds': parts['advance'], 'queued': queued,
        'skipped': skipped, 'advanced': advanced}


def time_sends(database, user_id, context, args):
    """Send `--sends` queued messages with Message.send_outbox(), called
    until none is due, through the simulator the site's configuration
    points at. The other queued messages wait a day."""
    from trytond.pool import Pool
    from trytond.transaction import Transaction
    from kraya_crm.message import utcnow
    Message = Pool(database).get('crm.message')
    with Transaction().start(database, user_id, context=context) \
            as transaction:
        bulk = Bulk(transaction)
        now = utcnow()
        ids = [i for i, in bulk.execute(
                "SELECT id FROM crm_message WHERE status = 'queued' "
                'AND step = %s AND send_after <= %s ORDER BY id LIMIT %s',
                (args.step, now, args.sends))]
        if len(ids) < args.sends:
            ids += fresh_messages(bulk, args.sends - len(ids), user_id, now)
        # Only these are due: the others wait a day.
        bulk.execute("UPDATE crm_message SET send_after = %s "
            "WHERE status = 'queued'", (now + dt.timedelta(days=1),))
        bulk.execute('UPDATE crm_message SET send_after = %s '
            f'WHERE id IN ({", ".join(map(str, ids))})', (now,))
        transaction.commit()

    def unsent():
        "How many of them are still to send, seen from a new transaction."
        with Transaction().new_transaction(readonly=True) as transaction:
            return Bulk(transaction).execute(
                'SELECT COUNT(*) FROM crm_message '
                f'WHERE id IN ({", ".join(map(str, ids))}) '
                "AND status IN ('queued', 'sending')").fetchone()[0]

    calls = 0
    with Transaction().start(database, user_id, context=context):
        start = time.perf_counter()
        while True:
            Message.send_outbox()
            calls += 1
            if not unsent() or time.perf_counter() - start > 300:
                break
            time.sleep(0.2)  # a retry waits for its back-off
        seconds = time.perf_counter() - start
    with Transaction().start(database, user_id, context=context) \
            as transaction:
        statuses = dict(Bulk(transaction).execute(
                'SELECT status, COUNT(*) FROM crm_message '
                f'WHERE id IN ({", ".join(map(str, ids))}) GROUP BY status'
                ).fetchall())
    return {'seconds': seconds, 'messages': len(ids), 'calls': calls,
        'statuses': statuses}


def fresh_messages(bulk, count, user_id, now):
    "Queue `count` messages to bench leads that have none queued."
    start, = bulk.execute('SELECT COALESCE(MAX(id), 0) FROM crm_message'
        ).fetchone()
    bulk.execute(
        'INSERT INTO crm_message (lead, direction, channel, kind, status, '
        'address, template_name, template_language, template_parameters, '
        'send_after, at, attempts, create_uid, create_date) '
        "SELECT id, 'outbound', 'whatsapp', 'template', 'queued', whatsapp, "
        f"'{TEMPLATE}', 'en', '[\"Lead\", \"Mumbai\"]', %s, %s, 0, %s, %s "
        f"FROM crm_lead WHERE campaign = '{CAMPAIGN}' AND id NOT IN ("
        "SELECT lead FROM crm_message WHERE status = 'queued') "
        f'ORDER BY id LIMIT {int(count)}',
        (now, now, user_id, now))
    return [i for i, in bulk.execute(
            'SELECT id FROM crm_message WHERE id > %s ORDER BY id',
            (start,))]


def run_worker(kind, site, **options):
    command = [sys.executable, __file__, '--worker', kind, '--site',
        site.name, '--site-root', str(site.path.parent)]
    for name, value in options.items():
        if value is True:
            command.append('--' + name.replace('_', '-'))
        elif value is not None and value is not False:
            command += ['--' + name.replace('_', '-'), str(value)]
    output = subprocess.run(command, check=True, stdout=subprocess.PIPE,
        text=True, env=site.environ()).stdout
    return json.loads(output.strip().splitlines()[-1])


def point_at_servers(site, simulator, smtp):
    "The site's WhatsApp and email settings: the servers of this process."
    config = configparser.ConfigParser(interpolation=None)
    config.read(site.config_file)
    config['email']['uri'] = smtp.uri
    config['kraya_crm'].update({
            'whatsapp_api_url': simulator.url,
            'whatsapp_api_version': 'v21.0',
            'whatsapp_phone_number_id': simulator.phone_number_id,
            'whatsapp_access_token': simulator.access_token,
            'whatsapp_throughput': str(THROUGHPUT),
            })
    with open(site.config_file, 'w') as file:
        config.write(file)


def bench_database(name, db_uri, simulator, smtp, args):
    sys.path.insert(0, str(ROOT / 'apps'))
    from kraya_site import sites
    # The peer's engine runs on the same site.
    sites.MODULES = [*sites.MODULES, 'marketing_automation']
    root = Path(tempfile.mkdtemp(prefix='kraya-bench-'))
    site_name = f'bench_seq_{name.lower()}_{os.getpid()}'
    print(f'[{name}] creating a demo site with marketing_automation...',
        flush=True)
    started = time.perf_counter()
    site = sites.new_site(site_name,
        db_uri=f'{db_uri}/{site_name}' if db_uri else None, demo=True,
        root=root)
    try:
        point_at_servers(site, simulator, smtp)
        print(f'[{name}] {args.enrollments:,} enrollments and '
            f'{args.enrollments:,} marketing activities by SQL...',
            flush=True)
        setup = run_worker('setup', site, enrollments=args.enrollments,
            due=args.due)
        print(f'[{name}] built in {sum(setup["seconds"].values()):.1f} s: '
            + ', '.join(f'{k} {v:,}' for k, v in setup['counts'].items()),
            flush=True)
        ids = {'step': setup['step'], 'due': args.due}
        print(f'[{name}] raw-SQL bound and plans...', flush=True)
        raw = run_worker('raw', site, **ids)
        print(f'[{name}] marketing_automation tick...', flush=True)
        peer = run_worker('peer', site, **ids)
        for engine, result in [('ours', raw), ('peer', peer)]:
            print(f'[{name}] plan of the {engine} select:\n    '
                + '\n    '.join(result['plan']), flush=True)
        print(f'[{name}] our tick (Enrollment.run_due)...', flush=True)
        ours = run_worker('ours', site, profile=args.profile, **ids)
        print(f'[{name}] {args.sends:,} sends through the simulator...',
            flush=True)
        simulator.reset()
        sends = run_worker('sends', site, sends=args.sends, **ids)
        sends['simulator_accepted'] = len(simulator.sent)
    finally:
        site.drop()
        shutil.rmtree(root, ignore_errors=True)
    print(f'[{name}] done in {time.perf_counter() - started:.0f} s',
        flush=True)
    return {'setup': setup, 'raw': raw, 'peer': peer, 'ours': ours,
        'sends': sends}


def scan_line(plan, table):
    "The plan's line that says how it reaches `table`: by an index or not."
    scans = [line.strip().lstrip('->').strip() for line in plan
        if any(word in line for word in ['Scan', 'SCAN', 'SEARCH'])]
    for wanted in [lambda l: table in l and 'INDEX' in l.upper(),
            lambda l: table in l, lambda l: True]:
        for line in scans:
            if wanted(line):
                return line
    return ''


def compared(ours, other, name):
    "'**2.1x** faster than NAME' (or slower), from the two times."
    if ours <= other:
        return f'**{other / ours:.1f}x** faster than {name}'
    return f'**{ours / other:.1f}x** slower than {name}'


def tick_table(r):
    ours, peer, raw = r['ours'], r['peer'], r['raw']
    due = r['setup']['counts']['enrollments_due']
    count = r['setup']['counts']['enrollments']
    rest = ours['seconds'] - ours['due_seconds'] - ours['advance_seconds']
    plan = raw['plan']
    rows = [
        (f"ours: `Enrollment.run_due()`: select the due, run their step, "
            f"queue {ours['queued']:,} WhatsApp messages, wake the outbox",
            ours['seconds'], due),
        (f"peer: marketing_automation, `RecordActivity.process()` and the "
            f"{peer['tasks']:,} `do` tasks it queues ({peer['done']:,} "
            f"activities done)", peer['seconds'], due),
        (f"raw-SQL bound: one SELECT of the {raw['rows']:,} due with their "
            f"lead, one executemany INSERT of their messages, one UPDATE of "
            f"them, one INSERT of the leads' conversations, one UPDATE of "
            f"the leads to contacted; committed", raw['seconds'],
            raw['rows']),
        ]
    return [
        f"| one cron tick, {due:,} due of {count:,} | seconds | due/s | "
        "time vs ours |",
        "|---|---:|---:|---:|",
        *(f"| {what} | {seconds:.2f} | {n / seconds:,.0f} | "
            f"{seconds / ours['seconds']:.2f}x |"
            for what, seconds, n in rows),
        "",
        f"One tick as trytond-cron runs it, {due:,} of {count:,} active "
        f"enrollments due: ours is "
        f"{compared(ours['seconds'], peer['seconds'], 'marketing_automation')}"
        f"; the raw bound is {ours['seconds'] / raw['seconds']:.0f}x faster "
        f"than ours. Of our tick, the select through the index took "
        f"{ours['due_seconds']:.2f} s, running the steps "
        f"{ours['advance_seconds']:.2f} s, the commits and the rest "
        f"{rest:.2f} s; marketing_automation's process() (select and queue) "
        f"took {peer['process_seconds']:.2f} s and its `do` tasks "
        f"{peer['do_seconds']:.2f} s. Its activity has no action, so it "
        f"writes less than ours (its only action sends an email). Our due "
        f"query's plan: "
        + ' / '.join(f'`{line}`' for line in dict.fromkeys(
                [plan[0].strip(), scan_line(plan, 'crm_enrollment')]))
        + "; marketing_automation's: "
        f"`{scan_line(peer['plan'], 'record_activity')}`.",
        ""]


def sends_table(r):
    sends = r['sends']
    sent = sends['statuses'].get('sent', 0)
    rate = sent / sends['seconds']
    outcome = ', '.join(f'{n:,} {status}'
        for status, n in sorted(sends['statuses'].items()))
    return [
        f"| sends through the simulator, {THROUGHPUT}/s per number | "
        "messages | seconds | messages/s | of 80/s |",
        "|---|---:|---:|---:|---:|",
        f"| ours: `Message.send_outbox()` until all are sent | "
        f"{sends['messages']:,} | {sends['seconds']:.1f} | {rate:.1f} | "
        f"{rate / THROUGHPUT:.0%} |",
        "",
        f"The queued messages of the tick sent by `Message.send_outbox()` "
        f"(called {sends['calls']} time(s)), each claimed in a batch, sent "
        f"over HTTP to the simulator and its answer written in its own "
        f"transaction: {outcome}; the simulator accepted "
        f"{sends['simulator_accepted']:,}.",
        ""]


def report(results):
    lines = []
    for name, r in results.items():
        lines += [f"### {name}", "", *tick_table(r), *sends_table(r)]
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--enrollments', type=int, default=100_000,
        help="active enrollments (and marketing activities for the peer)")
    parser.add_argument('--due', type=int, default=5_000,
        help="how many of them are due at the tick")
    parser.add_argument('--sends', type=int, default=2_000,
        help="messages sent through the WhatsApp simulator")
    parser.add_argument('--no-postgresql', action='store_true')
    parser.add_argument('--no-results', action='store_true',
        help="do not append to bench/RESULTS.md")
    parser.add_argument('--profile', action='store_true',
        help="print cProfile's figures of our tick (on stderr)")
    parser.add_argument('--worker', choices=['setup', 'raw', 'peer', 'ours',
            'sends'], help=argparse.SUPPRESS)
    parser.add_argument('--site', help=argparse.SUPPRESS)
    parser.add_argument('--site-root', help=argparse.SUPPRESS)
    parser.add_argument('--step', type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    if not 0 < args.due <= args.enrollments:
        parser.error('--due must be between 1 and --enrollments')

    sys.path.insert(0, str(ROOT / 'apps'))
    from kraya_peers.smtp import SmtpSink
    from kraya_peers.whatsapp import Simulator
    # Distinct recipients and no status webhooks: the sends alone.
    simulator = Simulator(port=0, webhook_url=None,
        app_secret=secrets.token_urlsafe(16),
        access_token=secrets.token_urlsafe(16),
        phone_number_id=PHONE_NUMBER_ID, throughput=THROUGHPUT,
        pair_interval=0, statuses=[]).start()
    # marketing_automation's `do` opens an SMTP connection at each commit,
    # even with nothing to send, and pays for it here as it would live.
    smtp = SmtpSink(keep=False).start()
    databases = {'SQLite': None}
    server = None if args.no_postgresql else postgresql_server()
    if server:
        databases['PostgreSQL'] = server
    results = {}
    try:
        for name, db_uri in databases.items():
            results[name] = bench_database(
                name, db_uri, simulator, smtp, args)
    finally:
        simulator.stop()
        smtp.stop()
    versions = ', '.join(r['setup']['version'] for r in results.values())
    text = (f"{args.enrollments:,} leads with a WhatsApp opt-in, each "
        f"enrolled in a two-step sequence open every hour, {args.due:,} of "
        f"the enrollments due; beside them, marketing_automation's peer: a "
        f"running scenario on {args.enrollments:,} parties with one "
        f"activity and {args.enrollments:,} waiting record activities, "
        f"{args.due:,} of them due. The rows are built by SQL on a fresh "
        f"demo site per database ({versions}); the sends go to the WhatsApp "
        f"Cloud API simulator in the bench process ({THROUGHPUT}/s, no pair "
        f"interval, no status webhooks).\n\n" + report(results))
    print()
    print(f"Machine: {describe()}\n\n{text}")
    if not args.no_results:
        record_results('Follow-up engine', text)
        print('Appended to bench/RESULTS.md')


if __name__ == '__main__':
    sys.exit(main())
