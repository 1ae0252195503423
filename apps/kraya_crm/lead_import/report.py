"""What an import tells its user: the summary, and every problem with its
row number, column and cells."""
import csv

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
        self.warnings = 0
        self.columns = ''
        self.ignored = []
        self.header_row = None
        self.seconds = 0.0

    @property
    def rows_per_second(self):
        return self.rows / self.seconds if self.seconds else 0

    def text(self):
        would = self.dry_run
        lines = [
            f"{'Dry run: nothing was saved. ' if would else ''}"
            f"Read {self.rows:,} rows from {self.filename or 'the file'} "
            f"in {self.seconds:.1f} s.",
            f"{self.created:>9,} new leads"
            + (" would be created" if would else " created"),
            f"{self.matched:>9,} rows"
            + (" would attach" if would else " attached")
            + " to existing leads (same phone, WhatsApp or email)",
            f"{self.duplicates:>9,} rows repeat a person met earlier in the "
            "file",
            f"{self.errors:>9,} rows not imported because of errors",
            f"{self.warnings:>9,} rows imported without a value they had",
            ]
        if self.empty:
            lines.append(f"{self.empty:>9,} empty lines skipped")
        if self.columns:
            lines.append(f"Columns: {self.columns}")
        if self.ignored:
            lines.append("Ignored columns: " + ', '.join(self.ignored))
        return '\n'.join(lines)


class ProblemReport:
    """The problems of an import as CSV: row, column, problem, what
    happened to the row, then the row's own cells, so that the file can be
    fixed and imported again. Written as found: memory stays flat."""
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
            self.writer.writerow(self.HEADER + list(header))
            self._header_written = True
        self.writer.writerow([row, column, reason,
                "not imported" if fatal else "imported without this value",
                *cells])
