"""WhatsApp webhook throughput: signed deliveries posted over 127.0.0.1 to
a real site, served by trytond (Werkzeug, threaded, what `./crm start`
runs) and by gunicorn (`gunicorn -w 4 trytond.application:app`, what
docs/deploy.md recommends) when gunicorn is importable.

Ours:   POST /<db>/crm/whatsapp/webhook, one new inbound message each:
        signature check, parse, stored in the inbox. The worker then writes
        leads, timeline rows and consents in batches (timed separately).
Peer:   Tryton's generic JSON-RPC, model.crm.message.create of the same
        message for a known lead (the way any client pushes a row in).
Bound:  raw SQL INSERT of the same rows into crm_message, one commit each.

The load generator is one asyncio process of plain HTTP/1.1 connections
(kept alive when the server allows it, else one per request), so that it
takes little of the 2 cores from the server; its CPU time is reported.

Target: at least 300 requests/s with p99 under 100 ms, no message lost.

    ./crm bench webhook [--requests 3000] [--clients 8] [--no-postgresql]
        [--no-gunicorn] [--no-results]

PostgreSQL is measured when KRAYA_BENCH_POSTGRESQL (e.g.
postgresql://127.0.0.1:5432) is set or a server answers on 127.0.0.1:5432.
"""
import argparse
import asyncio
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.machine import (  # noqa: E402
    postgresql_server, record_results)
from kraya_site import sites  # noqa: E402
from tests.conftest import eventually, free_port, wait_for  # noqa: E402
from tests.rpc import RpcSession  # noqa: E402
from tests.whatsapp_payloads import WebhookClient, inbound  # noqa: E402

GUNICORN_WORKERS = 4


class Running:
    "What the test helpers expect of a running site."

    def __init__(self, site):
        self.site = site
        self.url = site.url.rstrip('/')
        self.database = site.database


# ---- the load generator ----

def http_request(path, body, headers):
    "The bytes of one HTTP/1.1 POST to 127.0.0.1."
    lines = [f'POST {path} HTTP/1.1', 'Host: 127.0.0.1',
        f'Content-Length: {len(body)}', *(f'{k}: {v}'
            for k, v in headers.items())]
    return ('\r\n'.join(lines) + '\r\n\r\n').encode() + body


async def read_response(reader):
    "(status, whether the server closes the connection) of one response."
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("connection closed before the answer")
    status = int(status_line.split()[1])
    length, chunked, close = 0, False, status_line.startswith(b'HTTP/1.0')
    while (line := await reader.readline()) not in {b'\r\n', b''}:
        name, _, value = line.decode('latin-1').partition(':')
        name, value = name.strip().lower(), value.strip().lower()
        if name == 'content-length':
            length = int(value)
        elif name == 'transfer-encoding':
            chunked = 'chunked' in value
        elif name == 'connection':
            close = value == 'close'
    if chunked:
        while size := int((await reader.readline()).split(b';')[0], 16):
            await reader.readexactly(size + 2)
        await reader.readline()
    elif length:
        await reader.readexactly(length)
    return status, close


async def _load(port, requests, clients):
    pending = iter(requests)
    latencies, statuses = [], {}

    async def client():
        reader = writer = None
        for raw in pending:
            started = time.perf_counter()
            for attempt in range(2):
                if writer is None:
                    reader, writer = await asyncio.open_connection(
                        '127.0.0.1', port)
                writer.write(raw)
                try:
                    status, close = await read_response(reader)
                    break
                except (ConnectionError, asyncio.IncompleteReadError):
                    # A kept-alive connection the server closed meanwhile.
                    writer.close()
                    writer = None
                    if attempt:
                        status, close = 'closed', True
            latencies.append((time.perf_counter() - started) * 1000)
            statuses[status] = statuses.get(status, 0) + 1
            if close and writer is not None:
                writer.close()
                writer = None
        if writer is not None:
            writer.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    return latencies, statuses


def timed(port, requests, clients):
    """Post the requests from `clients` connections; requests/s, p50, p99,
    errors (answers other than 200), the statuses and the client's CPU."""
    cpu = time.process_time()
    started = time.perf_counter()
    latencies, statuses = asyncio.run(_load(port, requests, clients))
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu
    latencies.sort()
    return {'rate': len(requests) / elapsed,
        'p50': latencies[len(latencies) // 2],
        'p99': latencies[int(len(latencies) * 0.99) - 1],
        'errors': len(requests) - statuses.get(200, 0),
        'statuses': statuses, 'client_cpu': cpu / elapsed}


# ---- the servers ----

def start_trytond(site, log):
    return subprocess.Popen([sites.bin_path('trytond'), '-c',
            str(site.config_file), '-d', site.database],
        env=site.environ(), stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True)


def start_gunicorn(site, log, port):
    "gunicorn -w 4 trytond.application:app, as docs/deploy.md says."
    env = dict(site.environ(), TRYTOND_CONFIG=str(site.config_file),
        TRYTOND_DATABASE_NAMES=site.database)
    return subprocess.Popen([sys.executable, '-m', 'gunicorn',
            '-w', str(GUNICORN_WORKERS), '-b', f'127.0.0.1:{port}',
            '--log-level', 'warning', 'trytond.application:app'],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def stop(process):
    "Stop a process started in a session of its own, with its children."
    if process and process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def gunicorn_available():
    return importlib.util.find_spec('gunicorn') is not None


def webhook_requests(webhook, database, first, count):
    "Signed deliveries of a new number each, as raw requests."
    path = f'/{database}/crm/whatsapp/webhook'
    requests = []
    for i in range(first, first + count):
        body = json.dumps(inbound(f'9198{i:08d}')).encode()
        requests.append(http_request(path, body, {
                    'Content-Type': 'application/json',
                    'X-Hub-Signature-256': webhook.sign(body)}))
    return requests


def rpc_requests(session, database, lead, count):
    "JSON-RPC crm.message.create calls, each of one message."
    path = f'/{database}/rpc/'
    requests = []
    for i in range(count):
        values = {'lead': lead, 'direction': 'inbound',
            'channel': 'whatsapp', 'status': 'received',
            'body': f"Hello {i}", 'provider_id': f'peer.{i}'}
        body = json.dumps({'id': i, 'method': 'model.crm.message.create',
                'params': [[values], session.context]}).encode()
        requests.append(http_request(path, body, {
                    'Content-Type': 'application/json',
                    'Cookie': session.cookie}))
    return requests


def warm_up(port, requests):
    "A few requests first: pools, caches and (gunicorn) every worker."
    timed(port, requests, 4)


def bench(db_uri, label, count, clients, with_gunicorn):
    root = Path(tempfile.mkdtemp(prefix='kraya-bench-'))
    name = f'kraya_bench_webhook_{os.getpid()}'
    port = free_port()
    site = sites.new_site(name, db_uri=f'{db_uri}/{name}' if db_uri else None,
        demo=True, root=root, listen=f'127.0.0.1:{port}')
    log = open(root / 'server.log', 'w')
    config = ['-c', str(site.config_file), '-d', site.database]
    process = worker = None
    servers = {}
    sent = accepted = 0
    try:
        running = Running(site)
        webhook = WebhookClient(running)
        process = start_trytond(site, log)
        wait_for(site.url, process)
        admin = RpcSession(running.url, site.database, 'admin', 'admin')

        def written():
            "Inbound WhatsApp messages (the peer's are not 'wamid.')."
            return admin.model('crm.message', 'search_count',
                [('direction', '=', 'inbound'),
                    ('provider_id', 'like', 'wamid.%')])
        before = written()
        warm = webhook_requests(webhook, site.database, 10 ** 7, 40)
        warm_up(port, warm)
        requests = webhook_requests(webhook, site.database, 0, count)
        print(f'[{label}] trytond: {count} deliveries...', flush=True)
        servers['trytond'] = timed(port, requests, clients)
        print(f'[{label}]   {servers["trytond"]}', flush=True)
        sent += len(warm) + count
        accepted += len(warm) + count - servers['trytond']['errors']

        lead, = admin.model('crm.lead', 'search', [], 0, 1, None)
        print(f'[{label}] peer: {count} JSON-RPC creates...', flush=True)
        peer = timed(port, rpc_requests(admin, site.database, lead, count),
            clients)
        print(f'[{label}]   {peer}', flush=True)
        stop(process)
        process = None

        if with_gunicorn:
            process = start_gunicorn(site, log, port)
            wait_for(site.url, process)
            warm = webhook_requests(webhook, site.database, 2 * 10 ** 7, 80)
            warm_up(port, warm)
            requests = webhook_requests(webhook, site.database, count, count)
            print(f'[{label}] gunicorn: {count} deliveries...', flush=True)
            servers[f'gunicorn -w {GUNICORN_WORKERS}'] = timed(
                port, requests, clients)
            print(f'[{label}]   {servers[f"gunicorn -w {GUNICORN_WORKERS}"]}',
                flush=True)
            sent += len(warm) + count
            accepted += (len(warm) + count
                - servers[f'gunicorn -w {GUNICORN_WORKERS}']['errors'])
            stop(process)
            process = start_trytond(site, log)
            wait_for(site.url, process)

        # Then the worker writes what was accepted, in batches.
        print(f'[{label}] the worker writes the deliveries...', flush=True)
        started = time.perf_counter()
        worker = subprocess.Popen(
            [sites.bin_path('python'), '-m', 'kraya_site.worker', *config],
            env=site.environ(), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
        # Meanwhile more deliveries come in, as they do in production.
        time.sleep(3)
        requests = webhook_requests(webhook, site.database, 2 * count, count)
        writing = 'trytond, the worker writing'
        print(f'[{label}] {writing}: {count} deliveries...', flush=True)
        servers[writing] = timed(port, requests, clients)
        print(f'[{label}]   {servers[writing]}', flush=True)
        sent += count
        accepted += count - servers[writing]['errors']
        stored = eventually(lambda: (lambda n: n if n >= accepted else 0)(
                written() - before), timeout=900, interval=0.5) or (
            written() - before)
        processing = stored / (time.perf_counter() - started)
        bound = raw_sql_bound(site, lead, count)
    finally:
        for running_process in [process, worker]:
            stop(running_process)
        log.close()
        site.drop()
        shutil.rmtree(root, ignore_errors=True)
    return report(label, count, clients, servers, peer, bound, sent,
        accepted, stored, processing)


def report(label, count, clients, servers, peer, bound, sent, accepted,
        stored, processing):
    ours = servers['trytond']
    lines = [
        f"### Webhook throughput, {label}: {count} deliveries per server, "
        f"{clients} keep-alive connections from one asyncio client on "
        "127.0.0.1",
        "",
        "| path | server | requests/s | p50 ms | p99 ms | errors | "
        "client CPU | vs ours |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
        *(row("ours: signed webhook, new lead each", server, figures, ours)
            for server, figures in servers.items()),
        row("peer: JSON-RPC crm.message.create", 'trytond', peer, ours),
        f"| bound: raw SQL insert + commit | | {bound:,.0f} | | | | | "
        f"{bound / ours['rate']:.1f}x |",
        "",
        ]
    lost = accepted - stored
    lines.append(
        "The worker starts after the trytond and gunicorn runs; the row "
        "\"the worker writing\" is posted while it writes what those "
        f"accepted. Messages written by the worker: {stored:,} of the "
        f"{accepted:,} deliveries answered 200 ({sent:,} sent, warm-up "
        f"included; {'none lost' if lost == 0 else f'{lost} LOST'}), "
        f"{processing:,.0f} messages/s including its start-up (a new lead, "
        "timeline row and consent each). Client CPU: the load generator's "
        "share of one core while it ran.")
    return '\n'.join(lines)


def row(label, server, figures, ours):
    return (f"| {label} | {server} | {figures['rate']:,.0f} | "
        f"{figures['p50']:.1f} | {figures['p99']:.1f} | {figures['errors']} "
        f"| {figures['client_cpu']:.0%} | "
        f"{figures['rate'] / ours['rate']:.2f}x |")


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
        from kraya_site.sites import _split_db_uri
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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--requests', type=int, default=int(
            os.environ.get('KRAYA_BENCH_WEBHOOK_REQUESTS', 3000)))
    parser.add_argument('--clients', type=int, default=int(
            os.environ.get('KRAYA_BENCH_WEBHOOK_CLIENTS', 8)))
    parser.add_argument('--no-postgresql', action='store_true')
    parser.add_argument('--no-sqlite', action='store_true')
    parser.add_argument('--no-gunicorn', action='store_true')
    parser.add_argument('--no-results', action='store_true',
        help="do not append to bench/RESULTS.md")
    args = parser.parse_args(argv)
    with_gunicorn = not args.no_gunicorn and gunicorn_available()
    databases = {} if args.no_sqlite else {'SQLite': None}
    server = None if args.no_postgresql else postgresql_server()
    if server:
        databases['PostgreSQL'] = server
    results = [bench(db_uri, label, args.requests, args.clients,
            with_gunicorn) for label, db_uri in databases.items()]
    if not with_gunicorn:
        results.append("gunicorn is not installed: only trytond's own "
            "server was measured.")
    text = '\n\n'.join(results)
    print(text)
    if not args.no_results:
        record_results('WhatsApp webhook', text)


if __name__ == '__main__':
    sys.exit(main())
