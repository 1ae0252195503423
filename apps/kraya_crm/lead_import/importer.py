"""One run of the importer over a file, batch after batch."""
import contextlib
import os
import time

from trytond import backend
from trytond.i18n import gettext
from trytond.tools import grouped_slice
from trytond.transaction import Transaction

from ..exceptions import LeadImportError
from .mapping import ColumnMap, StateLookup
from .parsing import RowParser
from .report import ImportSummary, ProblemReport
from .sorting import ChildSorter, sort_rows

# Rows matched and inserted at once: one insert, and one query for the
# people in the database unless the importer read all their keys at start.
BATCH_SIZE = 1000
# Rows of people already known attached at once (one query, one write).
KNOWN_SIZE = 500
# SQLite's page cache while importing (negative: in KiB, so 64 MB).
SQLITE_IMPORT_CACHE_KB = -64 * 1024


@contextlib.contextmanager
def roomy_sqlite_cache():
    """SQLite's page cache is 2 MB by default: an import's inserts into the
    lead table and its phone and email indexes outgrow it and spill pages
    mid-transaction, which doubles the time of the inserts."""
    if backend.name != 'sqlite':
        yield
        return
    cursor = Transaction().connection.cursor()
    cursor.execute('PRAGMA cache_size')
    size, = cursor.fetchone()
    cursor.execute('PRAGMA cache_size = %d' % SQLITE_IMPORT_CACHE_KB)
    try:
        yield
    finally:
        cursor.execute('PRAGMA cache_size = %d' % size)


class LeadImport:
    """One run of the importer over a file: rows are checked one by one
    and sorted (RowSorter, in a child process for ./crm import), then
    handled in batches. A batch costs one bulk insert of the new people
    and, unless the keys of every lead were read once at the start, one
    indexed query for the people already in the database; the rows of
    people already known are attached to their leads (filling empty
    fields only) a few hundred at a time."""

    def __init__(self, Lead, source=None, dry_run=False,
            consent_channel=None, consent_basis=None, report=None,
            progress=None, batch_size=BATCH_SIZE, parallel=False):
        self.Lead = Lead
        self.parallel = parallel and (os.cpu_count() or 1) > 1
        self.source = source
        self.dry_run = dry_run
        self.consent_channel = consent_channel
        self.consent_basis = consent_basis
        self.report = report if report is not None else ProblemReport()
        self.progress = progress
        self.batch_size = batch_size
        self.known_rows = []
        self.summary = None

    def run(self, lead_file):
        start = time.monotonic()
        self.summary = ImportSummary(lead_file.filename, self.dry_run)
        self._run(lead_file)
        self.summary.seconds = time.monotonic() - start
        return self.summary

    def _run(self, lead_file):
        summary = self.summary
        rows = lead_file.rows()
        columns = None
        for number, cells in rows:
            if not any(cells):
                continue
            columns = ColumnMap(cells)
            # A title or a blank row may come before the header.
            if columns or number >= 10:
                break
        if not columns:
            raise LeadImportError(gettext('kraya_crm.msg_import_no_header',
                    filename=lead_file.filename))
        summary.header_row = number
        summary.columns = columns.mapping_text()
        summary.ignored = columns.ignored
        self.columns = columns
        parser = RowParser(
            columns, StateLookup(self.Lead._import_subdivisions()))
        everyone = self.Lead._identity_texts() if self._reads_every_lead(
            lead_file) else None
        if self.parallel:
            sorted_rows = ChildSorter(parser, lead_file, rows, everyone)
            fraction_done = sorted_rows.fraction_done
        else:
            sorted_rows = sort_rows(parser, rows, everyone)
            fraction_done = lead_file.fraction_done
        batch = []
        for number, cells, values, problems, keys, repeat, known in (
                sorted_rows):
            if values is None:
                summary.empty += 1
                continue
            summary.rows += 1
            for problem in problems:
                self.report.add(number, columns.title(problem.field),
                    problem.text(), problem.fatal, columns.header, cells)
            if any(problem.fatal for problem in problems):
                summary.errors += 1
                continue
            if problems:
                summary.warnings += 1
            batch.append((values, keys, repeat, known, number, cells))
            if len(batch) >= self.batch_size:
                self._import_batch(batch)
                batch = []
                if self.progress:
                    self.progress(summary.rows, fraction_done())
        self._import_batch(batch)
        self._attach_known(force=True)
        if self.progress:
            self.progress(summary.rows, 1)

    def _reads_every_lead(self, lead_file):
        """Whether to read the keys of every lead once, and let the sorter
        tell the people the database knows, rather than look up the people
        of each batch: when the file has as many rows as there are leads,
        or more. A lookup costs the database three index probes a row."""
        return not self.Lead._leads_more_than(lead_file.estimated_rows())

    def _import_batch(self, batch):
        """Sort a batch of (values, keys, repeat, known, row number, cells)
        into people erased on their request (reported, never imported),
        new people, repeats in the file and known people; known is None
        when the sorter does not know the database's people: they are
        looked up."""
        Lead, summary = self.Lead, self.summary
        if not batch:
            return
        # New rows are inserted in bulk, past Lead.capture: the same
        # suppression check, once a batch.
        suppressed = Lead.suppressed_keys(
            set().union(*(keys for _, keys, *_ in batch)))
        lookup = set().union(*(keys for _, keys, repeat, known, *_ in batch
                if not repeat and known is None))
        found = Lead._known_identities(lookup) if lookup else set()
        new = []
        for values, keys, repeat, known, number, cells in batch:
            if keys & suppressed:
                summary.suppressed += 1
                self.report.add(number, '', gettext(
                        'kraya_crm.msg_import_row_suppressed'), True,
                    self.columns.header, cells)
            elif repeat:
                summary.duplicates += 1
                self.known_rows.append(values)
            elif known or keys & found:
                summary.matched += 1
                self.known_rows.append(values)
            else:
                summary.created += 1
                new.append(Lead._import_values(values, self.source))
        if self.dry_run:
            self.known_rows.clear()
            return
        if new:
            ids = Lead.create_in_bulk(new)
            # The worker hands the new people out by the assignment rules.
            Lead.queue_assignment(ids)
            self._opt_in(ids)
        self._attach_known()

    def _attach_known(self, force=False):
        """Attach the rows of people already known (their leads exist by
        now, those first met earlier in this file included) a few hundred
        at a time; Lead.capture gets any whose lead went away meanwhile."""
        if len(self.known_rows) < (1 if force else KNOWN_SIZE):
            return
        for rows in grouped_slice(self.known_rows, KNOWN_SIZE):
            ids, missing = self.Lead._attach_known(list(rows))
            if missing:
                results = self.Lead.capture(missing, source=self.source)
                ids += [lead.id for lead, _ in results if lead]
            self._opt_in(ids)
        self.known_rows = []

    def _opt_in(self, ids):
        if not self.consent_basis:
            return
        ids = sorted(set(ids))
        for sub_ids in grouped_slice(ids, KNOWN_SIZE):
            self.Lead.opt_in(self.Lead.browse(list(sub_ids)),
                self.consent_channel, 'import', self.consent_basis)
