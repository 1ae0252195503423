"""Benchmark of lead scoring (`./crm bench scoring`).

On a fresh demo site, builds by SQL `--leads` leads (sources, cities,
budgets and company names for the attribute rules) and `--events` score
events (replies, prices asked, visits, emails, over the last month) on as
many of them. Then times, for the leads of those events:

- ours: `Lead.rescore(leads)`: the attribute rules a query each, the
  events read, the decay computed, the breakdown lines replaced and the
  changed scores and bands written through Tryton's write (its checks and
  hooks), in a transaction, rolled back;
- ours, with the events: `Lead.record_score_events(events)`, the path a
  webhook takes (insert the events, restart the silence clocks, rescore);
- the peer: Tryton's generic `write` of the same scores and bands, one
  record at a time, as a module without bulk paths would;
- the raw-SQL bound: one set-based UPDATE ... FROM computing the same sums
  (the attribute rules as the subqueries of their domains, the latest
  event of each kind decayed in SQL), and one of the bands, rolled back;
  the scores it gives are compared with ours.

on SQLite, and on PostgreSQL when KRAYA_BENCH_POSTGRESQL (e.g.
postgresql://127.0.0.1:5432) is set or a server answers on 127.0.0.1:5432.
Prints the figures and appends a dated section to bench/RESULTS.md.

    ./crm bench scoring [--leads 50000] [--events 10000] [--no-postgresql]
        [--profile]

main() runs a list of sections per site; the assignment half of issue 16
adds its own (a time_assignment) beside time_scoring.
"""
import argparse
import datetime as dt
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

from bench.bench_sequences import Bulk  # noqa: E402
from bench.machine import (  # noqa: E402
    describe, postgresql_server, record_results)

CAMPAIGN = 'bench-scoring'
KINDS = ['replied_whatsapp', 'asked_price', 'visit_booked', 'email_engaged']


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
    context = dict(context, _skip_warnings=True)
    run = {'setup': build_data, 'scoring': time_scoring}[args.worker]
    print(json.dumps(run(database, user_id, context, args)))


def build_data(database, user_id, context, args):
    "The leads and their events, by SQL (the setup is not what is timed)."
    from trytond.pool import Pool
    from trytond.transaction import Transaction
    from kraya_crm.message import utcnow
    pool = Pool(database)
    Source = pool.get('crm.source')
    with Transaction().start(database, user_id, context=context) \
            as transaction:
        bulk = Bulk(transaction)
        now = utcnow()
        sources = [s.id for s in Source.search([], order=[('id', 'ASC')])]

        def mod(value, by):  # % would be taken for a parameter
            return f'({value} - ({value}) / {by} * {by})'
        source = 'CASE %s %s END' % (mod('i', len(sources)), ' '.join(
                f'WHEN {n} THEN {s}' for n, s in enumerate(sources)))
        start = time.perf_counter()
        last = bulk.max_id('crm_lead')
        bulk.execute(
            'INSERT INTO crm_lead (name, phone, city, company_name, budget, '
            'campaign, company, source, status, score, band, active, '
            'not_on_whatsapp, create_uid, create_date) '
            f'{bulk.numbers(args.leads)} '
            "SELECT 'Lead ' || i, '+91' || (9100000000 + i), "
            f"CASE {mod('i', 3)} WHEN 0 THEN 'Mumbai' WHEN 1 THEN 'Pune' "
            "ELSE 'Thane' END, "
            f"CASE {mod('i', 4)} WHEN 0 THEN 'Co ' || i END, "
            f"{mod('i', 7)} * 300000, '{CAMPAIGN}', "
            f"{int(context['company'])}, {source}, 'new', 0, 'cold', "
            '%s, %s, %s, %s FROM n', (True, False, user_id, now))
        first = bulk.first_id('crm_lead', last)
        kind = 'CASE %s %s END' % (mod('id', len(KINDS)), ' '.join(
                f"WHEN {n} THEN '{k}'" for n, k in enumerate(KINDS)))
        points = 'CASE %s %s END' % (mod('id', len(KINDS)), ' '.join(
                f'WHEN {n} THEN {p}' for n, p in enumerate([25, 15, 20, 5])))
        # Spread over the last month, a minute apart.
        at = bulk.minutes_after('-' + mod('id', 43200))
        bulk.execute(
            'INSERT INTO crm_lead_score_event (lead, kind, at, points, '
            'create_uid, create_date) '
            f'SELECT id, {kind}, {at}, {points}, %s, %s FROM crm_lead '
            'WHERE id >= %s AND id < %s',
            (now, user_id, now, first, first + args.events))
        seconds = time.perf_counter() - start
        transaction.commit()
        if bulk.postgresql:
            for table in ['crm_lead', 'crm_lead_score_event']:
                bulk.execute(f'ANALYZE {table}')
            transaction.commit()
        version = bulk.version()
    return {'seconds': seconds, 'first': first, 'version': version}


def raw_update(bulk, Lead, settings, ids, now):
    """The bound: one UPDATE of score and band for these leads, the sums
    made in SQL. The attribute rules are the queries of their domains (the
    code's own, through search(query=True)); the latest event of each kind
    counts, decayed with its rule's half-life."""
    from trytond.transaction import Transaction
    marks = ', '.join(['%s'] * len(ids))
    parts, params = [], []
    for _, _, domain, points in settings['attribute']:
        sql, sub = tuple(Lead.search(json.loads(domain), query=True))
        parts.append(f'CASE WHEN crm_lead.id IN ({sql}) THEN {int(points)} '
            'ELSE 0 END')
        params += list(sub)
    if bulk.postgresql:
        age = 'EXTRACT(EPOCH FROM (CAST(%s AS TIMESTAMP) - e.at)) / 86400.0'
    else:
        age = '(julianday(%s) - julianday(e.at))'
    cases = ' '.join(
        f"WHEN '{kind}' THEN {half_life or 0}"
        for kind, (_, _, _, half_life) in settings['behaviour'].items())
    # The events' sums in one pass, joined to the leads (UPDATE ... FROM,
    # SQLite 3.33 and PostgreSQL): every bench lead has events.
    events = (
        'SELECT e.lead AS lead, SUM(FLOOR(e.points * CASE WHEN '
        f'h.half_life > 0 THEN POWER(0.5, {age} / h.half_life) ELSE 1 END '
        '+ 0.5)) AS points FROM crm_lead_score_event AS e '
        f'JOIN (SELECT CASE kind {cases} END AS half_life, lead, kind, '
        'MAX(at) AS at FROM crm_lead_score_event '
        f'WHERE lead IN ({marks}) GROUP BY lead, kind) AS h '
        'ON h.lead = e.lead AND h.kind = e.kind AND h.at = e.at '
        'GROUP BY e.lead')
    total = f"({' + '.join(parts + ['b.points'])})"
    score = f'MAX(0, MIN(100, {total}))' if not bulk.postgresql \
        else f'GREATEST(0, LEAST(100, {total}))'
    query = (f'UPDATE crm_lead SET score = {score} FROM ({events}) AS b '
        'WHERE crm_lead.id = b.lead')
    cursor = Transaction().connection.cursor()
    start = time.perf_counter()
    bulk.execute(query, params + [now] + ids)
    bulk.execute(
        "UPDATE crm_lead SET band = CASE WHEN score >= %s THEN 'hot' "
        "WHEN score >= %s THEN 'warm' ELSE 'cold' END "
        f'WHERE id IN ({marks})',
        [settings['hot_from'], settings['warm_from']] + ids)
    seconds = time.perf_counter() - start
    cursor.execute('SELECT id, score FROM crm_lead WHERE id IN (%s)' % (
            ', '.join(map(str, ids))))
    return seconds, dict(cursor)


def stored_scores(bulk, ids):
    return dict(bulk.execute('SELECT id, score FROM crm_lead WHERE id IN '
            '(%s)' % ', '.join(map(str, ids))).fetchall())


def time_scoring(database, user_id, context, args):
    """Ours (rescore, and record_score_events), the peer (generic write)
    and the raw bound, each from the same committed state, rolled back."""
    from trytond.pool import Pool
    from trytond.transaction import Transaction
    from kraya_crm.message import utcnow
    pool = Pool(database)
    Lead = pool.get('crm.lead')
    Rule = pool.get('crm.scoring.rule')
    ids = list(range(args.first, args.first + args.events))
    result = {}
    with Transaction().start(database, user_id, context=context) \
            as transaction:
        bulk = Bulk(transaction)
        settings = Rule.settings()
        now = utcnow()
        # Callers hold their records already: browsed before the clock.
        leads = Lead.browse(ids)
        profile = None
        if args.profile:
            import cProfile
            profile = cProfile.Profile()
            profile.enable()
        start = time.perf_counter()
        Lead.rescore(leads, now=now)
        result['rescore_seconds'] = time.perf_counter() - start
        if profile:
            import pstats
            profile.disable()
            stats = pstats.Stats(profile, stream=sys.stderr)
            stats.sort_stats('cumulative').print_stats(40)
        ours = stored_scores(bulk, ids)
        bands = dict(bulk.execute('SELECT id, band FROM crm_lead WHERE id IN '
                '(%s)' % ', '.join(map(str, ids))).fetchall())
        result['lines'] = bulk.execute(
            'SELECT COUNT(*) FROM crm_lead_score_line WHERE lead >= %s '
            'AND lead < %s', (ids[0], ids[-1] + 1)).fetchone()[0]
        transaction.rollback()

        # The peer: Tryton's generic write of the same values, a record at
        # a time, as a module without a bulk path writes them.
        leads = Lead.browse(ids)
        start = time.perf_counter()
        for lead in leads:
            Lead.write([lead], {'score': ours[lead.id],
                    'band': bands[lead.id]})
        result['peer_seconds'] = time.perf_counter() - start
        transaction.rollback()

        result['raw_seconds'], raw = raw_update(
            bulk, Lead, settings, ids, now)
        result['raw_agrees'] = sum(raw[i] == ours[i] for i in ids)
        transaction.rollback()

        # The webhook's path: the events recorded, then rescored.
        bulk.execute('DELETE FROM crm_lead_score_event WHERE lead >= %s '
            'AND lead < %s', (ids[0], ids[-1] + 1))
        events = [(lead, KINDS[lead.id % len(KINDS)], now - dt.timedelta(
                        minutes=lead.id % 43200))
            for lead in Lead.browse(ids)]
        start = time.perf_counter()
        Lead.record_score_events(events)
        result['record_seconds'] = time.perf_counter() - start
        transaction.rollback()
        result['scored'] = sum(1 for s in ours.values() if s)
        result['hot'] = sum(1 for b in bands.values() if b == 'hot')
    return result


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


def scoring_section(name, site, setup, args):
    "The figures of the scoring half, as lines of RESULTS.md."
    print(f'[{name}] rescoring after {args.events:,} events...', flush=True)
    r = run_worker('scoring', site, first=setup['first'], events=args.events,
        leads=args.leads, profile=args.profile)
    n = args.events
    rows = [
        ("ours: `Lead.rescore(leads)` (rules, decay, breakdown lines, "
            "scores and bands written)", r['rescore_seconds']),
        ("ours: `Lead.record_score_events(events)` (insert the events, "
            "then rescore)", r['record_seconds']),
        ("peer: Tryton's generic `write` of the same scores and bands, a "
            "record at a time", r['peer_seconds']),
        ("raw-SQL bound: one set-based UPDATE computing the same sums (and "
            "one of the bands), rolled back", r['raw_seconds']),
        ]
    ours = r['rescore_seconds']
    return [
        f"| rescoring {n:,} leads after {n:,} events, of {args.leads:,} "
        "leads | seconds | leads/s | time vs ours |",
        "|---|---:|---:|---:|",
        *(f"| {what} | {seconds:.2f} | {n / seconds:,.0f} | "
            f"{seconds / ours:.2f}x |" for what, seconds in rows),
        "",
        f"Ours wrote {r['lines']:,} breakdown lines; {r['scored']:,} of the "
        f"leads scored above 0, {r['hot']:,} hot. The raw bound gave the "
        f"same score as ours for {r['raw_agrees']:,} of {n:,} leads "
        f"(it writes no breakdown). Ours is "
        f"{r['peer_seconds'] / ours:.1f}x the speed of the generic write "
        f"and {ours / r['raw_seconds']:.1f}x the time of the raw bound.",
        ""]


# Each section: (title, function(name, site, setup, args) -> lines).
SECTIONS = [('Rescoring', scoring_section)]


def bench_database(name, db_uri, args):
    sys.path.insert(0, str(ROOT / 'apps'))
    from kraya_site import sites
    root = Path(tempfile.mkdtemp(prefix='kraya-bench-'))
    site_name = f'bench_score_{name.lower()}_{os.getpid()}'
    print(f'[{name}] creating a demo site...', flush=True)
    started = time.perf_counter()
    site = sites.new_site(site_name,
        db_uri=f'{db_uri}/{site_name}' if db_uri else None, demo=True,
        root=root)
    try:
        print(f'[{name}] {args.leads:,} leads and {args.events:,} events by '
            'SQL...', flush=True)
        setup = run_worker('setup', site, leads=args.leads,
            events=args.events)
        lines = [f"### {name} ({setup['version']})", ""]
        for title, section in SECTIONS:
            lines += [f"#### {title}", "", *section(name, site, setup, args)]
    finally:
        site.drop()
        shutil.rmtree(root, ignore_errors=True)
    print(f'[{name}] done in {time.perf_counter() - started:.0f} s',
        flush=True)
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--leads', type=int, default=50_000)
    parser.add_argument('--events', type=int, default=10_000,
        help="events, on as many leads, then rescored")
    parser.add_argument('--no-postgresql', action='store_true')
    parser.add_argument('--no-results', action='store_true',
        help="do not append to bench/RESULTS.md")
    parser.add_argument('--profile', action='store_true',
        help="print cProfile's figures of our rescoring (on stderr)")
    parser.add_argument('--worker', choices=['setup', 'scoring'],
        help=argparse.SUPPRESS)
    parser.add_argument('--site', help=argparse.SUPPRESS)
    parser.add_argument('--site-root', help=argparse.SUPPRESS)
    parser.add_argument('--first', type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    if not 0 < args.events <= args.leads:
        parser.error('--events must be between 1 and --leads')
    databases = {'SQLite': None}
    server = None if args.no_postgresql else postgresql_server()
    if server:
        databases['PostgreSQL'] = server
    lines = []
    for name, db_uri in databases.items():
        lines += bench_database(name, db_uri, args)
    text = (f"{args.leads:,} leads built by SQL on a fresh demo site per "
        f"database (sources, cities, budgets, company names), "
        f"{args.events:,} score events on as many of them over the last "
        f"month, scored by the demo's rules (4 attribute, 5 behaviour).\n\n"
        + '\n'.join(lines))
    print()
    print(f"Machine: {describe()}\n\n{text}")
    if not args.no_results:
        record_results('Lead scoring', text)
        print('Appended to bench/RESULTS.md')
    # Working a lead is scoring it and handing it to a rep: the assignment
    # of as many new leads is bench_assignment.py's, run with this one.
    from bench import bench_assignment
    return bench_assignment.main([f'--leads={args.events}']
        + ['--no-postgresql'] * args.no_postgresql
        + ['--no-results'] * args.no_results)


if __name__ == '__main__':
    sys.exit(main())
