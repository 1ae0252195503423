"""WhatsApp webhook throughput: signed deliveries posted over 127.0.0.1 by
a pool of client threads to a real site served by trytond.

Ours:   POST /<db>/crm/whatsapp/webhook, one new inbound message each:
        signature check, parse, stored in the inbox. The worker then writes
        leads, timeline rows and consents in batches (timed separately).
Peer:   Tryton's generic JSON-RPC, model.crm.message.create of the same
        message for a known lead (the way any client pushes a row in).
Bound:  raw SQL INSERT of the same rows into crm_message, one commit each.

Target: at least 300 requests/s with p99 under 100 ms, no message lost.

    ./crm bench webhook            (SQLite; KRAYA_BENCH_POSTGRESQL=... adds PostgreSQL)
"""
import concurrent.futures
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.machine import record_results  # noqa: E402
from kraya_crm import sites  # noqa: E402
from tests.conftest import eventually, free_port, wait_for  # noqa: E402
from tests.rpc import RpcSession  # noqa: E402
from tests.whatsapp_payloads import WebhookClient, inbound  # noqa: E402

REQUESTS = int(os.environ.get('KRAYA_BENCH_WEBHOOK_REQUESTS', 3000))
CLIENTS = int(os.environ.get('KRAYA_BENCH_WEBHOOK_CLIENTS', 8))


class Running:
    "What the test helpers expect of a running site."

    def __init__(self, site):
        self.site = site
        self.url = site.url.rstrip('/')
        self.database = site.database


def timed(calls, clients):
    "Run the calls on a thread pool; (requests/s, p50 ms, p99 ms, errors)."
    latencies, errors = [], 0

    def one(call):
        started = time.perf_counter()
        ok = call()
        return time.perf_counter() - started, ok

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        for latency, ok in pool.map(one, calls):
            latencies.append(latency * 1000)
            errors += not ok
    elapsed = time.perf_counter() - started
    latencies.sort()
    return (len(calls) / elapsed, statistics.median(latencies),
        latencies[int(len(latencies) * 0.99) - 1], errors)


def post_call(webhook, body):
    def call():
        return webhook.post(body=body)[0] == 200
    return call


def rpc_call(session, values):
    def call():
        session.model('crm.message', 'create', [values])
        return True
    return call


def bench(db_uri, label):
    root = Path(tempfile.mkdtemp(prefix='kraya-bench-'))
    name = f'kraya_bench_webhook_{os.getpid()}'
    site = sites.new_site(name, db_uri=f'{db_uri}/{name}' if db_uri else None,
        demo=True, root=root, listen=f'127.0.0.1:{free_port()}')
    log = open(root / 'trytond.log', 'w')
    config = ['-c', str(site.config_file), '-d', site.database]
    process = subprocess.Popen([sites.bin_path('trytond'), *config],
        env=site.environ(), stdout=log, stderr=subprocess.STDOUT)
    worker = None
    try:
        wait_for(site.url, process)
        running = Running(site)
        webhook = WebhookClient(running)
        admin = RpcSession(running.url, site.database, 'admin', 'admin')
        bodies = [json.dumps(inbound(f'9198{i:08d}')).encode()
            for i in range(REQUESTS)]
        ours = timed([post_call(webhook, b) for b in bodies], CLIENTS)
        # Then the worker writes what was accepted, in batches.
        started = time.perf_counter()
        worker = subprocess.Popen(
            [sites.bin_path('python'), '-m', 'kraya_crm.worker', *config],
            env=site.environ(), stdout=log, stderr=subprocess.STDOUT)
        stored = eventually(lambda: (lambda n: n if n >= REQUESTS else 0)(
                admin.model('crm.message', 'search_count',
                    [('direction', '=', 'inbound')])), timeout=600,
            interval=0.5) or admin.model('crm.message', 'search_count',
            [('direction', '=', 'inbound')])
        processing = stored / (time.perf_counter() - started)

        lead, = admin.model('crm.lead', 'search', [], 0, 1, None)
        rows = [{'lead': lead, 'direction': 'inbound', 'channel': 'whatsapp',
                'status': 'received', 'body': f"Hello {i}",
                'provider_id': f'peer.{i}'} for i in range(REQUESTS)]
        sessions = [RpcSession(running.url, site.database, 'admin', 'admin')
            for _ in range(CLIENTS)]
        peer = timed([rpc_call(sessions[i % CLIENTS], r)
                for i, r in enumerate(rows)], CLIENTS)
        bound = raw_sql_bound(site, lead, REQUESTS)
    finally:
        for running_process in filter(None, [process, worker]):
            running_process.terminate()
            running_process.wait(timeout=10)
        log.close()
        site.drop()
    lost = REQUESTS - stored
    lines = [
        f"### Webhook throughput, {label}: {REQUESTS} deliveries, "
        f"{CLIENTS} client threads on 127.0.0.1",
        "",
        "| path | requests/s | p50 ms | p99 ms | errors | vs ours |",
        "|---|---|---|---|---|---|",
        row("ours: signed webhook, new lead each", ours, ours),
        row("peer: JSON-RPC crm.message.create", peer, ours),
        f"| bound: raw SQL insert + commit | {bound:,.0f} | | | | "
        f"{bound / ours[0]:.1f}x |",
        "",
        f"Messages written by the worker afterwards: {stored} of {REQUESTS} "
        f"({'none lost' if lost == 0 else f'{lost} LOST'}), "
        f"{processing:,.0f} messages/s including its start-up (a new lead, "
        "timeline row and consent each).",
        ]
    return '\n'.join(lines)


def row(label, figures, ours):
    rate, p50, p99, errors = figures
    return (f"| {label} | {rate:,.0f} | {p50:.1f} | {p99:.1f} | {errors} | "
        f"{rate / ours[0]:.2f}x |")


def raw_sql_bound(site, lead, count):
    "INSERT the same rows one transaction each, straight into the table."
    now = time.strftime('%Y-%m-%d %H:%M:%S')
    columns = ('lead, direction, channel, status, body, provider_id, at, '
        'create_date, create_uid')
    rows = [(lead, 'inbound', 'whatsapp', 'received', f"Hello {i}",
            f'bound.{i}', now, now, 0) for i in range(count)]
    if site.is_sqlite:
        import sqlite3
        conn = sqlite3.connect(site.path / f'{site.database}.sqlite')
        sql = f'INSERT INTO crm_message ({columns}) VALUES ({", ".join("?" * 9)})'
    else:
        import psycopg
        from kraya_crm.sites import _split_db_uri
        server, _ = _split_db_uri(site.database_uri)
        conn = psycopg.connect(server.rstrip('/') + '/' + site.database)
        sql = f'INSERT INTO crm_message ({columns}) VALUES ({", ".join(["%s"] * 9)})'
    started = time.perf_counter()
    for values in rows:
        conn.execute(sql, values)
        conn.commit()
    elapsed = time.perf_counter() - started
    conn.close()
    return count / elapsed


def main():
    results = [bench(None, 'SQLite')]
    pg = os.environ.get('KRAYA_BENCH_POSTGRESQL')
    if pg:
        results.append(bench(pg.rstrip('/'), 'PostgreSQL'))
    text = '\n\n'.join(results)
    print(text)
    record_results('WhatsApp webhook', text)


if __name__ == '__main__':
    main()
