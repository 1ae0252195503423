"""./crm backup and ./crm restore: a site's database and its filestore in
one archive, taken while the site runs.

    NAME-YYYYmmdd-HHMMSS.kraya-backup.tar.gz
        manifest.json     the site, its database, the backend, the code
        trytond.conf      the site's settings (with its secrets: keep the
                          archive as safe as the database itself)
        database.sqlite   SQLite's online backup API: a consistent copy
                          while the web process and the worker write
        database.dump     or PostgreSQL's pg_dump -Fc: one snapshot
        filestore/        the attachments (Tryton's [database] path/<db>)

The database is copied first, then the filestore: Tryton writes a file
before the transaction that refers to it commits and never changes it
after (files are named by their hash), so every file the copy refers to
is in the archive."""
import datetime as dt
import json
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
from pathlib import Path

from . import sites
from .own_postgres import postgres_bin
from .sites import Site, SiteError

SUFFIX = '.kraya-backup.tar.gz'
FORMAT = 1


def filestore(site):
    "Where Tryton keeps the site's files: [database] path/<database>."
    return site.path / site.database


def backup(site, out=None):
    """Write the site's archive into the folder `out` (default backups/ of
    the checkout) or to the file `out`; its path."""
    if not site.exists() or not site.database_exists():
        raise SiteError(f'no site "{site.name}" with a database to back up')
    taken_at = dt.datetime.now(dt.timezone.utc)
    out = Path(out) if out else sites.ROOT / 'backups'
    if out.suffix != '.gz':
        out.mkdir(parents=True, exist_ok=True)
        out = out / f'{site.name}-{taken_at:%Y%m%d-%H%M%S}{SUFFIX}'
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        tmp = Path(tmp)
        if site.is_sqlite:
            database_file = tmp / 'database.sqlite'
            _sqlite_copy(site.path / f'{site.database}.sqlite', database_file)
        else:
            database_file = tmp / 'database.dump'
            _run([postgres_bin('pg_dump'), '--format=custom',
                    '--no-owner', '--file', str(database_file),
                    '--dbname', _database_uri(site)])
        manifest = {
            'format': FORMAT,
            'site': site.name,
            'database': site.database,
            'backend': 'sqlite' if site.is_sqlite else 'postgresql',
            'taken_at': taken_at.isoformat(),
            'module_fingerprint': _fingerprint(site),
            'demo': (site.path / '.demo').exists(),
            }
        partial = out.with_name(out.name + '.part')
        with tarfile.open(partial, 'w:gz') as archive:
            _add_bytes(archive, 'manifest.json',
                json.dumps(manifest, indent=2).encode())
            archive.add(site.config_file, 'trytond.conf')
            archive.add(database_file, database_file.name)
            if filestore(site).is_dir():
                archive.add(filestore(site), 'filestore')
        # Whole or not at all: a cut backup never looks like a backup.
        partial.rename(out)
    return out


def restore(archive_path, name=None, db_uri=None, listen=None, root=None):
    """Make the site of an archive: under its own name or `name`, on the
    archive's PostgreSQL server or `db_uri` (a PostgreSQL backup only);
    the new Site."""
    archive_path = Path(archive_path)
    if not archive_path.is_file():
        raise SiteError(f'no backup file {archive_path}')
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        try:
            with tarfile.open(archive_path, 'r:gz') as archive:
                archive.extractall(tmp, filter='data')
            manifest = json.loads((tmp / 'manifest.json').read_text())
        except (OSError, ValueError, tarfile.TarError):
            raise SiteError(f'{archive_path} is not a Kraya CRM backup')
        if manifest.get('format') != FORMAT:
            raise SiteError(f'{archive_path}: unknown backup format '
                f'{manifest.get("format")}')
        site = Site(name or manifest['site'], root=root)
        if site.exists():
            raise SiteError(f'site "{site.name}" already exists in '
                f'{site.path}: restore under another name (--site)')
        _write_config(site, tmp / 'trytond.conf', manifest, db_uri, listen)
        if site.is_sqlite != (manifest['backend'] == 'sqlite'):
            shutil.rmtree(site.path, ignore_errors=True)
            raise SiteError('a backup is restored on the database it came '
                f'from ({manifest["backend"]})')
        if site.database_exists():
            shutil.rmtree(site.path, ignore_errors=True)
            raise SiteError(f'the database "{site.database}" exists '
                'already: restore under another name (--site)')
        try:
            if site.is_sqlite:
                shutil.copyfile(tmp / 'database.sqlite',
                    site.path / f'{site.database}.sqlite')
            else:
                sites._pg_create(site.database_uri, site.database)
                _run([postgres_bin('pg_restore'), '--no-owner',
                        '--exit-on-error', '--dbname', _database_uri(site),
                        str(tmp / 'database.dump')])
            if (tmp / 'filestore').is_dir():
                shutil.copytree(tmp / 'filestore', filestore(site))
            if manifest.get('demo'):
                (site.path / '.demo').touch()
            if manifest['module_fingerprint'] == sites.module_fingerprint():
                site.mark_up_to_date()
            # Else the next ./crm start updates it (./crm migrate).
        except BaseException:
            site.drop()
            raise
    return site


def _write_config(site, config_file, manifest, db_uri, listen):
    "The archive's trytond.conf, pointing at the new site's database."
    import configparser
    parser = configparser.RawConfigParser()
    parser.read(config_file)
    database = site.name if site.name != manifest['site'] \
        else manifest['database']
    if db_uri:
        server, named = sites._split_db_uri(db_uri)
        parser.set('database', 'uri', server)
        database = named or database
    parser.set('kraya_crm', 'database', database)
    if listen:
        parser.set('web', 'listen', listen)
    site.path.mkdir(parents=True, exist_ok=True)
    with open(site.config_file, 'w') as file:
        file.write(f'# Kraya CRM site "{site.name}", restored from the '
            f'backup of "{manifest["site"]}" taken {manifest["taken_at"]}.\n')
        parser.write(file)


def _sqlite_copy(source, target):
    """SQLite's online backup: a consistent copy, whatever the site's
    processes write meanwhile (they wait for it, it does not wait for
    them to stop)."""
    with sqlite3.connect(f'file:{source}?mode=ro', uri=True,
                timeout=60) as origin, \
            sqlite3.connect(target) as copy:
        origin.backup(copy)
    origin.close()
    copy.close()


def _database_uri(site):
    return f"{site.database_uri.rstrip('/')}/{site.database}"


def _fingerprint(site):
    stamp = site.path / '.module-fingerprint'
    return stamp.read_text() if stamp.exists() else None


def _add_bytes(archive, name, data):
    import io
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(dt.datetime.now().timestamp())
    archive.addfile(info, io.BytesIO(data))


def _run(args):
    result = subprocess.run(args, capture_output=True, text=True)
    if result.returncode:
        raise SiteError(f'{Path(args[0]).name} failed (exit '
            f'{result.returncode}): {result.stderr.strip()}')
