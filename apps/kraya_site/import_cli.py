"""./crm import FILE --source CODE: import leads from a CSV or XLSX file
into a site, in this process, with a progress bar on the terminal."""
import os
import sys
import time
from pathlib import Path
from typing import NamedTuple

from .sites import SiteError, site_named

class ImportRun(NamedTuple):
    "What ./crm import did: the summary, its text, the problems' file."
    summary: object  # lead_import.ImportSummary
    text: str
    report_path: Path  # None when every row was fine


# The paths a site's processes get from ./crm (see Site.environ).
SITE_PATHS = ['KRAYA_ROOT', 'TRYTOND_DATABASE__PATH', 'TRYTOND_WEB__ROOT']


def cmd_import(args):
    "Import leads from a CSV or Excel (.xlsx) file."
    site = site_named(args.site)
    if not site.exists():
        raise SiteError(f'no site "{args.site}"')
    path = Path(args.file)
    if not path.is_file():
        raise SiteError(f'no file {path}')
    run = run_import(
        site, path, args.source, dry_run=args.dry_run,
        consent_basis=args.consent_basis,
        consent_channel=args.consent_channel, login=args.user,
        progress=ProgressBar(sys.stderr))
    print(run.text)
    if run.report_path:
        print(f'Problems, row by row: {run.report_path}')


def errors_path(path):
    "leads.csv -> leads.errors.csv, beside it."
    return path.with_name(path.stem + '.errors.csv')


def use_site(site):
    """Point trytond at the site before it is first imported: it reads its
    configuration once, at import."""
    os.environ['TRYTOND_CONFIG'] = str(site.config_file)
    environ = site.environ()
    for name in SITE_PATHS:
        os.environ[name] = environ[name]
    if 'trytond.config' in sys.modules:
        from trytond import config
        config.update_etc(str(site.config_file))


def run_import(site, path, source, dry_run=False, consent_basis=None,
        consent_channel=None, login='admin', progress=None):
    """Import the file into the site's database and commit (unless a dry
    run). Returns an ImportRun."""
    use_site(site)
    from trytond.exceptions import UserError
    from trytond.pool import Pool
    from trytond.transaction import Transaction

    from kraya_crm.lead_import import ProblemReport

    database = site.database
    Pool(database).init()
    with Transaction().start(database, 0, readonly=True):
        try:
            user_id, context = user_context(login)
        except UserError as exception:
            raise SiteError(exception.message) from exception
    report_path = errors_path(path)
    try:
        with Transaction().start(database, user_id, context=context) as \
                transaction, open(path, 'rb') as file, \
                open(report_path, 'w', newline='', encoding='utf-8-sig') \
                as out:
            report = ProblemReport(out)
            summary = Pool().get('crm.lead').import_file(
                file, path.name, source=source, dry_run=dry_run,
                consent_channel=consent_channel, consent_basis=consent_basis,
                report=report, progress=progress, parallel=True)
            # In the site's language, which needs the transaction.
            text = summary.text()
            if dry_run:
                transaction.rollback()
            else:
                transaction.commit()
    except UserError as exception:
        report_path.unlink(missing_ok=True)
        raise SiteError(exception.message) from exception
    except BaseException:
        report_path.unlink(missing_ok=True)
        raise
    finally:
        if progress:
            progress.finish()
    if not report.count:
        report_path.unlink()
        report_path = None
    return ImportRun(summary, text, report_path)


def user_context(login):
    "The id and context (company, language...) of the user importing."
    from trytond.pool import Pool
    from trytond.transaction import Transaction
    User = Pool().get('res.user')
    users = User.search([('login', '=', login)])
    if not users:
        raise SiteError(f'no user "{login}" on this site')
    user, = users
    with Transaction().set_user(user.id):
        context = User.get_preferences(context_only=True)
    if not context.get('company'):
        from kraya_crm.capture import capture_company
        # A site without any company says so (NoCompanyError) first.
        capture_company()
        raise SiteError(f'user "{login}" has no company: set one in the desk '
            '(Administration › Users) before importing leads')
    return user.id, context


class ProgressBar:
    """A progress bar on a terminal (rows, rows/s, time left); on anything
    else a line now and then, for logs."""
    WIDTH = 30

    def __init__(self, stream):
        self.stream = stream
        self.tty = stream.isatty()
        self.start = time.monotonic()
        self.last = 0
        self.rows = 0
        self.shown = False

    def __call__(self, rows, fraction):
        self.rows = rows
        now = time.monotonic()
        if now - self.last < (0.1 if self.tty else 5) and fraction != 1:
            return
        self.last = now
        elapsed = max(now - self.start, 1e-6)
        speed = rows / elapsed
        if fraction:
            filled = int(self.WIDTH * fraction)
            bar = '█' * filled + '░' * (self.WIDTH - filled)
            left = elapsed * (1 - fraction) / fraction
            text = (f'{bar} {fraction:4.0%}  {rows:,} rows  '
                f'{speed:,.0f} rows/s  {left:.0f} s left')
        else:
            text = f'{rows:,} rows  {speed:,.0f} rows/s'
        if self.tty:
            self.stream.write('\r\x1b[K' + text)
        else:
            self.stream.write(text + '\n')
        self.stream.flush()
        self.shown = True

    def finish(self):
        if self.tty and self.shown:
            self.stream.write('\n')
            self.stream.flush()
