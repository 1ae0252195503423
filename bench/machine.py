"""The machine and date a benchmark ran on, the PostgreSQL server it
also runs on, and bench/RESULTS.md."""
import datetime as dt
import os
import platform
import socket
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / 'RESULTS.md'


def describe():
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                cpu = line.split(':', 1)[1].strip()
                break
    except OSError:
        pass
    try:
        pages = os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')
        memory = f'{pages / 2 ** 30:.0f} GiB'
    except (ValueError, OSError):
        memory = '?'
    return f'{os.cpu_count()} cores, {cpu}, {memory} RAM, Python {platform.python_version()}'


def record_results(title, text):
    "Append a dated section to bench/RESULTS.md."
    stamp = dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')
    if not RESULTS.exists():
        RESULTS.write_text('# Benchmark results\n\nWritten by `./crm bench`; '
            'the newest runs are at the end.\n')
    with RESULTS.open('a') as results:
        results.write(f'\n## {title}: {stamp}\n\nMachine: {describe()}\n\n'
            f'{text}\n')


def postgresql_server():
    """The PostgreSQL server to run on too: KRAYA_BENCH_POSTGRESQL, else one
    answering on 127.0.0.1:5432, else None."""
    uri = os.environ.get('KRAYA_BENCH_POSTGRESQL')
    if uri:
        return uri.rstrip('/')
    try:
        socket.create_connection(('127.0.0.1', 5432), timeout=1).close()
    except OSError:
        return None
    return 'postgresql://127.0.0.1:5432'
