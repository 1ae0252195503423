"""Benchmark of assignment (`./crm bench assignment`).

On a fresh demo site (its rules: referrals to Rahul, the rest round robin
in Mumbai Sales), builds by SQL N new leads without an owner (10,000 by
default, from the import source, with their first-response clock started)
and times:

- ours: `Lead.assign(leads)`, as the queue's task runs it after a capture
  or an import: the rules are matched, owners chosen round robin, the
  leads written (owner, team, rule, reassign time), the timeline and SLA
  hooks run;
- the raw-SQL bound: one UPDATE giving the same leads their owner round
  robin by id, rolled back;

on SQLite, and on PostgreSQL when KRAYA_BENCH_POSTGRESQL is set or a
server answers on 127.0.0.1:5432. Target: 10,000 assignments in under 5 s.
Prints the figures and appends a dated section to bench/RESULTS.md.

    ./crm bench assignment [--leads 10000] [--no-postgresql] [--no-results]
"""
import argparse
import json
import os
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

TARGET_SECONDS = 5.0
NAME_PREFIX = 'Bench assignment '


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
    run = {'setup': build_leads, 'ours': time_ours, 'raw': time_raw}[
        args.worker]
    print(json.dumps(run(database, user_id, context, args)))


def bench_leads(Lead):
    "The ids of the benchmark's leads, oldest first."
    from trytond.transaction import Transaction
    table = Lead.__table__()
    cursor = Transaction().connection.cursor()
    cursor.execute(*table.select(table.id,
            where=table.name.like(NAME_PREFIX + '%'),
            order_by=[table.id.asc]))
    return [i for i, in cursor]


def build_leads(database, user_id, context, args):
    "New leads without owner, by SQL, their clock started as capture does."
    from trytond import backend
    from trytond.pool import Pool
    from trytond.transaction import Transaction
    from kraya_crm.message import utcnow
    pool = Pool(database)
    Lead = pool.get('crm.lead')
    Source = pool.get('crm.source')
    with Transaction().start(database, user_id, context=context) \
            as transaction:
        source = Source.get_by_code('import')
        team = source.team_for_new_leads
        now = utcnow()
        cursor = transaction.connection.cursor()
        rows = [(f'{NAME_PREFIX}{i}', '+91%d' % (8000000000 + i), 'Mumbai',
                int(context['company']), source.id, team.id if team else None,
                'new', 0, True, False, user_id, now, now)
            for i in range(args.leads)]
        mark = '%s' if backend.name == 'postgresql' else '?'
        cursor.executemany(
            'INSERT INTO crm_lead (name, phone, city, company, source, team, '
            'status, score, active, not_on_whatsapp, create_uid, '
            'create_date, sla_started_at) VALUES (%s)'
            % ', '.join([mark] * 13), rows)
        ids = bench_leads(Lead)
        Lead.start_sla(Lead.browse(ids))
        transaction.commit()
        version = (transaction.database.get_version(transaction.connection)
            if backend.name == 'postgresql' else None)
    import sqlite3
    return {'leads': len(ids), 'version': (
            'PostgreSQL %s' % '.'.join(map(str, version)) if version
            else f'SQLite {sqlite3.sqlite_version}')}


def time_ours(database, user_id, context, args):
    from trytond.pool import Pool
    from trytond.transaction import Transaction
    pool = Pool(database)
    Lead = pool.get('crm.lead')
    with Transaction().start(database, user_id, context=context) \
            as transaction:
        ids = bench_leads(Lead)
        profiler = None
        if os.environ.get('KRAYA_BENCH_PROFILE'):
            import cProfile
            profiler = cProfile.Profile()
            profiler.enable()
        start = time.perf_counter()
        assigned = Lead.assign(ids)
        seconds = time.perf_counter() - start
        if profiler:
            import pstats
            profiler.disable()
            pstats.Stats(profiler, stream=sys.stderr).sort_stats(
                'cumulative').print_stats(45)
        owners = {}
        for user, rule in assigned.values():
            owners[user.rec_name] = owners.get(user.rec_name, 0) + 1
        transaction.rollback()
    return {'seconds': seconds, 'assigned': len(assigned), 'owners': owners}


def time_raw(database, user_id, context, args):
    "The bound: one UPDATE of owner, team and times, round robin by id."
    from trytond.pool import Pool
    from trytond.transaction import Transaction
    from kraya_crm.message import utcnow
    pool = Pool(database)
    Lead = pool.get('crm.lead')
    Team = pool.get('crm.team')
    with Transaction().start(database, user_id, context=context) \
            as transaction:
        ids = bench_leads(Lead)
        team, = Team.search([], limit=1)
        members = sorted(m.id for m in team.members)
        cursor = transaction.connection.cursor()
        cases = ' '.join(f'WHEN {i} THEN {m}' for i, m in enumerate(members))
        start = time.perf_counter()
        cursor.execute(
            # (id - first) mod n, in arithmetic both databases have.
            f'UPDATE crm_lead SET owner = CASE (id - {ids[0]}) - ((id - '
            f'{ids[0]}) / {len(members)}) * {len(members)} {cases} END, '
            f'team = {team.id}, '
            f'assigned_at = %s, write_date = %s '
            f'WHERE id >= {ids[0]} AND id <= {ids[-1]}'.replace(
                '%s', '%s' if transaction.database.flavor.param == '%s'
                else '?'), (utcnow(), utcnow()))
        seconds = time.perf_counter() - start
        transaction.rollback()
    return {'seconds': seconds}


def run_worker(kind, site, **options):
    command = [sys.executable, __file__, '--worker', kind, '--site',
        site.name, '--site-root', str(site.path.parent)]
    for name, value in options.items():
        command += ['--' + name.replace('_', '-'), str(value)]
    output = subprocess.run(command, check=True, stdout=subprocess.PIPE,
        text=True, env=site.environ()).stdout
    return json.loads(output.strip().splitlines()[-1])


def bench_database(name, db_uri, args):
    sys.path.insert(0, str(ROOT / 'apps'))
    from kraya_site import sites
    root = Path(tempfile.mkdtemp(prefix='kraya-bench-'))
    site_name = f'bench_assign_{name.lower()}_{os.getpid()}'
    print(f'[{name}] creating a demo site...', flush=True)
    site = sites.new_site(site_name,
        db_uri=f'{db_uri}/{site_name}' if db_uri else None, demo=True,
        root=root)
    try:
        setup = run_worker('setup', site, leads=args.leads)
        print(f'[{name}] {setup["leads"]:,} new leads; assigning...',
            flush=True)
        ours = run_worker('ours', site, leads=args.leads)
        raw = run_worker('raw', site, leads=args.leads)
    finally:
        site.drop()
        shutil.rmtree(root, ignore_errors=True)
    return {'setup': setup, 'ours': ours, 'raw': raw}


def report(results, leads):
    lines = ["| database | ours: Lead.assign | leads/s | raw SQL bound "
        "| ours ÷ bound | under 5 s |", "|---|---:|---:|---:|---:|---|"]
    for name, r in results.items():
        ours, raw = r['ours']['seconds'], r['raw']['seconds']
        lines.append(f"| {name} ({r['setup']['version']}) | {ours:.2f} s "
            f"| {r['ours']['assigned'] / ours:,.0f} | {raw:.3f} s "
            f"| {ours / raw:,.0f}× | "
            f"{'yes' if ours < TARGET_SECONDS else 'NO'} |")
    lines.append("")
    for name, r in results.items():
        lines.append(f"{name}: " + ', '.join(f"{k} {v:,}"
                for k, v in sorted(r['ours']['owners'].items())))
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--leads', type=int, default=10_000)
    parser.add_argument('--no-postgresql', action='store_true')
    parser.add_argument('--no-results', action='store_true',
        help="do not append to bench/RESULTS.md")
    parser.add_argument('--worker', choices=['setup', 'ours', 'raw'],
        help=argparse.SUPPRESS)
    parser.add_argument('--site', help=argparse.SUPPRESS)
    parser.add_argument('--site-root', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    databases = {'SQLite': None}
    server = None if args.no_postgresql else postgresql_server()
    if server:
        databases['PostgreSQL'] = server
    results = {name: bench_database(name, uri, args)
        for name, uri in databases.items()}
    text = (f"{args.leads:,} new leads without an owner (source import, "
        f"clock started), assigned by the demo's rules (round robin in "
        f"Mumbai Sales) in one `Lead.assign` call, as the queue's task "
        f"does; beside it one raw UPDATE giving the same owners. A fresh "
        f"demo site per database.\n\n" + report(results, args.leads))
    print(f"\nMachine: {describe()}\n\n{text}")
    if not args.no_results:
        record_results('Assignment', text)
        print('Appended to bench/RESULTS.md')


if __name__ == '__main__':
    sys.exit(main())
