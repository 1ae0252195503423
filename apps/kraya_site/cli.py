"""./crm: set up and run Kraya CRM. The bash script `crm` makes the
virtualenv and hands over here (python -m kraya_site.cli)."""
import argparse
import getpass
import os
import shutil
import subprocess
import sys
from pathlib import Path

from . import business, exposure, sites, supervise
from .sites import Site, SiteError

DEMO_LOGINS = [
    ('admin', 'admin', "Administrator (everything, users, settings)"),
    ('manager', 'manager', "CRM Manager: all leads and deals, configuration"),
    ('rep', 'rep', "Sales Rep (Mumbai team): own and unassigned team leads"),
    ('rep2', 'rep2', "Sales Rep (Mumbai team)"),
    ('agent', 'agent', "Field Agent: own leads, deals and tasks, on the phone"),
    ('accountant', 'accountant', "Accountant: reads deals and leads"),
    ]


def cmd_start(args):
    "Set up everything on first run, then run web, cron and worker."
    ensure_libreoffice()
    sites.ensure_sao()
    sites.ensure_page_libraries()
    sites.install_desk_customisation()
    site = sites.site_named(args.site)
    if not site.exists():
        raise SiteError(
            f'no site "{args.site}": create it with ./crm new-site {args.site}')
    if not site.database_exists():
        print(f'Creating site "{site.name}" with demo data '
            '(first run, about a minute)...', flush=True)
        sites.new_site(site.name, demo=True, root=site.root)
    elif not site.is_up_to_date():
        print('The code changed since the last start: updating the '
            'database (./crm migrate)...', flush=True)
        site.migrate()
    refuse_exposed_demo_values(site)
    shape = supervise.process_settings(site, web_workers=args.web_workers)
    processes = supervise.site_commands(site, site_processes(site), shape)
    print_banner(site, shape)
    print_setting_warnings(site)
    env = site.environ()
    env['PATH'] = os.path.dirname(sys.executable) + os.pathsep + env['PATH']
    status = supervise.run(site, processes, env)
    if status:
        raise SiteError(f'supervisord exited with {status}: see '
            f'{supervise.log_folder(site)}/supervisord.log')


def refuse_exposed_demo_values(site):
    "A site listening beyond this machine runs with none of the demo's."
    found = exposure.problems(site)
    if found:
        raise SiteError(
            f'site "{site.name}" listens on {site.listen}, beyond this '
            'machine, with what anyone can read in Kraya\'s repository:\n  '
            + '\n  '.join(found) + '\nPut your own values in '
            f'{site.config_file} (./crm new-site writes random secrets) and '
            'change those passwords in the desk (Preferences), or listen on '
            '127.0.0.1.')


def cmd_service_files(args):
    "Write systemd units that run and restart a site's processes."
    site = sites.site_named(args.site)
    if not site.exists():
        raise SiteError(f'no site "{args.site}"')
    refuse_exposed_demo_values(site)
    out = Path(args.out) if args.out else site.path / 'systemd'
    out.mkdir(parents=True, exist_ok=True)
    units = supervise.systemd_units(
        site, supervise.site_commands(site, site_processes(site)))
    for name, text in units.items():
        (out / name).write_text(text)
    print(f'Wrote {len(units)} systemd units to {out}. Install them with:')
    print(f'  sudo cp {out}/kraya-{site.name}* /etc/systemd/system/')
    print('  sudo systemctl daemon-reload')
    print(f'  sudo systemctl enable --now kraya-{site.name}.target')


def site_processes(site):
    """The Procfile's processes a site runs: web, cron and worker (when
    [queue] worker is on: else it has nothing to do and exits), and, on a
    demo site whose settings point at this machine, the local WhatsApp
    simulator and mail sink. A real site talks to Meta and to its mail
    server, even one on this machine: a sink there would swallow the
    emails meant for its leads."""
    config = site.config()
    processes = ['web', 'cron']
    if config.getboolean('queue', 'worker', fallback=False):
        processes.append('worker')
    if not config.getboolean('kraya_crm', 'demo', fallback=False):
        return processes
    if is_local(config.get('kraya_crm', 'whatsapp_api_url', fallback='')):
        processes.append('whatsapp')
    if is_local(config.get('email', 'uri', fallback='')):
        processes.append('mail')
    return processes


def is_local(url):
    import urllib.parse
    return urllib.parse.urlsplit(url).hostname in {'127.0.0.1', 'localhost'}


def print_banner(site, shape):
    print()
    print(f'Kraya CRM is starting at {site.url}')
    if not site.is_sqlite:
        print('Production shape (PostgreSQL): the web by gunicorn, '
            f'{shape["web_workers"]} processes of {shape["web_threads"]} '
            f'threads; {shape["queue_workers"]} queue workers; one cron.')
    if (site.path / '.demo').exists():
        print('Demo logins (login / password):')
        for login, password, role in DEMO_LOGINS:
            print(f'  {login:<11} {password:<11} {role}')
    print('Press Ctrl-C to stop.')
    print(flush=True)


def print_setting_warnings(site):
    "Say which secret settings the site still has to fill, and where from."
    from kraya_crm import settings
    config = site.config()

    def get(name):
        return config.get('kraya_crm', name, fallback='')
    demo = settings.is_demo(get('demo'))
    for line in settings.warnings(get, demo):
        print(f'Warning: {line}')
    if not site.is_sqlite and config.get(
            'cache', 'clean_timeout', fallback='') != '0':
        print('Warning: [cache] clean_timeout is not 0: a setting or rule '
            'changed in one process is seen by the others only after up to '
            '5 minutes. Set it to 0 in trytond.conf (PostgreSQL tells them '
            'at once; docs/deploy.md).')
    sender = config.get('email', 'from', fallback='')
    if not demo and sender.rstrip('>').endswith('@localhost'):
        print(f'Warning: [email] from is "{sender}", which no mail server '
            'delivers from. Set your business address there (./crm '
            'new-site --email-from).')
    print(flush=True)


# The company questions: (option, environment variable, what, hint,
# required).
BUSINESS_QUESTIONS = [
    ('company', 'KRAYA_COMPANY', "the company's name", None, True),
    ('state', 'KRAYA_STATE', "its Indian state", "e.g. MH or Maharashtra",
        True),
    ('gstin', 'KRAYA_GSTIN', "its GSTIN", "optional", False),
    # Rule 46: the supplier's address is on every tax invoice.
    ('street', 'KRAYA_STREET', "its street address",
        "printed on invoices; optional", False),
    ('city', 'KRAYA_CITY', "its city", "optional", False),
    ('postal_code', 'KRAYA_PIN', "its PIN code", "6 digits; optional", False),
    ('admin_email', 'KRAYA_ADMIN_EMAIL', "the admin's email", "optional",
        False),
    ]


def setting_option(name):
    "whatsapp_app_secret -> (--whatsapp-app-secret, KRAYA_WHATSAPP_APP_SECRET)"
    return '--' + name.replace('_', '-'), 'KRAYA_' + name.upper()


def cmd_new_site(args):
    "Create a site: its trytond.conf, a database with the modules, its company."
    password = company = None
    if not args.demo:
        company = ask_business(args)
        password = ask_password()
    values = {}
    for name in sites.WHATSAPP_SETTINGS + sites.EMAIL_SETTINGS:
        value = getattr(args, name) or os.environ.get(setting_option(name)[1])
        if value:
            values[name] = value
    site = sites.new_site(
        args.name, db_uri=args.db, demo=args.demo, admin_password=password,
        listen=args.listen, business=company, settings=values)
    print(f'Site "{site.name}" is ready in {site.path}.')
    print_setting_warnings(site)
    print(f'Run it with: ./crm start --site {site.name}')


def cmd_setup_company(args):
    "Create the company of a site that has none (made by an older new-site)."
    site = Site(args.site)
    if not site.exists():
        raise SiteError(f'no site "{args.site}"')
    site.set_up_business(ask_business(args))
    print(f'Site "{site.name}" has its company.')


def ask_business(args):
    """The company of a new site, checked: from the options, else the
    environment, else asked on the terminal until it is right."""
    interactive = sys.stdin.isatty()
    answers = {}
    for option, variable, *_ in BUSINESS_QUESTIONS:
        answers[option] = getattr(args, option) or os.environ.get(variable)
    while True:
        for option, variable, what, hint, required in BUSINESS_QUESTIONS:
            if answers[option] is None and interactive:
                prompt = what[0].upper() + what[1:]
                answers[option] = input(
                    f'{prompt} ({hint}): ' if hint else f'{prompt}: ').strip()
            elif not answers[option] and required and not interactive:
                raise SiteError(f'give {what} with '
                    f'--{option.replace("_", "-")} or {variable}, or run '
                    'this command from a terminal')
        try:
            return business.check(answers['company'], answers['state'],
                answers['gstin'], answers['admin_email'],
                street=answers['street'], city=answers['city'],
                postal_code=answers['postal_code'])
        except business.BusinessError as exception:
            if not interactive:
                raise SiteError(str(exception)) from exception
            print(f'{exception}; try again.')
            answers = dict.fromkeys(answers)


def ask_password():
    if not sys.stdin.isatty():
        password = os.environ.get('KRAYA_ADMIN_PASSWORD')
        if password:
            return password
        raise SiteError('set the admin password in KRAYA_ADMIN_PASSWORD '
            'or run ./crm new-site from a terminal')
    while True:
        password = getpass.getpass('Password for "admin": ')
        if password and password == getpass.getpass('Again: '):
            return password
        print('The passwords are empty or differ; try again.')


def cmd_migrate(args):
    "Update a site's database after a code change."
    site = sites.site_named(args.site)
    if not site.exists():
        raise SiteError(f'no site "{args.site}"')
    site.migrate()
    print(f'Site "{site.name}" is up to date.')


def cmd_whatsapp_sim(args):
    "Run a local WhatsApp Cloud API that posts webhooks to the site."
    import logging
    import urllib.parse
    from kraya_peers.whatsapp import Simulator
    site = sites.site_named(args.site)
    if not site.exists():
        raise SiteError(f'no site "{args.site}"')
    config = site.config()

    def setting(name):
        return config.get('kraya_crm', name, fallback='')
    # By default where the site's whatsapp_api_url expects it.
    port = args.port if args.port is not None else urllib.parse.urlsplit(
        setting('whatsapp_api_url')).port or 8100
    webhook_url = f'{site.url}{site.database}/crm/whatsapp/webhook'
    simulator = Simulator(port=port, webhook_url=webhook_url,
        app_secret=setting('whatsapp_app_secret'),
        access_token=setting('whatsapp_access_token'),
        phone_number_id=setting('whatsapp_phone_number_id'),
        waba_id=setting('whatsapp_business_account_id') or '100000000000000')
    try:
        simulator.start()
    except OSError as exception:
        raise SiteError(f'cannot listen on port {port}: {exception}')
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(message)s')
    print(f'WhatsApp Cloud API simulator at {simulator.url}, webhooks to '
        f'{webhook_url}. Ctrl-C stops it.', flush=True)
    simulator.serve_forever()


def cmd_mail_sink(args):
    "Run a local SMTP server that keeps the site's emails as .eml files."
    import logging
    import urllib.parse
    from kraya_peers.smtp import SmtpSink
    site = sites.site_named(args.site)
    if not site.exists():
        raise SiteError(f'no site "{args.site}"')
    uri = urllib.parse.urlsplit(
        site.config().get('email', 'uri', fallback='smtp://127.0.0.1:8025'))
    port = args.port or uri.port or 8025
    folder = site.path / 'mail'
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(message)s')
    # aiosmtpd narrates every connection; one line an email is enough.
    logging.getLogger('mail.log').setLevel(logging.WARNING)
    print(f'Mail sink at smtp://127.0.0.1:{port}, emails kept in {folder}. '
        'Ctrl-C stops it.', flush=True)
    try:
        # Filed, not kept: a demo that runs for weeks must not fill memory.
        SmtpSink(port=port, folder=folder, keep=False).serve_forever()
    except OSError as exception:
        raise SiteError(f'cannot listen on port {port}: {exception}')


def cmd_backup(args):
    """Back up a site while it runs: its database and files in one archive
    (SQLite's online backup, PostgreSQL's pg_dump)."""
    from . import backup
    site = sites.site_named(args.site)
    path = backup.backup(site, args.out)
    size = path.stat().st_size / 1024 / 1024
    print(f'Backed up site "{site.name}" to {path} ({size:.1f} MB).')
    print(f'Restore it with: ./crm restore {path} [--site NEWNAME]')


def cmd_restore(args):
    "Make a site from a backup: under its own name, or a new one."
    from . import backup
    root = None
    name = args.site
    if name and os.sep in name:
        path = Path(name).resolve()
        name, root = path.name, path.parent
    site = backup.restore(args.file, name=name, db_uri=args.db,
        listen=args.listen, root=root)
    print(f'Restored site "{site.name}" in {site.path}.')
    print(f'Run it with: ./crm start --site {args.site or site.name}')


def cmd_test(args):
    "Install what the tests need and run the whole suite with pytest."
    ensure_chromium()
    ensure_libreoffice()
    sites.ensure_sao()
    sites.ensure_page_libraries()
    sites.install_desk_customisation()
    env = os.environ.copy()
    env['KRAYA_ROOT'] = str(sites.ROOT)
    os.chdir(sites.ROOT)
    result = subprocess.run(
        [sys.executable, '-m', 'pytest', *args.pytest_args], env=env)
    sys.exit(result.returncode)


def cmd_lock(args):
    """Pin every Python package, with its hashes, in requirements.lock
    (kept versions unless --upgrade); ./crm installs from it."""
    uv = sites.bin_path('uv')
    if not os.path.exists(uv):
        subprocess.run([sys.executable, '-m', 'pip', 'install', '--quiet',
                'uv'], check=True)
    os.chdir(sites.ROOT)
    # Universal: one lock for every Python from 3.11 and every platform.
    subprocess.run([uv, 'pip', 'compile', 'pyproject.toml', '--extra',
            'test', '--generate-hashes', '--universal', '--python-version',
            '3.11', '--custom-compile-command', './crm lock',
            '-o', 'requirements.lock',
            *(['--upgrade'] if args.upgrade else [])], check=True)


def ensure_chromium():
    "Debian's chromium drives the browser tests; a test tool cannot fetch one."
    ensure_debian_packages(['chromium'], '/usr/bin/chromium',
        'the browser tests')


def ensure_libreoffice():
    """LibreOffice (Debian's, without its GUI) turns the GST invoice into a
    PDF, and poppler's pdftoppm lets the tests look at it; without them
    the invoice prints as an ODT."""
    ensure_debian_packages(
        ['libreoffice-writer-nogui', 'fonts-liberation', 'poppler-utils'],
        '/usr/bin/soffice', 'PDF invoices', recommends=False)
    ensure_debian_packages(['poppler-utils'], '/usr/bin/pdftoppm',
        'PDF invoices')


def ensure_debian_packages(packages, program, needed_for, recommends=True):
    """Install Debian's `packages` with apt-get when `program` is missing
    (LibreOffice's recommends would bring a Java runtime and more)."""
    if shutil.which(Path(program).name) or os.path.exists(program):
        return
    if os.geteuid() != 0 and not shutil.which('sudo'):
        raise SiteError(f'{needed_for} need Debian\'s {packages[0]}: '
            f'apt-get install {" ".join(packages)}')
    sudo = [] if os.geteuid() == 0 else ['sudo']
    print(f'Installing Debian\'s {", ".join(packages)} for {needed_for}...',
        flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND='noninteractive')
    subprocess.run([*sudo, 'apt-get', 'update', '-qq'], check=True, env=env)
    subprocess.run([*sudo, 'apt-get', 'install', '-y', '-qq',
            *([] if recommends else ['--no-install-recommends']), *packages],
        check=True, env=env, stdout=subprocess.DEVNULL)


def parser():
    root = argparse.ArgumentParser(
        prog='./crm', description="Kraya CRM: set up, run and test.")
    commands = root.add_subparsers(dest='command', metavar='COMMAND')

    start = commands.add_parser('start', help=cmd_start.__doc__)
    start.add_argument('--site', default='default',
        help="a site's name, or the path of its folder")
    start.add_argument('--web-workers', type=int, metavar='N',
        help="PostgreSQL: gunicorn's worker processes for this run "
        "(default: [processes] web_workers of trytond.conf, else 4)")
    start.set_defaults(func=cmd_start)

    service_files = commands.add_parser(
        'service-files', help=cmd_service_files.__doc__)
    service_files.add_argument('--site', default='default',
        help="a site's name, or the path of its folder")
    service_files.add_argument('--out', metavar='DIR',
        help="where to write them (default: sites/NAME/systemd)")
    service_files.set_defaults(func=cmd_service_files)

    test = commands.add_parser('test', help=cmd_test.__doc__)
    test.add_argument('pytest_args', nargs=argparse.REMAINDER,
        help="passed to pytest, e.g. -k rules")
    test.set_defaults(func=cmd_test)

    new = commands.add_parser('new-site', help=cmd_new_site.__doc__)
    new.add_argument('name')
    new.add_argument('--db', metavar='URI',
        help="postgresql://user@host:5432/dbname (default: SQLite in the site)")
    new.add_argument('--demo', action='store_true',
        help="load the demo data and set admin/admin")
    new.add_argument('--listen', metavar='HOST:PORT',
        help="where the web server listens (default 127.0.0.1:8000)")
    add_business_options(new)
    for name in sites.WHATSAPP_SETTINGS:
        option, variable = setting_option(name)
        new.add_argument(option, dest=name, metavar='VALUE',
            help=f"[kraya_crm] {name} (or {variable}; default empty"
            + (": Meta's Graph API)" if name == 'whatsapp_api_url' else ")"))
    new.add_argument('--email-uri', dest='email_uri', metavar='URI',
        help="[email] uri: the mail server emails go through (or "
        "KRAYA_EMAIL_URI; default smtp://localhost:25, this machine's)")
    new.add_argument('--email-from', dest='email_from', metavar='ADDRESS',
        help="[email] from, e.g. \"Acme Realty <sales@acme.in>\" (or "
        "KRAYA_EMAIL_FROM)")
    new.set_defaults(func=cmd_new_site)

    setup_company = commands.add_parser(
        'setup-company', help=cmd_setup_company.__doc__)
    setup_company.add_argument('--site', default='default')
    add_business_options(setup_company)
    setup_company.set_defaults(func=cmd_setup_company)

    backup = commands.add_parser('backup', help=cmd_backup.__doc__)
    backup.add_argument('--site', default='default',
        help="a site's name, or the path of its folder")
    backup.add_argument('--out', metavar='PATH',
        help="a folder (default backups/) or a file name ending .tar.gz")
    backup.set_defaults(func=cmd_backup)

    restore = commands.add_parser('restore', help=cmd_restore.__doc__)
    restore.add_argument('file', help="a backup made by ./crm backup")
    restore.add_argument('--site', metavar='NEWNAME',
        help="the new site's name or folder (default: the backup's site, "
        "which must not exist)")
    restore.add_argument('--db', metavar='URI',
        help="PostgreSQL: the server (and database name) to restore on "
        "(default: the backup's server)")
    restore.add_argument('--listen', metavar='HOST:PORT',
        help="where the new site's web server listens (default: the "
        "backup's)")
    restore.set_defaults(func=cmd_restore)

    lock = commands.add_parser('lock', help=cmd_lock.__doc__)
    lock.add_argument('--upgrade', action='store_true',
        help="move every package to its newest version within pyproject.toml")
    lock.set_defaults(func=cmd_lock)

    migrate = commands.add_parser('migrate', help=cmd_migrate.__doc__)
    migrate.add_argument('--site', default='default')
    migrate.set_defaults(func=cmd_migrate)

    whatsapp_sim = commands.add_parser(
        'whatsapp-sim', help=cmd_whatsapp_sim.__doc__)
    whatsapp_sim.add_argument('--site', default='default')
    whatsapp_sim.add_argument('--port', type=int,
        help="default: the port of the site's whatsapp_api_url, else 8100")
    whatsapp_sim.set_defaults(func=cmd_whatsapp_sim)

    mail_sink = commands.add_parser('mail-sink', help=cmd_mail_sink.__doc__)
    mail_sink.add_argument('--site', default='default')
    mail_sink.add_argument('--port', type=int,
        help="default: the port of the site's [email] uri, else 8025")
    mail_sink.set_defaults(func=cmd_mail_sink)

    from .import_cli import cmd_import
    import_ = commands.add_parser('import', help=cmd_import.__doc__)
    import_.add_argument('file', help="a .csv or .xlsx file, header row first")
    import_.add_argument('--source', required=True, metavar='CODE',
        help="the lead source code, e.g. import, website, walk-in")
    import_.add_argument('--site', default='default',
        help="a site's name, or the path of its folder")
    import_.add_argument('--dry-run', action='store_true',
        help="check the file and count what would be imported; save nothing")
    import_.add_argument('--consent-basis', metavar='TEXT',
        help="why these people may be messaged; records their opt-in")
    import_.add_argument('--consent-channel', default='whatsapp',
        choices=['whatsapp', 'email', 'sms', 'call'])
    import_.add_argument('--user', default='admin', metavar='LOGIN',
        help="who imports: the new leads' owner and team (default admin)")
    import_.set_defaults(func=cmd_import)

    from .bench_cli import cmd_chaos
    chaos = commands.add_parser('chaos', help=cmd_chaos.__doc__)
    chaos.add_argument('chaos_args', nargs=argparse.REMAINDER,
        help="--seconds 180, --kill-every 5, --no-postgres-restart, "
        "--no-results")
    chaos.set_defaults(func=cmd_chaos)

    from .bench_cli import cmd_bench
    bench = commands.add_parser('bench', help=cmd_bench.__doc__)
    bench.add_argument('name', nargs='?', help="e.g. import")
    bench.add_argument('bench_args', nargs=argparse.REMAINDER,
        help="passed to the benchmark, e.g. --rows 10000")
    bench.set_defaults(func=cmd_bench)
    return root


def add_business_options(command):
    for option, variable, what, hint, _ in BUSINESS_QUESTIONS:
        command.add_argument('--' + option.replace('_', '-'), dest=option,
            metavar='TEXT', help=f"{what}{f' ({hint})' if hint else ''}; "
            f"or {variable}, else asked on a terminal")


def main(argv=None):
    # pytest's own options (./crm test -q -k rules) pass through untouched.
    args, extra = parser().parse_known_args(argv)
    if extra:
        if args.command not in {'test', 'chaos'}:
            parser().error('unrecognized arguments: ' + ' '.join(extra))
        if args.command == 'test':
            args.pytest_args = extra + list(args.pytest_args)
        else:
            args.chaos_args = extra + list(args.chaos_args)
    if not args.command:
        parser().print_help()
        return 2
    try:
        args.func(args)
    except SiteError as exception:
        print(f'crm: {exception}', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == '__main__':
    sys.exit(main())
