"""What an import tells its user: the summary, and every problem with its
row number, column and cells."""
import csv

from trytond.i18n import gettext

from ..spreadsheet import safe_row


class ImportSummary:
    "What an import did, or would do in a dry run."

    def __init__(self, filename, dry_run=False):
        self.filename = filename
        self.dry_run = dry_run
        self.rows = 0
        self.empty = 0
        self.created = 0
        self.matched = 0
        self.duplicates = 0
        self.errors = 0
        # Rows of people erased on their request: never imported.
        self.suppressed = 0
        self.warnings = 0
        self.columns = ''
        self.ignored = []
        self.header_row = None
        self.seconds = 0.0

    @property
    def rows_per_second(self):
        return self.rows / self.seconds if self.seconds else 0

    def text(self):
        "The summary the desk and ./crm import show, a line a count."
        would = '_would' if self.dry_run else ''

        def line(name, count=None, **params):
            if count is not None:
                params['count'] = f'{count:>9,}'
            return gettext(f'kraya_crm.msg_import_summary_{name}', **params)
        read = line('read', rows=f'{self.rows:,}',
            filename=self.filename or gettext(
                'kraya_crm.msg_import_summary_the_file'),
            seconds=f'{self.seconds:.1f}')
        lines = [
            (line('dry_run') + ' ' + read) if self.dry_run else read,
            line('created' + would, self.created),
            line('matched' + would, self.matched),
            line('duplicates', self.duplicates),
            line('errors', self.errors),
            line('warnings', self.warnings),
            ]
        if self.suppressed:
            lines.append(line('suppressed', self.suppressed))
        if self.empty:
            lines.append(line('empty', self.empty))
        if self.columns:
            lines.append(line('columns', columns=self.columns))
        if self.ignored:
            lines.append(line('ignored', columns=', '.join(self.ignored)))
        return '\n'.join(lines)


class ProblemReport:
    """The problems of an import as CSV: row, column, problem, what
    happened to the row, then the row's own cells, so that the file can be
    fixed and imported again (the import reads its cells as typed, though
    they are written safe for a spreadsheet). Written as found: memory
    stays flat."""
    HEADER = ['Row', 'Column', 'Problem', 'Outcome']

    def __init__(self, stream=None):
        self.stream = stream
        self.writer = csv.writer(stream) if stream is not None else None
        self.count = 0
        self._header_written = False

    def add(self, row, column, reason, fatal, header, cells):
        self.count += 1
        if self.writer is None:
            return
        if not self._header_written:
            self.writer.writerow(safe_row(self.HEADER + list(header)))
            self._header_written = True
        self.writer.writerow(safe_row([row, column, reason,
                gettext('kraya_crm.msg_import_row_refused' if fatal
                    else 'kraya_crm.msg_import_value_dropped'),
                *cells]))
