"""Benchmark of the automation rules (`./crm bench automation`).

On a fresh demo site, with 5 active rules on new leads (a tag for Mumbai
leads, a task for budgets over ₹1 crore, a notification for the Diwali
campaign, a tag for leads with an email, Powai launch leads to Rahul),
imports a generated file of 10,000 leads (bench_import's generator) and
times, each in one transaction rolled back:

- the import alone (the rules switched off), then with the 5 rules on:
  the difference is what firing costs the import (one query per batch and
  one queued task per rule);
- ours: the queued rules run as the worker runs them (condition searched
  over the batch, actions on the matching list, a run logged per record):
  rules evaluated and actions done per second;
- peer: Tryton's own ir.trigger engine evaluating the same 5 conditions
  (PYSON on each record, as `queue_trigger_action` does on create),
  without any action;
- the raw-SQL bound: the same effects (tags, tasks, notifications, owner,
  and the runs' log) as 5 set-based INSERT/UPDATE ... SELECT;
- the webhook sender: 1,000 signed deliveries POSTed by
  `Delivery.send_due` to a local HTTP receiver (committed, as the worker).

on SQLite, and on PostgreSQL when KRAYA_BENCH_POSTGRESQL is set or a
server answers on 127.0.0.1:5432. Appends a dated section to
bench/RESULTS.md.

    ./crm bench automation [--leads 10000] [--deliveries 1000]
        [--no-postgresql] [--no-results]
"""
import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / 'bench' / 'data'
sys.path.insert(0, str(ROOT))

from bench.bench_import import generate  # noqa: E402
from bench.machine import (  # noqa: E402
    describe, postgresql_server, record_results)

# name, condition, action: the 5 rules on new leads.
RULES = [
    ("Mumbai leads: tag", [['city', '=', 'Mumbai']], 'tag_mumbai'),
    ("Budget over ₹1 crore: call", [['budget', '>', 10000000]], 'task'),
    ("Diwali campaign: tell the manager",
        [['campaign', '=', 'Diwali Offer 2026']], 'notify'),
    ("With an email: tag", [['email', '!=', None]], 'tag_email'),
    ("Powai launch: to Rahul", [['campaign', '=', 'Powai Launch']],
        'assign'),
    ]
# ---- in the site's own process (trytond reads its configuration once) ----

def worker(args):
    sys.path.insert(0, str(ROOT / 'apps'))
    from kraya_site.import_cli import use_site, user_context
    from kraya_site.sites import Site
    site = Site(args.site, root=args.site_root)
    use_site(site)
    from trytond.pool import Pool
    from trytond.transaction import Transaction
    Pool(site.database).init()
    with Transaction().start(site.database, 0, readonly=True):
        user_id, context = user_context('admin')
    context = dict(context, _skip_warnings=True)
    run = {'setup': setup, 'ours': time_ours, 'peer': time_peer,
        'raw': time_raw, 'webhook': time_webhook}[args.worker]
    with Transaction().start(site.database, user_id, context=context):
        result = run(args)
    print(json.dumps(result))


def setup(args):
    "The 5 rules (off), their tags, and the demo's own rules switched off."
    from trytond.pool import Pool
    from trytond.transaction import Transaction
    pool = Pool()
    Rule = pool.get('crm.automation.rule')
    Tag = pool.get('crm.tag')
    User = pool.get('res.user')
    Rule.write(Rule.search([]), {'active': False})
    mumbai, email = Tag.create([{'name': "Mumbai"}, {'name': "Emailable"}])
    rahul, = User.search([('login', '=', 'rep')])
    manager, = User.search([('login', '=', 'manager')])
    actions = {
        'tag_mumbai': {'kind': 'add_tag', 'tag': mumbai.id},
        'tag_email': {'kind': 'add_tag', 'tag': email.id},
        'task': {'kind': 'create_task', 'task_kind': 'call',
            'task_name': "Call the ₹1 crore enquiry", 'due_in_hours': 1},
        'notify': {'kind': 'notify', 'user': manager.id,
            'text': "{lead.name} came by the Diwali offer"},
        'assign': {'kind': 'assign', 'user': rahul.id},
        }
    Rule.create([{'name': name, 'applies_to': 'crm.lead',
                'trigger': 'created', 'active': False,
                'condition': json.dumps(condition),
                'actions': [('create', [actions[action]])]}
            for name, condition, action in RULES])
    Transaction().commit()
    return {'tags': [mumbai.id, email.id], 'rahul': rahul.id,
        'manager': manager.id}


def bench_rules():
    from trytond.pool import Pool
    Rule = Pool().get('crm.automation.rule')
    return Rule.search([('name', 'in', [n for n, _, _ in RULES]),
            ('active', 'in', [True, False])])


def import_leads(path):
    "Our import of the file in the current transaction; (seconds, ids)."
    from trytond.pool import Pool
    from trytond.transaction import Transaction
    from kraya_crm.lead_import import ProblemReport
    Lead = Pool().get('crm.lead')
    table = Lead.__table__()
    cursor = Transaction().connection.cursor()
    cursor.execute(*table.select(table.id, order_by=[table.id.desc],
            limit=1))
    last, = cursor.fetchone()
    started = time.perf_counter()
    with open(path, 'rb') as file:
        Lead.import_file(file, path.name, source='import',
            report=ProblemReport(io.StringIO()))
    seconds = time.perf_counter() - started
    cursor.execute(*table.select(table.id, where=table.id > last))
    return seconds, [i for i, in cursor]


def time_ours(args):
    """The import without and with the rules, then the queued rules run
    as the worker runs them; all rolled back."""
    from trytond.pool import Pool
    from trytond.tools import grouped_slice
    from trytond.transaction import Transaction
    from kraya_crm.automation import CHUNK
    pool = Pool()
    Rule = pool.get('crm.automation.rule')
    Queue = pool.get('ir.queue')
    Run = pool.get('crm.automation.run')
    transaction = Transaction()
    path = Path(args.file)
    alone, ids = import_leads(path)
    transaction.rollback()

    Rule.write(bench_rules(), {'active': True})
    firing, ids = import_leads(path)
    # The tasks the import queued for the worker.
    tasks = Queue.search([('name', '=', 'crm_automation'),
            ('dequeued_at', '=', None)])
    profile = None
    if args.profile:
        import cProfile
        profile = cProfile.Profile()
        profile.enable()
    started = time.perf_counter()
    for task in tasks:
        rule_ids, (model, record_ids, trigger, chain) = (
            task.data['instances'], task.data['args'])
        for rule in Rule.browse(rule_ids):
            # Slice by slice, as Rule.run_triggered in the worker.
            for chunk in grouped_slice(record_ids, CHUNK):
                rule.apply(pool.get(model).browse(chunk), trigger, chain)
    running = time.perf_counter() - started
    if profile:
        import pstats
        profile.disable()
        pstats.Stats(profile, stream=sys.stderr).sort_stats(
            'cumulative').print_stats(40)
    runs = Run.search([('lead', 'in', ids)], count=True)
    transaction.rollback()
    return {'leads': len(ids), 'alone': alone, 'firing': firing,
        'tasks': len(tasks), 'running': running, 'runs': runs,
        'evaluated': len(ids) * len(RULES)}


def time_peer(args):
    """ir.trigger's evaluation of the same conditions on the new leads, as
    Trigger.queue_trigger_action does on create (no action)."""
    from trytond.pool import Pool
    from trytond.transaction import Transaction
    from trytond.pyson import Bool, Eval, PYSONEncoder
    pool = Pool()
    Trigger = pool.get('ir.trigger')
    Lead = pool.get('crm.lead')
    _, ids = import_leads(Path(args.file))
    lead = Eval('self', {})
    # The same 5 conditions, as ir.trigger's PYSON on `self`.
    conditions = [
        lead.get('city') == 'Mumbai',
        lead.get('budget', 0) > 10000000,
        lead.get('campaign') == 'Diwali Offer 2026',
        Bool(lead.get('email', '')),
        lead.get('campaign') == 'Powai Launch',
        ]
    triggers = [Trigger(condition=PYSONEncoder().encode(c))
        for c in conditions]
    started = time.perf_counter()
    matched = 0
    for trigger in triggers:
        matched += sum(1 for lead in Lead.browse(ids) if trigger.eval(lead))
    seconds = time.perf_counter() - started
    Transaction().rollback()
    return {'seconds': seconds, 'evaluated': len(ids) * len(triggers),
        'matched': matched}


def time_raw(args):
    """The rules' effects on the imported leads as set-based SQL: tags,
    tasks, notifications, the owner and a logged run per matching lead."""
    from sql import Literal, Null
    from sql.functions import CurrentTimestamp
    from trytond.pool import Pool
    from trytond.transaction import Transaction
    pool = Pool()
    Lead = pool.get('crm.lead')
    transaction = Transaction()
    cursor = transaction.connection.cursor()
    _, ids = import_leads(Path(args.file))
    first = min(ids)
    lead = Lead.__table__()
    lead_tag = pool.get('crm.lead-crm.tag').__table__()
    task = pool.get('crm.task').__table__()
    note = pool.get('res.notification').__table__()
    run = pool.get('crm.automation.run').__table__()
    rules = {r.name: r for r in bench_rules()}
    user = Literal(transaction.user)
    now = CurrentTimestamp()
    new = lead.id >= first
    where = {
        'tag_mumbai': new & (lead.city == 'Mumbai'),
        'task': new & (lead.budget > 10000000),
        'notify': new & (lead.campaign == 'Diwali Offer 2026'),
        'tag_email': new & (lead.email != Null),
        'assign': new & (lead.campaign == 'Powai Launch'),
        }
    tags = args.tags
    started = time.perf_counter()
    for tag, condition in [(tags[0], where['tag_mumbai']),
            (tags[1], where['tag_email'])]:
        cursor.execute(*lead_tag.insert(
                [lead_tag.lead, lead_tag.tag, lead_tag.create_uid,
                    lead_tag.create_date],
                lead.select(lead.id, Literal(tag), user, now,
                    where=condition)))
    cursor.execute(*task.insert(
            [task.name, task.kind, task.lead, task.owner, task.due,
                task.state, task.create_uid, task.create_date],
            lead.select(Literal("Call the ₹1 crore enquiry"),
                Literal('call'), lead.id, lead.owner, now, Literal('open'),
                user, now, where=where['task'])))
    cursor.execute(*note.insert(
            [note.user, note.label, note.description, note.model,
                note.records, note.unread, note.create_uid,
                note.create_date],
            lead.select(Literal(args.manager), Literal("Diwali"), lead.name,
                Literal('crm.lead'), Literal('[]'), Literal(True), user, now,
                where=where['notify'])))
    cursor.execute(*lead.update([lead.owner], [args.rahul],
            where=where['assign']))
    for name, _, action in RULES:
        cursor.execute(*run.insert(
                [run.rule, run.lead, run.state, run.trigger, run.at,
                    run.create_uid, run.create_date],
                lead.select(Literal(rules[name].id), lead.id,
                    Literal('done'), Literal('created'), now, user, now,
                    where=where[action])))
    seconds = time.perf_counter() - started
    transaction.rollback()
    return {'seconds': seconds, 'leads': len(ids)}


def time_webhook(args):
    """Up to --deliveries (the site's leads) new-lead events to a receiver
    on 127.0.0.1,
    sent by Delivery.send_due as the worker runs it (committed)."""
    from trytond.pool import Pool
    from trytond.transaction import Transaction
    from kraya_crm.tests.test_webhook import Receiver
    pool = Pool()
    Webhook = pool.get('crm.webhook')
    Event = pool.get('crm.event')
    Delivery = pool.get('crm.webhook.delivery')
    Lead = pool.get('crm.lead')
    transaction = Transaction()
    with Receiver() as receiver:
        webhook, = Webhook.create([{'name': "bench", 'url': receiver.url,
                    'events': ['lead.created']}])
        leads = Lead.search([], limit=args.deliveries)
        Event.happened('lead.created', leads)
        Webhook.write([webhook], {'active': False})
        transaction.commit()
        started = time.perf_counter()
        # send_due claims and sends in transactions of its own: this one's
        # snapshot (PostgreSQL's repeatable read) would never see them.
        while len(receiver.received) < len(leads):
            sent = len(receiver.received)
            Delivery.send_due(batch_size=50, seconds=600)
            if len(receiver.received) == sent:
                break
        seconds = time.perf_counter() - started
        with transaction.new_transaction():
            delivered = Delivery.search([('state', '=', 'delivered')],
                count=True)
        return {'seconds': seconds, 'delivered': delivered,
            'received': len(receiver.received)}


# ---- the run ----

def run_worker(kind, site, **options):
    command = [sys.executable, __file__, '--worker', kind, '--site',
        site.name, '--site-root', str(site.path.parent)]
    for name, value in options.items():
        if value is True:
            command.append('--' + name.replace('_', '-'))
        elif value is not None and value is not False:
            command += ['--' + name.replace('_', '-'), json.dumps(value)
                if isinstance(value, list) else str(value)]
    output = subprocess.run(command, check=True, stdout=subprocess.PIPE,
        text=True, env=site.environ()).stdout
    return json.loads(output.strip().splitlines()[-1])


def bench_database(name, db_uri, path, deliveries, profile=False):
    sys.path.insert(0, str(ROOT / 'apps'))
    from kraya_site import sites
    root = Path(tempfile.mkdtemp(prefix='kraya-bench-'))
    site_name = f'bench_auto_{name.lower()}_{os.getpid()}'
    print(f'[{name}] creating a demo site...', flush=True)
    site = sites.new_site(site_name,
        db_uri=f'{db_uri}/{site_name}' if db_uri else None, demo=True,
        root=root)
    try:
        made = run_worker('setup', site)
        print(f'[{name}] import without and with the rules, the rules '
            'run...', flush=True)
        ours = run_worker('ours', site, file=path, profile=profile)
        print(f'[{name}]   {ours}', flush=True)
        print(f'[{name}] ir.trigger evaluating the conditions...',
            flush=True)
        peer = run_worker('peer', site, file=path)
        print(f'[{name}] raw SQL...', flush=True)
        raw = run_worker('raw', site, file=path, tags=made['tags'],
            rahul=made['rahul'], manager=made['manager'])
        print(f'[{name}] {deliveries:,} webhook deliveries...', flush=True)
        webhook = run_worker('webhook', site, deliveries=deliveries)
    finally:
        site.drop()
        shutil.rmtree(root, ignore_errors=True)
    return {'ours': ours, 'peer': peer, 'raw': raw, 'webhook': webhook}


def report(results):
    lines = []
    for name, r in results.items():
        ours, peer, raw, hook = r['ours'], r['peer'], r['raw'], r['webhook']
        overhead = ours['firing'] / ours['alone'] - 1
        per_s = ours['evaluated'] / ours['running']
        peer_s = peer['evaluated'] / peer['seconds']
        raw_s = ours['evaluated'] / raw['seconds']
        lines += [
            f"### {name}",
            "",
            f"| {ours['leads']:,} new leads, 5 rules | seconds | "
            "rule evaluations/s | vs ours |",
            "|---|---:|---:|---:|",
            f"| the import alone (rules off) | {ours['alone']:.2f} | | |",
            f"| the import with the 5 rules on (firing: "
            f"{ours['tasks']} queued task(s)) | {ours['firing']:.2f} | | "
            f"**{overhead:+.0%}** |",
            f"| ours: the queued rules run (conditions, actions, "
            f"{ours['runs']:,} runs logged) | {ours['running']:.2f} | "
            f"{per_s:,.0f} | 1.00x |",
            f"| peer: Tryton's ir.trigger evaluating the 5 conditions "
            f"(PYSON per record, no action) | {peer['seconds']:.2f} | "
            f"{peer_s:,.0f} | {per_s / peer_s:.1f}x faster |",
            f"| raw-SQL bound: the same effects and log, 5 set-based "
            f"statements | {raw['seconds']:.2f} | {raw_s:,.0f} | "
            f"{raw_s / per_s:.0f}x faster than ours |",
            "",
            f"Firing the rules changes the import by {overhead:+.0%} (target "
            "under 20 %); the worker then evaluates "
            f"{per_s:,.0f} rule-record pairs a second with their actions. "
            f"The webhook sender delivered {hook['delivered']:,} signed "
            f"events to a receiver on 127.0.0.1 in {hook['seconds']:.1f} s: "
            f"**{hook['delivered'] / hook['seconds']:,.0f} deliveries/s** "
            f"(the receiver got {hook['received']:,}).",
            ""]
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--leads', type=int, default=10_000)
    parser.add_argument('--deliveries', type=int, default=1_000)
    parser.add_argument('--no-postgresql', action='store_true')
    parser.add_argument('--no-results', action='store_true',
        help="do not append to bench/RESULTS.md")
    parser.add_argument('--profile', action='store_true',
        help="print cProfile's figures of the rules' run (on stderr)")
    parser.add_argument('--worker', choices=['setup', 'ours', 'peer', 'raw',
            'webhook'], help=argparse.SUPPRESS)
    parser.add_argument('--site', help=argparse.SUPPRESS)
    parser.add_argument('--site-root', help=argparse.SUPPRESS)
    parser.add_argument('--file', help=argparse.SUPPRESS)
    parser.add_argument('--tags', type=json.loads, help=argparse.SUPPRESS)
    parser.add_argument('--rahul', type=int, help=argparse.SUPPRESS)
    parser.add_argument('--manager', type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)

    path = DATA / f'leads_{args.leads}.csv'
    print(f'Generating {path.relative_to(ROOT)}...', flush=True)
    generate(path, args.leads)
    databases = {'SQLite': None}
    server = None if args.no_postgresql else postgresql_server()
    if server:
        databases['PostgreSQL'] = server
    results = {name: bench_database(name, uri, path, args.deliveries,
            args.profile)
        for name, uri in databases.items()}
    import sqlite3
    text = (f"{args.leads:,} leads imported from a generated file "
        "(bench_import's) on a fresh demo site, 5 active rules on new "
        "leads (tag, task, notification, tag, assign); SQLite "
        f"{sqlite3.sqlite_version}. Each measure is one transaction, "
        "rolled back; ours runs the queued rules in the import's "
        "transaction (the worker gives each rule one of its own).\n\n"
        + report(results))
    print()
    print(f"Machine: {describe()}\n\n{text}")
    if not args.no_results:
        record_results('Automation rules', text)
        print('Appended to bench/RESULTS.md')


if __name__ == '__main__':
    sys.exit(main())
