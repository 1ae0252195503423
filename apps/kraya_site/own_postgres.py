"""A PostgreSQL server of our own, in a temporary folder, on a free port of
127.0.0.1: for the fault-injection run (./crm chaos), which restarts the
database under the site. Restarting the machine's shared server would
break whatever else uses it; this one serves only us and is gone after.

    with OwnPostgres() as postgres:
        uri = postgres.uri            # postgresql://127.0.0.1:PORT
        postgres.restart()            # pg_ctl restart -m fast

initdb refuses to run as root: as root, the server runs as the `postgres`
user of the machine's PostgreSQL package (its folder is theirs)."""
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from .sites import SiteError


def postgres_bin(name):
    "A program of the newest PostgreSQL installed (Debian keeps them apart)."
    found = sorted(glob.glob(f'/usr/lib/postgresql/*/bin/{name}'),
        key=lambda path: int(Path(path).parts[-3]))
    if found:
        return found[-1]
    path = shutil.which(name)
    if not path:
        raise SiteError(f'{name} is needed: apt-get install postgresql')
    return path


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


class OwnPostgres:
    "initdb, start, restart and stop a server of our own (trust on 127.0.0.1)."

    def __init__(self, port=None):
        self.port = port or free_port()
        self.folder = Path(tempfile.mkdtemp(prefix='kraya-postgres-'))
        self.data = self.folder / 'data'
        self.log = self.folder / 'postgres.log'
        self.user = None
        if os.geteuid() == 0:
            self.user = pwd.getpwnam('postgres')
            os.chown(self.folder, self.user.pw_uid, self.user.pw_gid)
        self.restarts = 0

    @property
    def uri(self):
        return f'postgresql://postgres@127.0.0.1:{self.port}'

    def _run(self, name, *args, **kwargs):
        def as_postgres():
            os.setgid(self.user.pw_gid)
            os.setuid(self.user.pw_uid)
        return subprocess.run([postgres_bin(name), *args],
            preexec_fn=as_postgres if self.user else None, check=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            cwd=self.folder, **kwargs)

    def _pg_ctl(self, action, *args):
        try:
            self._run('pg_ctl', action, '-D', str(self.data), '-l',
                str(self.log), '-w', '-t', '60', *args)
        except subprocess.CalledProcessError as error:
            raise SiteError(f'pg_ctl {action} failed: '
                f'{error.stderr.decode(errors="replace")}\n'
                f'{self.log.read_text(errors="replace")[-2000:]}')

    def start(self):
        self._run('initdb', '-D', str(self.data), '-U', 'postgres',
            '--auth=trust', '-E', 'UTF8', '--locale=C.UTF-8')
        options = (f'-c listen_addresses=127.0.0.1 -c port={self.port} '
            f'-c unix_socket_directories={self.folder} -c max_connections=200 '
            # A test server: durability is not what it is here for.
            '-c fsync=off -c synchronous_commit=off -c full_page_writes=off')
        self._pg_ctl('start', '-o', options)
        self.options = options
        return self

    def restart(self):
        "Stop (fast: connections are cut) and start again, as a failover does."
        self._pg_ctl('restart', '-m', 'fast', '-o', self.options)
        self.restarts += 1

    def stop(self):
        if self.data.exists():
            try:
                self._pg_ctl('stop', '-m', 'immediate')
            except SiteError:
                pass
        shutil.rmtree(self.folder, ignore_errors=True)

    def wait_ready(self, timeout=60):
        import psycopg
        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg.connect(f'{self.uri}/postgres', connect_timeout=2
                    ).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()
