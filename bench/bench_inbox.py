"""Benchmark of the team inbox's reads (`./crm bench inbox`).

On a fresh demo site, builds in bulk (COPY on PostgreSQL, executemany on
SQLite) 100,000 leads owned by the demo's reps and three more in a second
team (a quarter of them unassigned), each with its conversation, a
WhatsApp consent (4% opted out) and for some an open deal, and 1,000,000
WhatsApp messages in and out over six months, one lead having 600 of them;
then ANALYZE. Then times, as the manager and as a rep (record rules on),
each call in a transaction of that user with the user's preferences as
context, as the web server runs it (routes.py), best of --runs after a
warm-up:

- ours: the inbox's first page (`Inbox.conversations('open')`, with the
  tab counts), the 'waiting' and 'mine' tabs, a thread of 500 messages
  (`Inbox.thread(Inbox.conversation(id), limit=500)`) and the live poll
  (`Inbox.changed_since(cursor)`) with a recent cursor;
- the peer: the same rows read the generic way the desk's list views do,
  `search_read` (and, for the inbox pages, sao's `search_count` per tab)
  on crm.conversation and crm.message with access checked, same user;
- the raw-SQL bound: one SELECT returning the same page or thread (the
  rule's condition written by hand), with psycopg (or sqlite3) directly.

The SQL our calls issue is captured from the transaction's cursor and
EXPLAINed (ANALYZE, BUFFERS). On SQLite, and on
PostgreSQL when KRAYA_BENCH_POSTGRESQL (e.g. postgresql://127.0.0.1:5432)
is set or a server answers on 127.0.0.1:5432 (SQLite at the same sizes
unless told otherwise). Prints the figures and the
plans and appends a dated section to bench/RESULTS.md.

    ./crm bench inbox [--leads 100000] [--messages 1000000] [--runs 5]
        [--sqlite-leads 100000] [--sqlite-messages 1000000] [--no-sqlite]
        [--no-postgresql] [--no-results]
"""
import argparse
import datetime as dt
import json
import logging
import os
import random
import re
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

THREAD_MESSAGES = 600  # on one lead, for the 500-message thread
THREAD_LIMIT = 500
PAGE = 50
TARGET_MS = 200
CHANGED_RECENTLY = 40  # conversations changed in the last minute
# Reps added to the demo's, in a team of their own.
EXTRA_TEAM = "Pune Sales"
EXTRA_REPS = [('rep3', "Sunil Kamat"), ('rep4', "Fatima Sheikh"),
    ('rep5', "Karan Bhatia")]
# Who owns a bench lead, by lead number modulo 20 (None: unassigned, with
# the team of the second item).
OWNERS = (['rep'] * 3 + ['rep2'] * 3 + ['agent'] * 2 + ['rep3'] * 2
    + ['rep4'] * 2 + ['rep5'] * 2 + ['manager']
    + [(None, 'Mumbai')] * 3 + [(None, 'Pune')] * 2)
TEAM_OF = {'rep': 'Mumbai', 'rep2': 'Mumbai', 'agent': 'Mumbai',
    'manager': 'Mumbai', 'rep3': 'Pune', 'rep4': 'Pune', 'rep5': 'Pune'}
FIRST = ["Aarav", "Vivaan", "Aditya", "Arjun", "Sai", "Ananya", "Diya",
    "Saanvi", "Pooja", "Kavya", "Neha", "Imran", "Farhan", "Zoya",
    "Harpreet", "Lakshmi", "Venkat", "Deepa", "Nikhil", "Tanvi"]
LAST = ["Sharma", "Patel", "Shah", "Mehta", "Iyer", "Nair", "Reddy", "Rao",
    "Kulkarni", "Joshi", "Gupta", "Khan", "Singh", "Kaur", "Menon", "Das"]
CITIES = ["Mumbai", "Thane", "Navi Mumbai", "Pune", "Powai", "Andheri"]
INBOUND = ["Hi, is the 2BHK in Powai still available?",
    "What is the final price?", "Can I visit on Sunday morning?",
    "Please send the floor plan", "Is parking included?",
    "Bhai, loan ka kya scene hai?", "Ok thanks", "Call me after 6 pm",
    "We liked the site, discussing at home",
    "Possession date kab hai?", "👍", "Any offer for Diwali?"]
OUTBOUND = ["Hello! Yes, it is available. When would you like to visit?",
    "The all-inclusive price is ₹1.45 Cr.", "Sharing the floor plan now.",
    "Sunday 11 am works. I will send the location pin.",
    "Yes, one covered parking is included.",
    "Our partner banks offer up to 80% loan.",
    "Possession is in March 2027."]
TEMPLATE_BODY = "Hi {name}, thank you for your interest in Shree Ganesh " \
    "Realty. Reply YES to book a site visit."


# ---- the measurements, each in a process of its own (trytond reads the
# site's configuration once, when first imported) ----

def worker(args, runs=None):
    """Run args.worker (runs: name to function(site, database, user_id,
    context, args); the inbox's by default) on the site and print its JSON
    answer."""
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
    run = (runs or {'setup': build_data, 'ours': time_ours,
            'peer': time_peer, 'raw': time_raw})[args.worker]
    result = run(site, database, user_id, context, args)
    print(json.dumps(result, default=str))


class Copy:
    "Rows into a table in bulk: COPY on PostgreSQL, executemany on SQLite."

    def __init__(self, transaction):
        from trytond import backend
        self.cursor = transaction.connection.cursor()
        self.postgresql = backend.name == 'postgresql'

    def execute(self, query, params=()):
        if not self.postgresql:
            query = query.replace('%s', '?')
        self.cursor.execute(query, params)
        return self.cursor

    def rows(self, table, columns, rows):
        names = ', '.join(f'"{c}"' for c in columns)
        if self.postgresql:
            with self.cursor.copy(
                    f'COPY "{table}" ({names}) FROM STDIN') as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            self.cursor.executemany(
                f'INSERT INTO "{table}" ({names}) VALUES '
                f'({", ".join(["?"] * len(columns))})', rows)

    def max_id(self, table):
        return self.execute(
            f'SELECT COALESCE(MAX(id), 0) FROM "{table}"').fetchone()[0]

    def reset_sequence(self, table):
        "After rows with explicit ids, the next id follows them."
        if self.postgresql:
            self.execute(f"SELECT setval('{table}_id_seq', "
                f'(SELECT MAX(id) FROM "{table}"))')

    def version(self):
        if self.postgresql:
            version, = self.execute('SHOW server_version').fetchone()
            return f'PostgreSQL {version.split()[0]}'
        import sqlite3
        return f'SQLite {sqlite3.sqlite_version}'


def message_counts(rng, leads, messages):
    """How many messages each lead has: the first THREAD_MESSAGES, the
    others between 1 and 20ish, summing to `messages`."""
    rest = messages - THREAD_MESSAGES
    mean = rest / (leads - 1)
    counts = [max(1, int(rng.expovariate(1 / mean)) + 1)
        for _ in range(leads - 1)]
    total = sum(counts)
    # Bring the total to exactly `rest`, a message at a time.
    while total != rest:
        i = rng.randrange(len(counts))
        if total > rest and counts[i] > 1:
            counts[i] -= 1
            total -= 1
        elif total < rest:
            counts[i] += 1
            total += 1
    return [THREAD_MESSAGES] + counts


def build_data(site, database, user_id, context, args):
    """The extra reps and their team, then the leads, their conversations,
    consents, deals and messages, by COPY / executemany, then ANALYZE."""
    from trytond.pool import Pool
    from trytond.transaction import Transaction
    from kraya_crm.message import utcnow
    pool = Pool(database)
    Source = pool.get('crm.source')
    Stage = pool.get('crm.stage')
    Deal = pool.get('crm.deal')
    rng = random.Random(2026)
    timings = {}
    with Transaction().start(database, user_id, context=context) \
            as transaction:
        users, teams = add_extra_reps(int(context['company']))
        source = Source.get_by_code('whatsapp')
        open_stage, = Stage.search([('kind', '=', 'open')], limit=1,
            order=[('sequence', 'ASC'), ('id', 'ASC')])
        demo_deal, = Deal.search([], limit=1)
        company = int(context['company'])
        copy = Copy(transaction)
        now = utcnow()
        counts = message_counts(rng, args.leads, args.messages)

        start = time.perf_counter()
        first_lead = copy.max_id('crm_lead') + 1
        first_message = message_id = copy.max_id('crm_message') + 1
        first_conversation = copy.max_id('crm_conversation') + 1
        leads, conversations, consents, deals, messages = [], [], [], [], []
        # Which leads changed in the last minute (the poll's answer).
        recent = set(rng.sample(range(args.leads), CHANGED_RECENTLY))
        for j in range(args.leads):
            lead_id = first_lead + j
            owner = OWNERS[j % len(OWNERS)]
            if isinstance(owner, tuple):
                owner_id, team_id = None, teams[owner[1]]
            else:
                owner_id, team_id = users[owner], teams[TEAM_OF[owner]]
            first, last = rng.choice(FIRST), rng.choice(LAST)
            name = f'{first} {last}'
            phone = '+91%d%09d' % (rng.choice([9, 8, 7]), j)
            # The lead's last message: recent ones more likely.
            at = now - dt.timedelta(
                minutes=int(rng.random() ** 2 * 180 * 24 * 60) + 2)
            thread = []
            for _ in range(counts[j]):
                thread.append(at)
                at -= dt.timedelta(minutes=rng.choice(
                        [1, 2, 5, 30, 120, 600, 1440, 2880]))
            thread.reverse()
            last_inbound = last_answer = last_at = None
            last_id = None
            unread = 0
            for n, at in enumerate(thread):
                inbound = rng.random() < (0.9 if n == 0 else 0.55)
                if inbound:
                    image = rng.random() < 0.08
                    row = (message_id, lead_id, 'inbound', 'whatsapp',
                        'image' if image else 'text',
                        None if image else rng.choice(INBOUND),
                        'image: image/jpeg IMG-2026.jpg' if image else None,
                        f'wamid.in.{message_id}', phone, 'received', at,
                        None, None, user_id, at)
                    last_inbound = at
                    unread += 1
                else:
                    human = rng.random() < 0.7
                    status = rng.choices(
                        ['read', 'delivered', 'sent', 'failed'],
                        [60, 25, 10, 5])[0]
                    row = (message_id, lead_id, 'outbound', 'whatsapp',
                        'text' if human else 'template',
                        rng.choice(OUTBOUND) if human
                        else TEMPLATE_BODY.format(name=first), None,
                        f'wamid.out.{message_id}', phone, status, at,
                        at, (owner_id or users['rep']) if human else None,
                        user_id, at)
                    if human:
                        last_answer = at
                        unread = 0
                messages.append(row)
                last_at, last_id = at, message_id
                message_id += 1
            roll = rng.random()
            state = ('done' if roll < 0.10 else 'snoozed' if roll < 0.15
                else 'open')
            waiting = bool(last_inbound
                and (not last_answer or last_inbound > last_answer))
            changed_at = (now - dt.timedelta(seconds=rng.randrange(1, 50))
                if j in recent else last_at)
            conversations.append((first_conversation + j, lead_id, state,
                    now + dt.timedelta(days=2) if state == 'snoozed'
                    else None,
                    0 if state == 'done' else min(unread, 30), waiting,
                    last_id, last_at, last_inbound, last_answer, changed_at,
                    user_id, now))
            leads.append((lead_id, name,
                    f'{last} Traders' if rng.random() < 0.2 else None,
                    phone, phone, f'{first}.{last}{j}@example.in'.lower()
                    if rng.random() < 0.5 else None,
                    rng.choice(CITIES), source.id, 'Bench inbox',
                    company, owner_id, team_id,
                    rng.choice(['new', 'contacted', 'qualified']),
                    rng.randint(5, 95), True, False, last_inbound,
                    user_id, thread[0]))
            opted_out = rng.random() < 0.04
            consents.append((lead_id, 'whatsapp',
                    'opted_out' if opted_out else 'opted_in', thread[0],
                    'inbound_chat',
                    "Messaged us first on WhatsApp", last_at if opted_out
                    else None, "Replied STOP" if opted_out else None,
                    user_id, now))
            if rng.random() < 0.06:
                deals.append((f'{name}: 2BHK', lead_id,
                        demo_deal.currency.id, rng.randrange(60, 300) * 100000,
                        open_stage.id, company, owner_id, thread[0],
                        user_id, now))
            if len(messages) >= 50_000 or j == args.leads - 1:
                # The leads first, the messages then point at them; the
                # conversations, pointing at messages, last.
                flush_leads(copy, leads, consents, deals)
                copy.rows('crm_message', MESSAGE_COLUMNS, messages)
                leads, consents, deals, messages = [], [], [], []
        copy.rows('crm_conversation', ['id', 'lead', 'state',
                'snoozed_until', 'unread', 'waiting', 'last_message',
                'last_message_at', 'last_inbound_at', 'last_answer_at',
                'changed_at', 'create_uid', 'create_date'], conversations)
        for table in ['crm_lead', 'crm_message', 'crm_conversation']:
            copy.reset_sequence(table)
        timings['build'] = time.perf_counter() - start
        transaction.commit()
        start = time.perf_counter()
        for table in ['crm_lead', 'crm_message', 'crm_conversation',
                'crm_lead_consent', 'crm_deal']:
            copy.execute(f'ANALYZE "{table}"')
        transaction.commit()
        timings['analyze'] = time.perf_counter() - start
        totals = {table: copy.execute(f'SELECT COUNT(*) FROM "{table}"'
                ).fetchone()[0] for table in ['crm_lead', 'crm_message',
                'crm_conversation', 'crm_lead_consent', 'crm_deal']}
        version = copy.version()
    return {'seconds': timings, 'totals': totals, 'version': version,
        'thread_conversation': first_conversation,
        'thread_lead': first_lead, 'first_message': first_message,
        'cursor': (now - dt.timedelta(seconds=60)).isoformat() + 'Z'}


def add_extra_reps(company):
    """The reps of EXTRA_REPS in a team of their own (EXTRA_TEAM) beside
    the demo's: ({login: user id}, {'Mumbai': team id, 'Pune': team id})."""
    from trytond.pool import Pool
    pool = Pool()
    User = pool.get('res.user')
    Team = pool.get('crm.team')
    rep_group = pool.get('ir.model.data').get_id('kraya_crm',
        'group_crm_rep')
    mumbai, = Team.search([], limit=1, order=[('id', 'ASC')])
    extra = User.create([{'login': login, 'name': name,
                'groups': [('add', [rep_group])],
                'companies': [('add', [company])], 'company': company}
            for login, name in EXTRA_REPS])
    pune, = Team.create([{'name': EXTRA_TEAM,
                'members': [('add', [u.id for u in extra])]}])
    users = {u.login: u.id for u in User.search([])}
    return users, {'Mumbai': mumbai.id, 'Pune': pune.id}


MESSAGE_COLUMNS = ['id', 'lead', 'direction', 'channel', 'kind', 'body',
    'attachment', 'provider_id', 'address', 'status', 'at', 'sent_at',
    'author', 'create_uid', 'create_date']


def flush_leads(copy, leads, consents, deals):
    copy.rows('crm_lead', ['id', 'name', 'company_name', 'phone', 'whatsapp',
            'email', 'city', 'source', 'campaign', 'company', 'owner', 'team',
            'status', 'score', 'active', 'not_on_whatsapp', 'last_inbound_at',
            'create_uid', 'create_date'], leads)
    copy.rows('crm_lead_consent', ['lead', 'channel', 'state', 'opted_in_at',
            'opted_in_how', 'opted_in_basis', 'opted_out_at',
            'opted_out_reason', 'create_uid', 'create_date'], consents)
    copy.rows('crm_deal', ['title', 'lead', 'currency', 'value', 'stage',
            'company', 'owner', 'stage_entered_at', 'create_uid',
            'create_date'], deals)


# ---- the calls, as routes.py makes them ----

# name: (what it is, the call on crm.inbox)
CALLS = {
    'open': ("first page, 'open' tab, with the tab counts",
        lambda Inbox, a: Inbox.conversations('open', None, 0, PAGE)),
    'waiting': ("'waiting' tab",
        lambda Inbox, a: Inbox.conversations('waiting', None, 0, PAGE)),
    'mine': ("'mine' tab",
        lambda Inbox, a: Inbox.conversations('mine', None, 0, PAGE)),
    'thread': (f"thread of {THREAD_LIMIT} messages",
        lambda Inbox, a: Inbox.thread(
            Inbox.conversation(a.thread_conversation), None, THREAD_LIMIT)),
    'changed_since': ("live poll, `changed_since` a minute ago",
        lambda Inbox, a: Inbox.changed_since(a.cursor)),
    }
ROLES = ['manager', 'rep']
REQUEST_CONTEXT = {'remote_addr': '127.0.0.1', 'http_host': '127.0.0.1:8000',
    'scheme': 'http', 'is_secure': False}


def as_web(database, login, function, readonly=True):
    """function(pool) in a transaction of the user, with their preferences
    as context, as routes.py's _inbox_call runs a handler."""
    from trytond.pool import Pool
    from trytond.transaction import Transaction
    pool = Pool(database)
    User = pool.get('res.user')
    with Transaction().start(database, 0, readonly=True):
        user_id, = [u.id for u in User.search([('login', '=', login)])]
    with Transaction().start(database, user_id, readonly=readonly,
            context={'_request': REQUEST_CONTEXT}) as transaction:
        with transaction.set_context(
                User.get_preferences(context_only=True)):
            return function(pool)


def best_of(runs, function):
    "Seconds of the fastest of `runs` calls, after one warm-up."
    function()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times), times


def page_ids(name, result):
    "The ids a call returned, to check the others return the same."
    if name == 'thread':
        return [int(i['id'][1:]) for i in result['items']
            if i['id'].startswith('m')]
    if name == 'changed_since':
        return [c['id'] for c in result[1]]
    return [c['id'] for c in result['conversations']]


class Queries(logging.Handler):
    "The SQL a transaction runs (PostgreSQL: the LoggingCursor's lines)."

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.queries = []

    def emit(self, record):
        self.queries.append(record.getMessage())

    def __enter__(self):
        from trytond import backend
        from trytond.transaction import Transaction
        self.postgresql = backend.name == 'postgresql'
        if self.postgresql:
            self.logger = logging.getLogger(
                'trytond.backend.postgresql.database')
            self.level = self.logger.level
            self.logger.setLevel(logging.DEBUG)
            self.logger.addHandler(self)
        else:
            self.connection = Transaction().connection
            self.connection.set_trace_callback(self.queries.append)
        return self

    def __exit__(self, *exc):
        if self.postgresql:
            self.logger.removeHandler(self)
            self.logger.setLevel(self.level)
        else:
            self.connection.set_trace_callback(None)


INBOX_TABLES = re.compile(r'"(crm_conversation|crm_message)"')


def plans(queries, tables=INBOX_TABLES):
    """EXPLAIN (ANALYZE, BUFFERS) of the SELECTs on the tables (a regex of
    their quoted names: crm_conversation or crm_message), SQLite's EXPLAIN
    QUERY PLAN, in the transaction."""
    from trytond import backend
    from trytond.transaction import Transaction
    cursor = Transaction().connection.cursor()
    result, seen = [], set()
    for query in queries:
        query = query.strip()
        if (not query.upper().startswith('SELECT')
                or not tables.search(query) or query in seen):
            continue
        seen.add(query)
        if backend.name == 'postgresql':
            cursor.execute('EXPLAIN (ANALYZE, BUFFERS) ' + query)
            plan = [row[0] for row in cursor]
        else:
            cursor.execute('EXPLAIN QUERY PLAN ' + query)
            plan = [row[-1] for row in cursor]
        result.append({'sql': query, 'plan': plan})
    return result


def time_ours(site, database, user_id, context, args):
    """Each call as each role: best of --runs, the ids it returned, and the
    SQL it ran with their plans; the tab counts alone too."""
    result = {}
    for login in ROLES:
        for name, (_, call) in CALLS.items():
            seconds, times = best_of(args.runs, lambda: as_web(
                    database, login,
                    lambda pool: call(pool.get('crm.inbox'), args)))

            def traced(pool):
                with Queries() as queries:
                    answer = call(pool.get('crm.inbox'), args)
                return answer, queries.queries, plans(queries.queries)
            answer, queries, explained = as_web(database, login, traced)
            result[f'{login}:{name}'] = {'seconds': seconds, 'runs': times,
                'ids': page_ids(name, answer), 'statements': len(queries),
                'plans': explained}
        seconds, _ = best_of(args.runs, lambda: as_web(database, login,
                lambda pool: pool.get('crm.inbox').counts()))
        counts = as_web(database, login,
            lambda pool: pool.get('crm.inbox').counts())
        result[f'{login}:counts'] = {'seconds': seconds, 'counts': counts}
    return result


# The fields the inbox shows, read the generic way (dotted names as a list
# view's columns of related records are read).
CONVERSATION_FIELDS = ['id', 'rec_name', 'state', 'snoozed_until', 'unread',
    'waiting', 'last_message_at', 'last_inbound_at', 'last_answer_at',
    'changed_at', 'lead', 'lead.name', 'lead.company_name', 'lead.phone',
    'lead.whatsapp', 'lead.email', 'lead.city', 'lead.owner.rec_name',
    'lead.team.rec_name', 'lead.not_on_whatsapp', 'lead.last_inbound_at',
    'lead.deals', 'lead.consents', 'last_message.at',
    'last_message.direction', 'last_message.channel',
    'last_message.summary']
MESSAGE_FIELDS = ['id', 'direction', 'channel', 'kind', 'at', 'subject',
    'body', 'attachment', 'summary', 'status', 'error_code',
    'error_message', 'author.rec_name', 'reply_to', 'reply_to.summary',
    'template_name', 'template_language', 'call_outcome', 'call_duration',
    'mentions', 'lead', 'deal']


def peer_call(name, args):
    """The same rows by search_read (and sao's search_count per tab for the
    inbox pages), access checked, as the desk's list views read them."""
    from trytond.transaction import Transaction, check_access

    def conversations(domain, order=None, counts=True):
        def read(pool):
            Conversation = pool.get('crm.conversation')
            Inbox = pool.get('crm.inbox')
            with check_access():
                rows = Conversation.search_read(domain, 0, PAGE, order,
                    CONVERSATION_FIELDS)
                if counts:
                    # sao counts each tab of a list with search_count.
                    for tab in ['waiting', 'mine', 'unassigned', 'team',
                            'opted_out']:
                        Conversation.search_count(
                            Inbox._filter_domain(tab), limit=100)
            return rows
        return read

    if name == 'open':
        return conversations([('state', '=', 'open')])
    if name == 'waiting':
        return conversations([('state', '=', 'open'), ('waiting', '=', True)])
    if name == 'mine':
        return lambda pool: conversations([('state', '=', 'open'),
                ('lead.owner', '=', Transaction().user)])(pool)
    if name == 'changed_since':
        from kraya_crm.inbox import parse_iso
        return conversations(
            [('changed_at', '>', parse_iso(args.cursor))],
            [('changed_at', 'ASC'), ('id', 'ASC')], counts=False)

    def thread(pool):
        Message = pool.get('crm.message')
        with check_access():
            return Message.search_read([('lead', '=', args.thread_lead)], 0,
                THREAD_LIMIT + 1, [('at', 'DESC'), ('id', 'DESC')],
                MESSAGE_FIELDS)
    return thread


def time_peer(site, database, user_id, context, args):
    result = {}
    for login in ROLES:
        for name in CALLS:
            call = peer_call(name, args)
            seconds, times = best_of(args.runs,
                lambda: as_web(database, login, call))
            rows = as_web(database, login, call)
            if name == 'thread':
                rows = rows[:THREAD_LIMIT]
            result[f'{login}:{name}'] = {'seconds': seconds, 'runs': times,
                'ids': [r['id'] for r in rows]}
    return result


# ---- the raw-SQL bound: one SELECT per call, the rule by hand ----

def raw_queries(postgresql, user, teams, company, args):
    """(name, SQL, params) of the single SELECT returning each call's rows
    with what the inbox shows of them, as `user` (a dict: id, manager)."""
    mark = '%s' if postgresql else '?'
    if user['manager']:
        rule, rule_params = f'l.company = {mark}', [company]
    else:
        rule = (f'l.company = {mark} AND (l.owner = {mark} OR (l.owner IS '
            f'NULL AND l.team IN ({", ".join([mark] * len(teams))})))')
        rule_params = [company, user['id'], *teams]
    opted_out = ("(SELECT string_agg(s.channel, ',') FROM crm_lead_consent s "
        "WHERE s.lead = l.id AND s.state = 'opted_out')" if postgresql else
        "(SELECT group_concat(s.channel) FROM crm_lead_consent s "
        "WHERE s.lead = l.id AND s.state = 'opted_out')")
    deal = ('(SELECT d.id FROM crm_deal d JOIN crm_stage st ON st.id = '
        "d.stage WHERE d.lead = l.id AND st.kind = 'open' "
        'ORDER BY d.id DESC LIMIT 1)')
    page = (
        'SELECT c.id, c.state, c.snoozed_until, c.unread, c.waiting, '
        'c.last_inbound_at, l.id, l.name, l.company_name, l.phone, '
        'l.whatsapp, l.email, l.city, l.not_on_whatsapp, l.last_inbound_at, '
        'u.name, t.name, m.at, m.direction, m.channel, m.body, '
        f'm.attachment, {deal}, {opted_out} '
        'FROM crm_conversation c JOIN crm_lead l ON l.id = c.lead '
        'LEFT JOIN res_user u ON u.id = l.owner '
        'LEFT JOIN crm_team t ON t.id = l.team '
        'LEFT JOIN crm_message m ON m.id = c.last_message '
        'WHERE {where} AND ' + rule + ' ORDER BY {order} LIMIT ' + str(PAGE))
    # SQLite 3.30+ knows NULLS LAST too (and can then use the index).
    inbox_order = 'c.last_inbound_at DESC NULLS LAST, c.id DESC'
    since = dt.datetime.fromisoformat(args.cursor.rstrip('Z'))
    queries = {
        'open': (page.format(where="c.state = 'open'", order=inbox_order),
            rule_params),
        'waiting': (page.format(
                where=f"c.state = 'open' AND c.waiting = {mark}",
                order=inbox_order), [True, *rule_params]),
        'mine': (page.format(
                where=f"c.state = 'open' AND l.owner = {mark}",
                order=inbox_order), [user['id'], *rule_params]),
        'changed_since': (page.format(where=f'c.changed_at > {mark}',
                order='c.changed_at, c.id'), [since, *rule_params]),
        'thread': (
            'SELECT m.id, m.direction, m.channel, m.kind, m.at, m.subject, '
            'm.body, m.attachment, m.status, m.error_code, m.error_message, '
            'a.name, m.reply_to, r.body, m.template_name, '
            'm.template_language, m.call_outcome, m.call_duration '
            'FROM crm_message m JOIN crm_lead l ON l.id = m.lead '
            'LEFT JOIN res_user a ON a.id = m.author '
            'LEFT JOIN crm_message r ON r.id = m.reply_to '
            f'WHERE m.lead = {mark} AND ' + rule
            + f' ORDER BY m.at DESC, m.id DESC LIMIT {THREAD_LIMIT + 1}',
            [args.thread_lead, *rule_params]),
        }
    return queries


def role_users(database):
    """{login: ({'id', 'manager'}, the ids of their teams)} of ROLES, for
    the record rules written by hand."""
    from trytond.pool import Pool
    from trytond.transaction import Transaction
    pool = Pool(database)
    User = pool.get('res.user')
    users = {}
    with Transaction().start(database, 0, readonly=True):
        manager_group = pool.get('ir.model.data').get_id(
            'kraya_crm', 'group_crm_manager')
        for login in ROLES:
            user, = User.search([('login', '=', login)])
            with Transaction().set_user(user.id):
                teams = list(User.get_crm_teams())
            users[login] = ({'id': user.id, 'manager': manager_group in
                        [g.id for g in user.groups]}, teams)
    return users


def raw_connection(site, database):
    "(a connection of its own to the site's database, whether PostgreSQL)."
    if site.is_sqlite:
        import sqlite3
        return sqlite3.connect(site.path / f'{database}.sqlite'), False
    import psycopg
    return psycopg.connect(site.database_uri.rstrip('/') + '/'
        + database), True


def time_raw(site, database, user_id, context, args):
    """Each call's single SELECT, timed on a connection of its own
    (psycopg, or sqlite3 for SQLite), best of --runs after a warm-up."""
    users = role_users(database)
    connection, postgresql = raw_connection(site, database)
    result = {}
    try:
        for login in ROLES:
            user, teams = users[login]
            queries = raw_queries(postgresql, user, teams,
                int(context['company']), args)
            for name in CALLS:
                sql, params = queries[name]

                def run():
                    cursor = connection.cursor()
                    cursor.execute(sql, params)
                    return cursor.fetchall()
                seconds, times = best_of(args.runs, run)
                rows = run()
                if name == 'thread':
                    rows = rows[:THREAD_LIMIT]
                cursor = connection.cursor()
                if postgresql:
                    cursor.execute('EXPLAIN (ANALYZE, BUFFERS) ' + sql,
                        params)
                    plan = [r[0] for r in cursor.fetchall()]
                else:
                    cursor.execute('EXPLAIN QUERY PLAN ' + sql, params)
                    plan = [r[-1] for r in cursor.fetchall()]
                result[f'{login}:{name}'] = {'seconds': seconds,
                    'runs': times, 'ids': [r[0] for r in rows],
                    'plan': plan}
    finally:
        connection.close()
    return result


# ---- the driver ----

def run_worker(kind, site, script=__file__, **options):
    "The JSON a worker of the script printed last."
    command = [sys.executable, script, '--worker', kind, '--site',
        site.name, '--site-root', str(site.path.parent)]
    for name, value in options.items():
        if value is True:
            command.append('--' + name.replace('_', '-'))
        elif value is not None and value is not False:
            command += ['--' + name.replace('_', '-'), str(value)]
    output = subprocess.run(command, check=True, stdout=subprocess.PIPE,
        text=True, env=site.environ()).stdout
    return json.loads(output.strip().splitlines()[-1])


def bench_database(name, db_uri, leads, messages, args):
    sys.path.insert(0, str(ROOT / 'apps'))
    from kraya_site import sites
    root = Path(tempfile.mkdtemp(prefix='kraya-bench-'))
    site_name = f'bench_inbox_{name.lower()}_{os.getpid()}'
    print(f'[{name}] creating a demo site...', flush=True)
    started = time.perf_counter()
    site = sites.new_site(site_name,
        db_uri=f'{db_uri}/{site_name}' if db_uri else None, demo=True,
        root=root)
    try:
        print(f'[{name}] {leads:,} leads, conversations and consents, '
            f'{messages:,} messages in bulk...', flush=True)
        setup = run_worker('setup', site, leads=leads, messages=messages)
        print(f'[{name}] built in {setup["seconds"]["build"]:.1f} s, '
            f'analyzed in {setup["seconds"]["analyze"]:.1f} s: '
            + ', '.join(f'{k} {v:,}' for k, v in setup['totals'].items()),
            flush=True)
        ids = {'thread_conversation': setup['thread_conversation'],
            'thread_lead': setup['thread_lead'], 'cursor': setup['cursor'],
            'runs': args.runs}
        print(f'[{name}] ours (crm.inbox), as {" and ".join(ROLES)}...',
            flush=True)
        ours = run_worker('ours', site, **ids)
        print(f'[{name}] peer (search_read)...', flush=True)
        peer = run_worker('peer', site, **ids)
        print(f'[{name}] raw-SQL bound...', flush=True)
        raw = run_worker('raw', site, **ids)
    finally:
        site.drop()
        shutil.rmtree(root, ignore_errors=True)
    print(f'[{name}] done in {time.perf_counter() - started:.0f} s',
        flush=True)
    return {'setup': setup, 'ours': ours, 'peer': peer, 'raw': raw}


def scans(plan):
    "The plan's lines that say how it reaches a table."
    return [line.strip().lstrip('->').strip() for line in plan
        if any(word in line for word in [' Scan ', 'SCAN', 'SEARCH'])]


def table_scans(entry, names='crm_conversation|crm_message'):
    """The lines of a plan that read the tables (names: a regex) by the
    table rather than an index (PostgreSQL: Seq Scan, with the rows it
    read; SQLite: SCAN of the table's alias without an index)."""
    aliases = {alias for _, alias in re.findall(
            rf'"({names})" AS "(\w+)"', entry['sql'])}
    found = []
    for line in entry['plan']:
        line = line.strip().lstrip('->').strip()
        if re.match(rf'Seq Scan on ({names})\b', line):
            found.append(re.sub(r'\s*\(cost=.*?\)', '', line))
        match = re.fullmatch(r'SCAN (\w+)', line)
        if match and match[1] in aliases:
            found.append(line)
    return found


def plan_summary(plan):
    "The scans of the plan, shortened, and its execution time."
    lines = []
    for line in scans(plan):
        line = re.sub(r'\s*\(cost=.*?\)', '', line)
        line = re.sub(r'\(actual time=[\d.]+\.\.([\d.]+) rows=(\d+) '
            r'loops=(\d+)\)', r'(\2 rows × \3, \1 ms)', line)
        lines.append(line)
    total = [line for line in plan if line.startswith('Execution Time')]
    return lines, total[0] if total else ''


def report(results, args):
    lines = []
    for name, r in results.items():
        ours, peer, raw = r['ours'], r['peer'], r['raw']
        totals = r['setup']['totals']
        lines += [f"### {name}", "",
            f"{totals['crm_lead']:,} leads, {totals['crm_conversation']:,} "
            f"conversations, {totals['crm_message']:,} messages, "
            f"{totals['crm_lead_consent']:,} consents, "
            f"{totals['crm_deal']:,} deals (demo's included).", "",
            "| call | as | ours ms | peer ms | raw SQL ms | ours vs peer "
            "| rows | same rows |",
            "|---|---|---:|---:|---:|---:|---:|---|"]
        for call, (what, _) in CALLS.items():
            for login in ROLES:
                key = f'{login}:{call}'
                o, p, w = ours[key], peer[key], raw[key]
                # A thread is oldest first, its searches newest first.
                key_ids = sorted if call == 'thread' else list
                same = ('yes' if key_ids(o['ids']) == key_ids(p['ids'])
                    == key_ids(w['ids'])
                    else f"ours {len(o['ids'])} / peer {len(p['ids'])} / "
                    f"raw {len(w['ids'])}")
                mark = '' if o['seconds'] * 1000 < TARGET_MS else ' ⚠'
                lines.append(f"| {what} | {login} | "
                    f"**{o['seconds'] * 1000:.0f}**{mark} | "
                    f"{p['seconds'] * 1000:.0f} | "
                    f"{w['seconds'] * 1000:.1f} | "
                    f"{p['seconds'] / o['seconds']:.1f}x | "
                    f"{len(o['ids'])} | {same} |")
        lines.append("")
        counts = '; '.join(f"{login}: {ours[login + ':counts']['seconds'] * 1000:.0f} ms "
            f"({', '.join(f'{k} {v}' for k, v in ours[login + ':counts']['counts'].items())})"
            for login in ROLES)
        lines += [f"Best of {args.runs} after a warm-up, each call in its own "
            "transaction of the user with their preferences as context, "
            "as routes.py runs it (ours: crm.inbox; peer: search_read of "
            "the same rows, with sao's search_count of the five counted "
            "tabs for the inbox pages; raw: the one SELECT of the page or "
            "thread with the rule written by hand, without the counts, on "
            f"a connection of its own). Of ours, the tab counts alone: "
            f"{counts}.", ""]
        lines += ["Plans of the SELECTs on crm_conversation and crm_message "
            "that our calls ran (captured from the transaction's cursor), "
            "as the rep:", ""]
        whole = []
        for call, (what, _) in CALLS.items():
            for login in ROLES:
                for entry in ours[f'{login}:{call}']['plans']:
                    whole += [f'{login}:{call}: {line}'
                        for line in table_scans(entry)]
            o = ours[f'rep:{call}']
            lines.append(f"- {what} ({o['statements']} statements):")
            for entry in o['plans']:
                summary, total = plan_summary(entry['plan'])
                lines.append('  - ' + (' / '.join(f'`{s}`' for s in summary)
                        or '(no scan)') + (f' — {total}' if total else ''))
        lines += ["", ("Scans of crm_message or crm_conversation by their "
                "table rather than an index in our calls' plans (both "
                "roles; a scan under a LIMIT stops at it): "
                + ('none.' if not whole else '; '.join(
                        f'`{w}`' for w in whole))), ""]
        raw_plan = raw['rep:open']['plan']
        lines += ["<details><summary>Full plans (rep): the first page's "
            "SQL, the thread's and the raw bound's</summary>", ""]
        for call in ['open', 'thread']:
            for entry in ours[f'rep:{call}']['plans']:
                lines += ['```', entry['sql'][:2000], '', *entry['plan'],
                    '```', '']
        lines += ['Raw bound, first page:', '```', *raw_plan, '```', '',
            '</details>', '']
    return '\n'.join(lines)


def print_plans(results):
    for name, r in results.items():
        for key, entry in r['ours'].items():
            for plan in entry.get('plans', []):
                print(f'[{name}] {key}: {plan["sql"][:600]}')
                print('    ' + '\n    '.join(plan['plan']))
        for key, entry in r['raw'].items():
            print(f'[{name}] raw {key}:')
            print('    ' + '\n    '.join(entry['plan']))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--leads', type=int, default=100_000)
    parser.add_argument('--messages', type=int, default=1_000_000)
    parser.add_argument('--sqlite-leads', type=int, default=100_000)
    parser.add_argument('--sqlite-messages', type=int, default=1_000_000)
    parser.add_argument('--runs', type=int, default=5)
    parser.add_argument('--no-sqlite', action='store_true')
    parser.add_argument('--no-postgresql', action='store_true')
    parser.add_argument('--no-results', action='store_true',
        help="do not append to bench/RESULTS.md")
    parser.add_argument('--worker', choices=['setup', 'ours', 'peer', 'raw'],
        help=argparse.SUPPRESS)
    parser.add_argument('--site', help=argparse.SUPPRESS)
    parser.add_argument('--site-root', help=argparse.SUPPRESS)
    parser.add_argument('--thread-conversation', type=int,
        help=argparse.SUPPRESS)
    parser.add_argument('--thread-lead', type=int, help=argparse.SUPPRESS)
    parser.add_argument('--cursor', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    for leads, messages in [(args.leads, args.messages),
            (args.sqlite_leads, args.sqlite_messages)]:
        if leads < 2 or messages < THREAD_MESSAGES + leads:
            parser.error(f'{messages:,} messages for {leads:,} leads: at '
                f'least one a lead and {THREAD_MESSAGES} on the first')

    databases = {}
    if not args.no_sqlite:
        databases['SQLite'] = (None, args.sqlite_leads, args.sqlite_messages)
    server = None if args.no_postgresql else postgresql_server()
    if server:
        databases['PostgreSQL'] = (server, args.leads, args.messages)
    if not databases:
        parser.error('no database to run on')
    results = {}
    for name, (db_uri, leads, messages) in databases.items():
        results[name] = bench_database(name, db_uri, leads, messages, args)
    print_plans(results)
    versions = ', '.join(f"{r['setup']['version']}: "
        f"{r['setup']['totals']['crm_lead']:,} leads"
        for r in results.values())
    text = (f"Leads owned by the demo's reps, its agent and manager and three "
        f"more reps in a second team, a quarter unassigned (each rep sees "
        f"their own and their team's unassigned ones), each with a "
        f"conversation and a WhatsApp consent (4% opted out), 6% with an "
        f"open deal; WhatsApp messages in and out over six months, one lead "
        f"with {THREAD_MESSAGES}. Built by COPY / executemany on a fresh "
        f"demo site per database ({versions}), then ANALYZE. Target: under "
        f"{TARGET_MS} ms for each of ours.\n\n" + report(results, args))
    print()
    print(f"Machine: {describe()}\n\n{text}")
    if not args.no_results:
        record_results('Team inbox', text)
        print('Appended to bench/RESULTS.md')


if __name__ == '__main__':
    sys.exit(main())
