"""Benchmark of the pipeline board's reads (`./crm bench board`).

On a fresh demo site, builds in bulk (COPY on PostgreSQL, executemany on
SQLite; bench_inbox's Copy) 1,000,000 leads and 200,000 deals across the
stages, owned by the demo's reps and three more in a second team (a
quarter unassigned), with open tasks on a third of the deals and 40 deals
changed in the last minute; then VACUUM ANALYZE. Then times, as the
manager and as a rep (record rules on), each call in a transaction of
that user with the user's preferences as context, as the web server runs
it (routes.py), best of --runs after a warm-up:

- ours: the board's first paint (`Board.board('deals')`: every column's
  count, ₹ total and weighted total over the whole column, and its first
  20 cards with owner, band, next task and badges), a column's next page,
  the forecast's and the leads board's first paint, the first paint
  filtered to hot leads' deals, and the live poll a minute back;
- the peer: the desk's list view loading the same records the way sao
  does, per stage a `search_count` and a `search_read` of the list view's
  fields (limit 20), with access checked, same user; and with
  --desk-graph, once, the desk's graph of value by stage, which reads
  every deal (the desk's only way to a stage's total: minutes);
- the raw-SQL bound: one SELECT of the counts and totals by stage and one
  of the first 20 rows of each stage (a window function), the rule's
  condition written by hand, with psycopg (or sqlite3) directly.

The SQL our calls issue is captured and EXPLAINed (ANALYZE, BUFFERS). On
PostgreSQL (KRAYA_BENCH_POSTGRESQL, or a server on 127.0.0.1:5432) at the
full size, and on SQLite at a tenth of it unless told. Prints the figures
and the plans and appends a dated section to bench/RESULTS.md.

    ./crm bench board [--leads 1000000] [--deals 200000] [--runs 5]
        [--sqlite-leads 100000] [--sqlite-deals 20000] [--no-sqlite]
        [--no-postgresql] [--no-results] [--desk-graph]
"""
import argparse
import datetime as dt
import os
import random
import re
import shutil
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import bench_inbox  # noqa: E402
from bench.bench_inbox import (  # noqa: E402
    CITIES, FIRST, LAST, OWNERS, ROLES, TEAM_OF, Copy, Queries,
    add_extra_reps, as_web, best_of, plan_summary, plans, raw_connection,
    role_users, run_worker, table_scans)
from bench.machine import (  # noqa: E402
    describe, postgresql_server, record_results)

TARGET_MS = 300
PAGE = 20
CHANGED_RECENTLY = 40
BOARD_TABLES = re.compile(r'"(crm_deal|crm_lead|crm_task)"')
BOARD_TABLE_NAMES = 'crm_deal|crm_lead|crm_task'
# Share of the deals in each stage, by the stage's sequence.
STAGE_SHARES = {10: 20, 20: 15, 30: 12, 40: 10, 50: 6, 60: 17, 70: 20}
PRICES = [25000, 6500000, 9500000, 14500000, 32000000]
TASKS = ["Call back about the visit", "Send the floor plan",
    "Site visit with the family", "Share the payment plan"]
# What the desk's deal list shows (view/deal_list.xml), read as sao does.
LIST_FIELDS = ['rec_name', '_timestamp', '_write', '_delete', 'title',
    'party', 'party.rec_name', 'stage', 'stage.rec_name', 'value',
    'currency', 'probability', 'expected_close', 'owner', 'owner.rec_name',
    'stage_entered_at']


# ---- the measurements, each in a process of its own ----

def worker(args):
    return bench_inbox.worker(args, {'setup': build_data, 'ours': time_ours,
            'peer': time_peer, 'raw': time_raw})


def build_data(site, database, user_id, context, args):
    """The extra reps and their team, then the leads, deals and tasks by
    COPY / executemany, then VACUUM ANALYZE."""
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
        company = int(context['company'])
        users, teams = add_extra_reps(company)
        sources = [s.id for s in Source.search([])]
        stages = Stage.search([], order=[('sequence', 'ASC')])
        stage_weights = [STAGE_SHARES.get(s.sequence, 5) for s in stages]
        currency = Deal.search([], limit=1)[0].currency.id
        copy = Copy(transaction)
        now = utcnow()
        today = now.date()

        def owner_of(n):
            owner = OWNERS[n % len(OWNERS)]
            if isinstance(owner, tuple):
                return None, teams[owner[1]]
            return users[owner], teams[TEAM_OF[owner]]

        start = time.perf_counter()
        first_lead = copy.max_id('crm_lead') + 1
        leads = []
        for j in range(args.leads):
            owner, team = owner_of(j)
            first, last = rng.choice(FIRST), rng.choice(LAST)
            score = rng.randint(0, 100)
            created = now - dt.timedelta(minutes=rng.randrange(
                    2 * 365 * 24 * 60))
            leads.append((first_lead + j, f'{first} {last}',
                    f'{last} Traders' if rng.random() < 0.2 else None,
                    '+91%d%09d' % (rng.choice([9, 8, 7]), j),
                    rng.choice(CITIES), rng.choice(sources), company, owner,
                    team, rng.choice(['new', 'contacted', 'qualified',
                            'unqualified', 'converted']), score,
                    'hot' if score >= 80 else 'warm' if score >= 40
                    else 'cold', True, False, user_id, created))
            if len(leads) == 50_000 or j == args.leads - 1:
                copy.rows('crm_lead', ['id', 'name', 'company_name',
                        'phone', 'city', 'source', 'company', 'owner', 'team',
                        'status', 'score', 'band', 'active',
                        'not_on_whatsapp', 'create_uid', 'create_date'],
                    leads)
                leads = []
        first_deal = copy.max_id('crm_deal') + 1
        recent = set(rng.sample(range(args.deals), CHANGED_RECENTLY))
        deals, tasks = [], []
        for j in range(args.deals):
            deal_id = first_deal + j
            owner, team = owner_of(rng.randrange(len(OWNERS)))
            stage = rng.choices(stages, stage_weights)[0]
            created = now - dt.timedelta(minutes=rng.randrange(
                    2 * 365 * 24 * 60))
            entered = created + (now - created) * rng.random()
            changed = (now - dt.timedelta(seconds=rng.randrange(1, 50))
                if j in recent else entered)
            deals.append((deal_id, f'{rng.choice(FIRST)} '
                    f'{rng.choice(LAST)}: {rng.choice(["2 BHK", "3 BHK", "Shop", "Loan"])}',
                    first_lead + rng.randrange(args.leads), currency,
                    Decimal(rng.choice(PRICES)), stage.id, company, owner,
                    team, entered, today + dt.timedelta(
                        days=rng.randint(-60, 240))
                    if stage.kind == 'open' or rng.random() < 0.3 else None,
                    -created.replace(tzinfo=dt.timezone.utc).timestamp(),
                    user_id, created, changed))
            if rng.random() < 0.33:
                tasks.append((rng.choice(TASKS), 'call', deal_id,
                        owner or users['rep'], now + dt.timedelta(
                            hours=rng.randint(-72, 240)),
                        'open' if rng.random() < 0.8 else 'done',
                        user_id, created))
            if len(deals) == 50_000 or j == args.deals - 1:
                copy.rows('crm_deal', ['id', 'title', 'lead', 'currency',
                        'value', 'stage', 'company', 'owner', 'team',
                        'stage_entered_at', 'expected_close',
                        'board_position', 'create_uid', 'create_date',
                        'write_date'], deals)
                copy.rows('crm_task', ['name', 'kind', 'deal', 'owner',
                        'due', 'state', 'create_uid', 'create_date'], tasks)
                deals, tasks = [], []
        for table in ['crm_lead', 'crm_deal']:
            copy.reset_sequence(table)
        timings['build'] = time.perf_counter() - start
        transaction.commit()
        version = copy.version()
    # VACUUM runs outside a transaction: the index-only scans of the
    # totals need the visibility map it writes (autovacuum's, in use).
    start = time.perf_counter()
    vacuum(site, database)
    timings['analyze'] = time.perf_counter() - start
    with Transaction().start(database, 0, readonly=True) as transaction:
        copy = Copy(transaction)
        totals = {table: copy.execute(f'SELECT COUNT(*) FROM "{table}"'
                ).fetchone()[0] for table in ['crm_lead', 'crm_deal',
                'crm_task']}
    return {'seconds': timings, 'totals': totals, 'version': version,
        'cursor': (now - dt.timedelta(seconds=60)).isoformat() + 'Z',
        'first_stage': stages[0].id}


def vacuum(site, database):
    if site.is_sqlite:
        import sqlite3
        connection = sqlite3.connect(site.path / f'{database}.sqlite')
        connection.execute('ANALYZE')
        connection.close()
        return
    import psycopg
    with psycopg.connect(site.database_uri.rstrip('/') + '/' + database,
            autocommit=True) as connection:
        for table in ['crm_lead', 'crm_deal', 'crm_task']:
            connection.execute(f'VACUUM ANALYZE "{table}"')


# ---- the calls, as routes.py makes them ----

def calls():
    "name: (what it is, the call on crm.board)."
    from kraya_crm.board import Filters
    return {
        'deals': ("first paint: every stage's totals and first 20 cards",
            lambda Board, a: Board.board('deals', Filters())),
        'more': ("a column's next 20 cards",
            lambda Board, a: Board.more('deals', str(a.first_stage),
                Filters(), offset=PAGE)),
        'forecast': ("forecast's first paint (open deals by month)",
            lambda Board, a: Board.board('forecast', Filters())),
        'hot': ("first paint, deals of hot leads only",
            lambda Board, a: Board.board('deals', Filters(band='hot'))),
        'leads': ("leads board's first paint (every lead by status)",
            lambda Board, a: Board.board('leads', Filters())),
        'events': ("live poll, `changed_since` a minute ago",
            lambda Board, a: Board.changed_since('deals', Filters(),
                a.cursor)),
        }


def first_paint_ids(result):
    "The cards' ids of a first paint, column by column."
    if isinstance(result, tuple):
        return sorted(c['id'] for c in (result[1] or {}).get('cards', []))
    if 'columns' in result:
        return [[c['id'] for c in column['cards']]
            for column in result['columns']]
    return [c['id'] for c in result['cards']]


def totals_of(result):
    if isinstance(result, dict) and 'columns' in result:
        return [(c['id'], c['count'], c['total'])
            for c in result['columns']]
    return None


def time_ours(site, database, user_id, context, args):
    result = {}
    for login in ROLES:
        for name, (_, call) in calls().items():
            seconds, times = best_of(args.runs, lambda: as_web(database,
                    login, lambda pool: call(pool.get('crm.board'), args)))

            def traced(pool):
                with Queries() as queries:
                    answer = call(pool.get('crm.board'), args)
                return (answer, queries.queries,
                    plans(queries.queries, BOARD_TABLES))
            answer, queries, explained = as_web(database, login, traced)
            result[f'{login}:{name}'] = {'seconds': seconds, 'runs': times,
                'ids': first_paint_ids(answer), 'totals': totals_of(answer),
                'statements': len(queries), 'plans': explained}
    return result


def time_peer(site, database, user_id, context, args):
    """The desk's deal list, stage by stage (sao's search_count and
    search_read of the list view's fields), and once its graph of value
    by stage (every deal read)."""
    from trytond.transaction import check_access

    def list_view(pool):
        Deal = pool.get('crm.deal')
        Stage = pool.get('crm.stage')
        columns = []
        with check_access():
            for stage in Stage.search([], order=[('sequence', 'ASC')]):
                domain = [('stage', '=', stage.id)]
                count = Deal.search_count(domain)
                rows = Deal.search_read(domain, 0, PAGE,
                    [('board_position', 'ASC'), ('id', 'DESC')],
                    LIST_FIELDS)
                columns.append((count, [r['id'] for r in rows]))
        return columns

    def graph(pool):
        Deal = pool.get('crm.deal')
        with check_access():
            rows = Deal.search_read([], fields_names=['stage',
                    'stage.rec_name', 'value'])
        totals = {}
        for row in rows:
            totals[row['stage']] = totals.get(row['stage'], 0) + row['value']
        return totals
    result = {}
    for login in ROLES:
        seconds, times = best_of(args.runs,
            lambda: as_web(database, login, list_view))
        columns = as_web(database, login, list_view)
        result[f'{login}:deals'] = {'seconds': seconds, 'runs': times,
            'ids': [ids for _, ids in columns],
            'counts': [count for count, _ in columns]}
        if args.desk_graph:
            start = time.perf_counter()
            as_web(database, login, graph)
            result[f'{login}:graph'] = {
                'seconds': time.perf_counter() - start}
    return result


def raw_queries(postgresql, user, teams, company):
    "The first paint's two SELECTs, the rule's condition written by hand."
    mark = '%s' if postgresql else '?'
    if user['manager']:
        rule, params = f'd.company = {mark}', [company]
    else:
        teams_marks = ', '.join([mark] * len(teams)) or 'NULL'
        rule = (f'd.company = {mark} AND (d.owner = {mark} OR '
            f'(d.owner IS NULL AND d.team IN ({teams_marks})))')
        params = [company, user['id'], *teams]
    totals = ('SELECT d.stage, COUNT(*), SUM(d.value) FROM crm_deal d '
        f'WHERE {rule} GROUP BY d.stage')
    cards = ('SELECT id, title, value, owner_name, stage FROM ('
        'SELECT d.id, d.title, d.value, u.name AS owner_name, d.stage, '
        'ROW_NUMBER() OVER (PARTITION BY d.stage '
        'ORDER BY d.board_position, d.id DESC) AS n '
        'FROM crm_deal d LEFT JOIN res_user u ON u.id = d.owner '
        f'WHERE {rule}) AS c WHERE n <= {PAGE} ORDER BY stage, n')
    return (totals, params), (cards, params)


def time_raw(site, database, user_id, context, args):
    users = role_users(database)
    connection, postgresql = raw_connection(site, database)
    result = {}
    try:
        for login in ROLES:
            user, teams = users[login]
            queries = raw_queries(postgresql, user, teams,
                int(context['company']))

            def run():
                rows = []
                for sql, params in queries:
                    cursor = connection.cursor()
                    cursor.execute(sql, params)
                    rows.append(cursor.fetchall())
                return rows
            seconds, times = best_of(args.runs, run)
            totals, cards = run()
            explained = []
            for sql, params in queries:
                cursor = connection.cursor()
                if postgresql:
                    cursor.execute('EXPLAIN (ANALYZE, BUFFERS) ' + sql,
                        params)
                    explained.append([r[0] for r in cursor.fetchall()])
                else:
                    cursor.execute('EXPLAIN QUERY PLAN ' + sql, params)
                    explained.append([r[-1] for r in cursor.fetchall()])
            by_stage = {}
            for row in cards:
                by_stage.setdefault(row[4], []).append(row[0])
            result[f'{login}:deals'] = {'seconds': seconds, 'runs': times,
                'counts': {str(stage): count for stage, count, _ in totals},
                'ids': by_stage, 'plans': explained}
    finally:
        connection.close()
    return result


# ---- the driver ----

def bench_database(name, db_uri, leads, deals, args):
    sys.path.insert(0, str(ROOT / 'apps'))
    from kraya_site import sites
    root = Path(tempfile.mkdtemp(prefix='kraya-bench-'))
    site_name = f'bench_board_{name.lower()}_{os.getpid()}'
    print(f'[{name}] creating a demo site...', flush=True)
    started = time.perf_counter()
    site = sites.new_site(site_name,
        db_uri=f'{db_uri}/{site_name}' if db_uri else None, demo=True,
        root=root)
    try:
        print(f'[{name}] {leads:,} leads, {deals:,} deals and their tasks '
            'in bulk...', flush=True)
        setup = run_worker('setup', site, script=__file__, leads=leads,
            deals=deals)
        print(f'[{name}] built in {setup["seconds"]["build"]:.1f} s, '
            f'analyzed in {setup["seconds"]["analyze"]:.1f} s: '
            + ', '.join(f'{k} {v:,}' for k, v in setup['totals'].items()),
            flush=True)
        options = {'cursor': setup['cursor'],
            'first_stage': setup['first_stage'], 'runs': args.runs,
            'desk_graph': args.desk_graph}
        print(f'[{name}] ours (crm.board), as {" and ".join(ROLES)}...',
            flush=True)
        ours = run_worker('ours', site, script=__file__, **options)
        print(f'[{name}] peer (the desk\'s list and graph)...', flush=True)
        peer = run_worker('peer', site, script=__file__, **options)
        print(f'[{name}] raw-SQL bound...', flush=True)
        raw = run_worker('raw', site, script=__file__, **options)
    finally:
        site.drop()
        shutil.rmtree(root, ignore_errors=True)
    print(f'[{name}] done in {time.perf_counter() - started:.0f} s',
        flush=True)
    return {'setup': setup, 'ours': ours, 'peer': peer, 'raw': raw}


def same_first_paint(ours, peer, raw):
    "Whether the three read the same cards and counts, stage by stage."
    our_ids = ours['ids']
    counts = [count for _, count, _ in ours['totals']]
    raw_ids = [raw['ids'].get(column_id, []) for column_id, _, _
        in ours['totals']]
    raw_counts = [raw['counts'].get(column_id, 0) for column_id, _, _
        in ours['totals']]
    return (our_ids == peer['ids'] == raw_ids
        and counts == peer['counts'] == raw_counts)


def report(results, args):
    lines = []
    what = {name: text for name, (text, _) in calls().items()}
    for name, r in results.items():
        ours, peer, raw = r['ours'], r['peer'], r['raw']
        totals = r['setup']['totals']
        lines += [f"### {name}", "",
            f"{totals['crm_lead']:,} leads, {totals['crm_deal']:,} deals, "
            f"{totals['crm_task']:,} tasks (demo's included).", "",
            "| call | as | ours ms | peer ms | raw SQL ms | ours vs peer "
            "| statements |",
            "|---|---|---:|---:|---:|---:|---:|"]
        for call in what:
            for login in ROLES:
                o = ours[f'{login}:{call}']
                mark = '' if o['seconds'] * 1000 < TARGET_MS else ' ⚠'
                if call == 'deals':
                    p, w = peer[f'{login}:deals'], raw[f'{login}:deals']
                    lines.append(f"| {what[call]} | {login} | "
                        f"**{o['seconds'] * 1000:.0f}**{mark} | "
                        f"{p['seconds'] * 1000:.0f} | "
                        f"{w['seconds'] * 1000:.1f} | "
                        f"{p['seconds'] / o['seconds']:.1f}x | "
                        f"{o['statements']} |")
                else:
                    lines.append(f"| {what[call]} | {login} | "
                        f"**{o['seconds'] * 1000:.0f}**{mark} | | | | "
                        f"{o['statements']} |")
            if call == 'deals' and 'manager:graph' in peer:
                lines.append("| the desk's graph of value by stage (every "
                    "deal read, once) | manager / rep | | "
                    f"{peer['manager:graph']['seconds'] * 1000:.0f} / "
                    f"{peer['rep:graph']['seconds'] * 1000:.0f} | | | |")
        sameness = {login: same_first_paint(ours[f'{login}:deals'],
                peer[f'{login}:deals'], raw[f'{login}:deals'])
            for login in ROLES}
        lines += ["", f"Best of {args.runs} after a warm-up, each call in "
            "its own transaction of the user with their preferences as "
            "context, as routes.py runs it. Peer: the desk's deal list per "
            "stage (search_count and search_read of the list view's fields, "
            "20 rows, access checked), which has no total of a whole "
            "column; raw: the totals' and the first cards' SELECTs with "
            "the rule by hand on a connection of its own. Same cards and "
            "counts in the three, stage by stage: "
            + ', '.join(f"{login} {'yes' if same else 'NO'}"
                for login, same in sameness.items()) + ".", ""]
        lines += ["Plans of the SELECTs on crm_deal, crm_lead and crm_task "
            "that our first paint ran, as the rep:", ""]
        whole = []
        for call in what:
            for login in ROLES:
                for entry in ours[f'{login}:{call}']['plans']:
                    whole += [f'{login}:{call}: {line}' for line in
                        table_scans(entry, BOARD_TABLE_NAMES)]
        for entry in ours['rep:deals']['plans']:
            summary, total = plan_summary(entry['plan'])
            lines.append('- ' + (' / '.join(f'`{s}`' for s in summary)
                    or '(no scan)') + (f' — {total}' if total else ''))
        lines += ["", ("Scans of crm_deal, crm_lead or crm_task by their "
                "table rather than an index in our calls' plans (both roles, "
                "every call): " + ('none.' if not whole else '; '.join(
                        f'`{w}`' for w in whole))), ""]
        lines += ["<details><summary>Full plans (rep): the first paint's "
            "SELECTs and the raw bound's</summary>", ""]
        for entry in ours['rep:deals']['plans']:
            lines += ['```', entry['sql'][:2000], '', *entry['plan'], '```',
                '']
        lines += ['Raw bound:']
        for plan in raw['rep:deals']['plans']:
            lines += ['```', *plan, '```', '']
        lines += ['</details>', '']
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--leads', type=int, default=1_000_000)
    parser.add_argument('--deals', type=int, default=200_000)
    parser.add_argument('--sqlite-leads', type=int, default=100_000)
    parser.add_argument('--sqlite-deals', type=int, default=20_000)
    parser.add_argument('--runs', type=int, default=5)
    parser.add_argument('--no-sqlite', action='store_true')
    parser.add_argument('--no-postgresql', action='store_true')
    parser.add_argument('--no-results', action='store_true',
        help="do not append to bench/RESULTS.md")
    parser.add_argument('--desk-graph', action='store_true',
        help="also time the desk's graph of value by stage, which reads "
        "every deal (minutes at 200,000)")
    parser.add_argument('--worker', choices=['setup', 'ours', 'peer', 'raw'],
        help=argparse.SUPPRESS)
    parser.add_argument('--site', help=argparse.SUPPRESS)
    parser.add_argument('--site-root', help=argparse.SUPPRESS)
    parser.add_argument('--cursor', help=argparse.SUPPRESS)
    parser.add_argument('--first-stage', type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    databases = {}
    if not args.no_sqlite:
        databases['SQLite'] = (None, args.sqlite_leads, args.sqlite_deals)
    server = None if args.no_postgresql else postgresql_server()
    if server:
        databases['PostgreSQL'] = (server, args.leads, args.deals)
    if not databases:
        parser.error('no database to run on')
    results = {}
    for name, (db_uri, leads, deals) in databases.items():
        results[name] = bench_database(name, db_uri, leads, deals, args)
    for name, r in results.items():
        for key, entry in r['ours'].items():
            for plan in entry.get('plans', []):
                print(f'[{name}] {key}: {plan["sql"][:600]}')
                print('    ' + '\n    '.join(plan['plan']))
    versions = ', '.join(f"{r['setup']['version']}: "
        f"{r['setup']['totals']['crm_lead']:,} leads, "
        f"{r['setup']['totals']['crm_deal']:,} deals"
        for r in results.values())
    text = (f"Deals across the demo's stages (New 20%, Contacted 15%, "
        f"Qualified 12%, Proposal Sent 10%, Negotiation 6%, Won 17%, Lost "
        f"20%), owned by the demo's reps, its agent and manager and three "
        f"more reps in a second team, a quarter unassigned (a rep sees "
        f"their own and their team's unassigned ones), a third with a task "
        f"(80% open); leads with a score and band. Built by COPY / "
        f"executemany on a fresh demo site per database ({versions}), then "
        f"VACUUM ANALYZE. Target: the first paint under {TARGET_MS} ms at "
        f"the server.\n\n" + report(results, args))
    print()
    print(f"Machine: {describe()}\n\n{text}")
    if not args.no_results:
        record_results('Pipeline board', text)
        print('Appended to bench/RESULTS.md')


if __name__ == '__main__':
    sys.exit(main())
