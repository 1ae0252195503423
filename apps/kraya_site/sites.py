"""Sites: a folder under sites/ holding trytond.conf, the SQLite file and
the filestore, and the database behind it. Used by the ./crm commands and
by the test suite, so the tests build a site the way a user does."""
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
from pathlib import Path


ROOT = Path(os.environ.get('KRAYA_ROOT') or Path.cwd()).resolve()
SITES = ROOT / 'sites'
TEMPLATE = SITES / 'default' / 'trytond.conf'
SAO_VERSION = '8.0.11'
SAO_DIR = ROOT / '.sao'
# The lock of sao's npm libraries (refresh: see README, "Dependencies").
SAO_LOCK = Path(__file__).parent / 'sao' / 'package-lock.json'
MODULES = ['kraya_crm']
ACTIVATED_PREFIX = 'kraya_activated_'
DEMO_ADMIN_PASSWORD = 'admin'
# [kraya_crm] secrets each new site gets its own of, not the demo's.
SITE_SECRETS = ('link_secret', 'email_inbound_secret', 'privacy_pepper')
# The settings a site that is not a demo is given (by new-site options) or
# left empty, never the demo's: its WhatsApp app and number are its own.
# (kraya_crm.settings.DEMO_VALUES holds their demo values.)
WHATSAPP_SETTINGS = (
    'whatsapp_verify_token', 'whatsapp_app_secret', 'whatsapp_api_url',
    'whatsapp_phone_number_id', 'whatsapp_access_token',
    'whatsapp_business_account_id')
# [email] uri and from of a site that is not a demo: its own mail server
# (by default this machine's, port 25), never the demo's local sink.
EMAIL_SETTINGS = ('email_uri', 'email_from')
DEMO_EMAIL_URI = 'smtp://127.0.0.1:8025'
REAL_EMAIL_URI = 'smtp://localhost:25'


# What a site on PostgreSQL adds to trytond.conf: it runs the production
# shape, several processes that share through the database what one
# process would keep in memory (docs/deploy.md).
PRODUCTION_CONFIG = """
[cache]
# A setting, access right or record rule changed in one process is cleared
# from every other's cache at once, announced by PostgreSQL (LISTEN/NOTIFY
# on channel ir_cache), not found up to 5 minutes later.
clean_timeout = 0

[processes]
# ./crm start: gunicorn's worker processes and the threads of each for the
# web (./crm start --web-workers N for one run), and how many trytond-worker
# processes run the queue.
web_workers = 4
web_threads = 4
queue_workers = 2
"""


class SiteError(Exception):
    "A problem the user can fix, reported without a traceback."


def bin_path(name):
    "A console script of the virtualenv running us."
    return str(Path(sys.executable).parent / name)


class Site:

    def __init__(self, name, root=None):
        self.name = name
        self.root = Path(root) if root else None
        self.path = (self.root or SITES) / name
        self.config_file = self.path / 'trytond.conf'

    @property
    def database(self):
        return self.config().get('kraya_crm', 'database', fallback=self.name)

    def config(self):
        import configparser
        parser = configparser.ConfigParser(interpolation=None)
        parser.read(self.config_file)
        return parser

    @property
    def database_uri(self):
        return self.config().get('database', 'uri', fallback='sqlite://')

    @property
    def is_sqlite(self):
        return self.database_uri.startswith('sqlite')

    @property
    def listen(self):
        "[web] listen: where the web process takes requests (host:port)."
        return self.config().get('web', 'listen', fallback='127.0.0.1:8000')

    @property
    def url(self):
        host, port = self.listen.rsplit(':', 1)
        if host in {'0.0.0.0', '*', ''}:
            host = '127.0.0.1'
        return f'http://{host}:{port}/'

    def exists(self):
        return self.config_file.exists()

    def database_exists(self):
        if self.is_sqlite:
            return (self.path / f'{self.database}.sqlite').exists()
        with _pg_connect(self.database_uri) as conn, conn.cursor() as cur:
            cur.execute(
                'SELECT 1 FROM pg_database WHERE datname = %s',
                (self.database,))
            return cur.fetchone() is not None

    def write_config(self, db_uri=None, listen=None, demo=False,
            values=None):
        """Write trytond.conf from the default site's, pointing at this
        site. A site that is not a demo gets none of the demo's values: its
        own secrets, the WhatsApp settings of `values` or empty, and the
        mail server of `values` (email_uri, email_from) or this machine's."""
        text = TEMPLATE.read_text()
        if db_uri:
            server, database = _split_db_uri(db_uri)
            text = text.replace('uri = sqlite://', f'uri = {server}')
            text = text.replace('database = default', f'database = {database or self.name}')
        else:
            text = text.replace('database = default', f'database = {self.name}')
        if listen:
            text = text.replace('listen = 127.0.0.1:8000', f'listen = {listen}')
        text = text.replace('Kraya CRM site "default"', f'Kraya CRM site "{self.name}"')
        own = {key: secrets.token_urlsafe(32) for key in SITE_SECRETS}
        if not demo:
            values = dict(values or {})
            text = text.replace(f'uri = {DEMO_EMAIL_URI}',
                f"uri = {values.pop('email_uri', None) or REAL_EMAIL_URI}")
            if values.get('email_from'):
                text = re.sub(r'^from = .*$',
                    lambda _: f"from = {values.pop('email_from')}", text,
                    count=1, flags=re.MULTILINE)
            values.pop('email_from', None)
            own.update({key: '' for key in WHATSAPP_SETTINGS})
            own.update(values)
            own['demo'] = 'False'
        for key, value in own.items():
            text = re.sub(rf'^{key} = .*$', lambda _: f'{key} = {value}',
                text, flags=re.MULTILINE)
        if db_uri:
            text += PRODUCTION_CONFIG
        self.path.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(text)

    def create_database(self, admin_password=None, admin_email='admin@localhost'):
        """Create the database, activate the modules and set the admin
        password (asked by trytond-admin on the terminal when None)."""
        copied = self._copy_activated()
        if not copied:
            if self.is_sqlite:
                (self.path / f'{self.database}.sqlite').touch()
            else:
                _pg_create(self.database_uri, self.database)
        env = self.environ()
        with tempfile.TemporaryDirectory() as tmp:
            if admin_password is not None:
                passfile = Path(tmp) / 'password'
                passfile.write_text(admin_password + '\n')
                passfile.chmod(0o600)
                env['TRYTONPASSFILE'] = str(passfile)
            if copied:
                self.admin(['-p', '--email', admin_email], env=env)
            else:
                self.admin(
                    ['--all', '-u', *MODULES, '--activate-dependencies',
                        '--email', admin_email], env=env)
                self._keep_activated()

    # The test suite makes a dozen sites of the same code. With
    # KRAYA_SITE_TEMPLATES set (a folder for SQLite's copies; PostgreSQL
    # keeps them as template databases on the site's server, and a dump in
    # the folder for a site on another server), the first
    # activation of the modules is kept and the next sites start from a
    # copy of it, a second instead of minutes, as Tryton's own tests do
    # with DB_CACHE. Sites made without it activate the modules.
    @property
    def _activated_name(self):
        return f'{ACTIVATED_PREFIX}{module_fingerprint()[:16]}'

    def _copy_activated(self):
        "Start the database from a kept activation; whether there was one."
        folder = os.environ.get('KRAYA_SITE_TEMPLATES')
        if not folder:
            return False
        if self.is_sqlite:
            kept = Path(folder) / f'{self._activated_name}.sqlite'
            if not kept.exists():
                return False
            shutil.copyfile(kept, self.path / f'{self.database}.sqlite')
            return True
        if _pg_copy(self.database_uri, self._activated_name,
                self.database):
            return True
        # A server of its own (the chaos run's, which it restarts) has no
        # template yet: the dump of the first server's, seconds not minutes.
        dump = Path(folder) / f'{self._activated_name}.pgdump'
        if not dump.exists():
            return False
        _pg_create(self.database_uri, self.database)
        _pg_tool('pg_restore', '--no-owner', '--no-privileges', '-d',
            self._pg_database_uri, str(dump))
        return True

    def _keep_activated(self):
        folder = os.environ.get('KRAYA_SITE_TEMPLATES')
        if not folder:
            return
        if self.is_sqlite:
            kept = Path(folder) / f'{self._activated_name}.sqlite'
            if not kept.exists():
                Path(folder).mkdir(parents=True, exist_ok=True)
                partial = kept.with_suffix('.partial')
                shutil.copyfile(
                    self.path / f'{self.database}.sqlite', partial)
                partial.replace(kept)
        else:
            _pg_copy(self.database_uri, self.database, self._activated_name)
            dump = Path(folder) / f'{self._activated_name}.pgdump'
            if not dump.exists():
                Path(folder).mkdir(parents=True, exist_ok=True)
                partial = dump.with_suffix('.partial')
                _pg_tool('pg_dump', '-Fc', '--no-owner', '--no-privileges',
                    '-f', str(partial), self._pg_database_uri)
                partial.replace(dump)

    @property
    def _pg_database_uri(self):
        return self.database_uri.rstrip('/') + '/' + self.database

    def migrate(self):
        "Update the modules of the site's database after a code change."
        self.admin(['-u', *MODULES, '--activate-dependencies'])
        self.mark_up_to_date()

    @property
    def _code_stamp(self):
        return self.path / '.module-fingerprint'

    def is_up_to_date(self):
        "Whether the database was set up with the module code on disk now."
        return (self._code_stamp.exists()
            and self._code_stamp.read_text() == module_fingerprint())

    def mark_up_to_date(self):
        self._code_stamp.write_text(module_fingerprint())

    def admin(self, args, env=None):
        _run([bin_path('trytond-admin'), '-c', str(self.config_file),
                '-d', self.database, *args], env=env or self.environ())

    def set_up_business(self, business):
        "Create the company and the Indian setup (see business.py)."
        _run([sys.executable, '-m', 'kraya_site.business',
                '--config', str(self.config_file),
                '--database', self.database,
                '--company', business.name, '--state', business.state,
                *[argument for option in ['gstin', 'admin_email', 'street',
                        'city', 'postal_code']
                    if getattr(business, option)
                    for argument in ['--' + option.replace('_', '-'),
                        getattr(business, option)]]],
            env=self.environ())

    def load_demo(self):
        _run([sys.executable, '-m', 'kraya_site.demo',
                '--config', str(self.config_file),
                '--database', self.database], env=self.environ())

    def environ(self):
        "The environment of every process of the site (see trytond.conf)."
        env = os.environ.copy()
        env.pop('TRYTOND_CONFIG', None)
        env.update(self.variables())
        return env

    def variables(self):
        "What the site's processes need set, beyond the machine's usual."
        return {
            'KRAYA_ROOT': str(ROOT),
            'TRYTOND_DATABASE__PATH': str(self.path.resolve()),
            'TRYTOND_WEB__ROOT': str(SAO_DIR),
            }

    def drop_database(self):
        if self.is_sqlite:
            (self.path / f'{self.database}.sqlite').unlink(missing_ok=True)
            (self.path / '.demo').unlink(missing_ok=True)
        else:
            _pg_drop(self.database_uri, self.database)

    def drop(self):
        "Remove the site and its database (used by the tests)."
        if self.exists():
            self.drop_database()
        shutil.rmtree(self.path, ignore_errors=True)


def site_named(name):
    "A site by name (under sites/), or by its folder's path."
    if os.sep in name:
        path = Path(name).resolve()
        return Site(path.name, root=path.parent)
    return Site(name)


def new_site(name, db_uri=None, demo=False, admin_password=None,
        listen=None, root=None, business=None, settings=None):
    """Create a site. A demo site gets admin/admin and the demo data;
    otherwise the admin password is asked for (or given), the company is
    the checked `business` (business.check) and the WhatsApp settings are
    those of `settings` ({name: value}) or empty."""
    site = Site(name, root=root)
    if site.exists() and site.database_exists():
        raise SiteError(f'site "{name}" already exists in {site.path}')
    if not demo and business is None:
        raise SiteError('a site that is not a demo needs its company')
    if name != 'default' or root is not None or not site.exists():
        site.write_config(
            db_uri=db_uri, listen=listen, demo=demo, values=settings)
    if demo:
        # trytond-admin refuses a password as weak as "admin", which is
        # fine for a demo: set a strong one, the demo loader sets "admin".
        admin_password = secrets.token_urlsafe(16)
    try:
        site.create_database(admin_password=admin_password)
        if demo:
            # The demo company, set up as below, with its data.
            site.load_demo()
        else:
            site.set_up_business(business)
        site.mark_up_to_date()
    except BaseException:
        # Half a site, or one without a company, would be taken for a
        # ready one by the next start.
        site.drop_database()
        raise
    return site


def module_folder():
    "Where the kraya_crm module is, found without importing it (and trytond)."
    import importlib.util
    return Path(importlib.util.find_spec('kraya_crm').origin).parent


def module_fingerprint():
    "A hash of the module's code, models and views."
    import hashlib
    digest = hashlib.sha256()
    package = module_folder()
    for path in sorted(package.rglob('*')):
        if path.suffix in {'.py', '.xml', '.cfg'} and 'tests' not in path.parts:
            digest.update(str(path.relative_to(package)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def ensure_sao():
    "Install the sao web client (the desk) from npm into .sao/ once."
    index = SAO_DIR / 'dist' / 'tryton-sao.js'
    marker = SAO_DIR / '.kraya-sao-version'
    lock = SAO_LOCK.read_text()
    if index.exists() and marker.exists() and \
            marker.read_text() == _sao_stamp(lock) and \
            (SAO_DIR / 'node_modules' / 'jquery').exists():
        return
    if not shutil.which('npm'):
        raise SiteError(
            'npm is needed once to fetch the web client (sao); '
            'install Node.js and npm (Debian: apt-get install npm)')
    print(f'Installing the sao {SAO_VERSION} web client from npm...',
        flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        _run(['npm', 'pack', '--silent', f'tryton-sao@{SAO_VERSION}'],
            cwd=tmp, stdout=subprocess.DEVNULL)
        tarball, = Path(tmp).glob('tryton-sao-*.tgz')
        import tarfile
        shutil.rmtree(SAO_DIR, ignore_errors=True)
        with tarfile.open(tarball) as tar:
            tar.extractall(tmp, filter='data')
        shutil.move(str(Path(tmp) / 'package'), str(SAO_DIR))
    # sao's libraries at the versions of our lock, as CI passed with them.
    (SAO_DIR / 'package-lock.json').write_text(lock)
    _run(['npm', 'ci', '--omit=dev', '--legacy-peer-deps', '--no-audit',
            '--no-fund', '--loglevel=error'], cwd=SAO_DIR)
    marker.write_text(_sao_stamp(lock))


def _sao_stamp(lock):
    "What .sao was installed from: sao's version and our lock's hash."
    import hashlib
    return f'{SAO_VERSION} {hashlib.sha256(lock.encode()).hexdigest()}\n'


def ensure_page_libraries():
    """Install the npm libraries of the module's own pages (the lock
    static/package-lock.json) with npm ci in .pages-npm/, and copy the
    files that static/package.json's kraya.vendor names to static/vendor/,
    where the pages load them from: once, and again when either changes."""
    import hashlib
    import json
    static = module_folder() / 'static'
    package, lock = static / 'package.json', static / 'package-lock.json'
    vendor = static / 'vendor'
    stamp = hashlib.sha256(package.read_bytes() + lock.read_bytes()
        ).hexdigest() + '\n'
    files = json.loads(package.read_text())['kraya']['vendor']
    marker = vendor / '.kraya-stamp'
    if (marker.exists() and marker.read_text() == stamp
            and all((vendor / name).exists() for name in files)):
        return
    if not shutil.which('npm'):
        raise SiteError('npm is needed once to fetch the pages\' libraries; '
            'install Node.js and npm (Debian: apt-get install npm)')
    print('Installing the libraries of the board and other pages from '
        'npm...', flush=True)
    build = ROOT / '.pages-npm'
    build.mkdir(exist_ok=True)
    for path in [package, lock]:
        shutil.copy(path, build / path.name)
    _run(['npm', 'ci', '--omit=dev', '--no-audit', '--no-fund',
            '--loglevel=error'], cwd=build)
    shutil.rmtree(vendor, ignore_errors=True)
    vendor.mkdir()
    for name, source in files.items():
        shutil.copy(build / 'node_modules' / source, vendor / name)
    marker.write_text(stamp)


def install_desk_customisation():
    "Copy our desk stylesheet and script next to sao's index.html."
    static = module_folder() / 'static'
    for name in ['custom.css', 'custom.js']:
        if (static / name).exists():
            shutil.copy(static / name, SAO_DIR / name)


def _run(args, **kwargs):
    try:
        subprocess.run(args, check=True, **kwargs)
    except subprocess.CalledProcessError as exception:
        raise SiteError(
            f'{Path(args[0]).name} failed (exit {exception.returncode}): '
            + ' '.join(map(str, args))) from exception


def _pg_tool(name, *args):
    "Run pg_dump or pg_restore of the newest PostgreSQL installed."
    from .own_postgres import postgres_bin
    _run([postgres_bin(name), *args], stdout=subprocess.DEVNULL)


def _split_db_uri(uri):
    "postgresql://host:5432/name -> ('postgresql://host:5432/', 'name')"
    parts = urllib.parse.urlparse(uri)
    if parts.scheme not in {'postgresql', 'postgres'}:
        raise SiteError(f'unsupported database URI {uri!r}: use postgresql://')
    return (urllib.parse.urlunparse(parts._replace(scheme='postgresql', path='/')),
        parts.path.strip('/') or None)


def _pg_server(uri):
    "The maintenance connection string for a postgresql:// server URI."
    parts = urllib.parse.urlparse(uri)
    return urllib.parse.urlunparse(parts._replace(path='/postgres'))


def _pg_connect(uri):
    import psycopg
    try:
        return psycopg.connect(_pg_server(uri), autocommit=True)
    except psycopg.OperationalError as exception:
        raise SiteError(
            f'cannot reach PostgreSQL at {uri}: {exception}') from exception


def _pg_copy(uri, source, name):
    """CREATE DATABASE name as a copy of source, unless source is missing or
    name exists; whether it made it."""
    import psycopg
    conn = _pg_connect(uri)
    try:
        with conn.cursor() as cur:
            cur.execute('SELECT datname FROM pg_database '
                'WHERE datname IN (%s, %s)', (source, name))
            if {n for n, in cur.fetchall()} != {source}:
                return False
            try:
                cur.execute(f'CREATE DATABASE "{name}" TEMPLATE "{source}"')
            except psycopg.errors.DatabaseError:
                # Another process made it, or is copying the source now.
                return False
            return True
    finally:
        conn.close()


def drop_activated_templates(uri):
    "Drop the template databases KRAYA_SITE_TEMPLATES kept on this server."
    drop_databases_like(uri, ACTIVATED_PREFIX + '%')


def drop_databases_like(uri, pattern):
    "Drop the databases of the server whose name is LIKE the pattern."
    conn = _pg_connect(uri)
    try:
        with conn.cursor() as cur:
            cur.execute('SELECT datname FROM pg_database '
                'WHERE datname LIKE %s', (pattern,))
            names = [n for n, in cur.fetchall()]
    finally:
        conn.close()
    for name in names:
        _pg_drop(uri, name)


def _pg_create(uri, name):
    conn = _pg_connect(uri)
    try:
        with conn.cursor() as cur:
            cur.execute(
                'SELECT 1 FROM pg_database WHERE datname = %s', (name,))
            if not cur.fetchone():
                cur.execute(f'CREATE DATABASE "{name}" ENCODING \'UTF8\' '
                    "TEMPLATE template0")
    finally:
        conn.close()


def _pg_drop(uri, name):
    conn = _pg_connect(uri)
    try:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        conn.close()
