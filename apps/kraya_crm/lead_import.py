"""Import of leads from CSV and XLSX files, from the desk (the Import Leads
wizard) and from `./crm import`.

The file is read as a stream: rows are parsed, checked and normalised one
by one and imported in batches; people already known (by phone, WhatsApp
number or email) are attached to as Lead.capture does, not duplicated, and
memory stays flat whatever the size of the file. A bad row is reported
with its row number, column and reason while the good rows go in. Why it
does not hand every row to Lead.capture: docs/decisions.md."""
import codecs
import collections
import contextlib
import contextvars
import csv
import datetime as dt
import functools
import io
import multiprocessing
import os
import re
import sqlite3
import time
import unicodedata
from decimal import Decimal
from itertools import chain, islice

from sql import Column, Select
from sql.aggregate import Count
from sql.functions import CurrentTimestamp

from trytond import backend
from trytond.exceptions import UserError
from trytond.i18n import gettext
from trytond.model import ModelView, fields
from trytond.model.exceptions import AccessError
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Bool, Eval
from trytond.tools import grouped_slice
from trytond.transaction import Transaction, without_check_access
from trytond.wizard import Button, StateTransition, StateView, Wizard

from .capture import (
    CAPTURE_FIELDS, IDENTITY_FIELDS, capture_company, identity_keys)
from .consent import CONSENT_CHANNELS
from .contact import InvalidPhone, normalize_email, normalize_phone

# Rows matched and inserted at once: one insert, and one query for the
# people in the database unless the importer read all their keys at start.
BATCH_SIZE = 1000
# Rows of people already known attached at once (one query, one write).
KNOWN_SIZE = 500
# New leads browsed together for the hooks that follow their insert. The
# hooks read little of them (a slice is read at once when one is read), and
# browsing n records costs Tryton n² checks.
BROWSE_SLICE = 20
# How many problems the desk shows inline; the CSV report has all of them.
SHOWN_PROBLEMS = 200
SNIFF_BYTES = 64 * 1024
# SQLite's page cache while importing (negative: in KiB, so 64 MB).
SQLITE_IMPORT_CACHE_KB = -64 * 1024

# Lead field -> header spellings, compared lower-case without spaces or
# punctuation ("Mobile No." == "mobileno"). Exact spellings win over the
# keyword rules below.
HEADER_SYNONYMS = {
    'name': [
        'name', 'fullname', 'contact', 'contactname', 'contactperson',
        'customer', 'customername', 'client', 'clientname', 'leadname',
        'person', 'personname', 'buyer', 'buyername'],
    'first_name': ['firstname', 'givenname', 'fname'],
    'last_name': ['lastname', 'surname', 'familyname', 'lname'],
    'phone': [
        'mobile', 'phone', 'contactnumber', 'contactno', 'mobileno',
        'mobilenumber', 'phoneno', 'phonenumber', 'cell', 'cellphone',
        'telephone', 'tel', 'mob', 'mobno', 'ph', 'phno'],
    'whatsapp': [
        'whatsapp', 'whatsappnumber', 'whatsappno', 'whatsappmobile', 'wa',
        'wanumber', 'wano'],
    'email': ['email', 'emailid', 'emailaddress', 'mail', 'mailid'],
    'city': ['city', 'town', 'location', 'citytown'],
    'state': ['state', 'stateut', 'province', 'region', 'statename'],
    'company_name': [
        'company', 'companyname', 'organisation', 'organization', 'firm',
        'firmname', 'business', 'businessname'],
    'campaign': [
        'campaign', 'campaignname', 'adname', 'adsetname', 'utmcampaign'],
    'notes': [
        'notes', 'note', 'remarks', 'remark', 'comments', 'comment',
        'requirement', 'requirements', 'message', 'description', 'query',
        'enquiry', 'inquiry', 'querymessage'],
    }
# When no exact spelling matches: a header word that names the field
# ("Sender Mobile", "Customer Email ID"), tried in this order.
HEADER_KEYWORDS = [
    ('whatsapp', {'whatsapp', 'wa'}),
    ('email', {'email', 'mail'}),
    ('phone', {'mobile', 'phone', 'cell', 'telephone'}),
    ('company_name', {'company', 'firm', 'organisation', 'organization'}),
    ('first_name', {'first'}),
    ('last_name', {'last', 'surname'}),
    ('name', {'name'}),
    ('city', {'city', 'town'}),
    ('state', {'state'}),
    ('campaign', {'campaign'}),
    ('notes', {'note', 'notes', 'remark', 'remarks', 'comment', 'comments',
            'requirement', 'message'}),
    ]
# What the report calls a lead field when the file has no column for it.
FIELD_LABELS = {
    'name': "Name", 'phone': "Mobile", 'whatsapp': "WhatsApp",
    'email': "Email", 'city': "City", 'state': "State",
    'company_name': "Company", 'campaign': "Campaign", 'notes': "Notes",
    'first_name': "First Name", 'last_name': "Last Name",
    }
# Cells that mean "nothing" in the sheets people keep.
BLANKS = {'', '-', '--', 'na', 'n/a', 'nil', 'none', 'null', '#n/a', 'nan'}
YES_NO = {'yes', 'y', 'true', '1', 'haan', 'no', 'n', 'false', '0', 'nahi'}
EMAIL = re.compile(r'^[^@\s,;]+@[^@\s,;]+\.[^@\s,;]+$')
# 9.19876543210E+11 (Excel's scientific notation for a long number)
SCIENTIFIC = re.compile(r'^\+?(\d)(?:\.(\d+))?[eE]\+?(\d+)$')
DECIMAL_ZERO = re.compile(r'^(\+?\d+)\.0+$')

# State spellings people use beyond the names and ISO codes: old names,
# vehicle-registration codes, common misspellings -> ISO 3166-2 code.
STATE_ALIASES = {
    'orissa': 'IN-OD', 'or': 'IN-OD', 'od': 'IN-OD',
    'pondicherry': 'IN-PY', 'pondy': 'IN-PY', 'pudducherry': 'IN-PY',
    'newdelhi': 'IN-DL', 'nctofdelhi': 'IN-DL', 'nctdelhi': 'IN-DL',
    'jandk': 'IN-JK', 'jammuandkashmir': 'IN-JK', 'jammukashmir': 'IN-JK',
    'uttaranchal': 'IN-UK', 'ua': 'IN-UK', 'ut': 'IN-UK', 'uk': 'IN-UK',
    'ct': 'IN-CG', 'cg': 'IN-CG', 'chattisgarh': 'IN-CG',
    'chhatisgarh': 'IN-CG', 'chatisgarh': 'IN-CG',
    'tg': 'IN-TS', 'ts': 'IN-TS', 'telengana': 'IN-TS',
    'dnh': 'IN-DH', 'dd': 'IN-DH', 'damananddiu': 'IN-DH',
    'dadraandnagarhaveli': 'IN-DH',
    'aandn': 'IN-AN', 'andaman': 'IN-AN', 'andamanandnicobar': 'IN-AN',
    'maharastra': 'IN-MH', 'gujrat': 'IN-GJ', 'kerela': 'IN-KL',
    'hariyana': 'IN-HR', 'bengal': 'IN-WB',
    }


class LeadImportError(UserError):
    "The file cannot be imported at all (as opposed to a bad row)."


# The ids of leads whose values the importer already checked field by field.
_checked_ids = contextvars.ContextVar(
    'kraya_crm_checked_ids', default=frozenset())
# Whether the values being created are the importer's, normalised already.
_normalised = contextvars.ContextVar('kraya_crm_normalised', default=False)


def compact(text):
    "'Mobile No.' -> 'mobileno', 'Jammu & Kashmīr' -> 'jammuandkashmir'"
    return ''.join(words(text))


def words(text):
    "'Sender_Mobile No.' -> ['sender', 'mobile', 'no']"
    text = unicodedata.normalize('NFKD', str(text or ''))
    text = ''.join(c for c in text if not unicodedata.combining(c))
    text = text.lower().replace('&', ' and ')
    return re.findall(r'[a-z0-9]+', text)


def cell_text(value):
    "A cell as text: XLSX numbers without the '.0' Excel adds to them."
    if value is None:
        return ''
    if isinstance(value, bool):
        return 'TRUE' if value else 'FALSE'
    if isinstance(value, float):
        if value.is_integer():
            return '%d' % value
        return repr(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    return str(value).strip()


class _CountingReader(io.RawIOBase):
    "A binary file that counts the bytes read, for the progress bar."

    def __init__(self, file):
        self.file = file
        self.count = 0

    def readable(self):
        return True

    def readinto(self, buffer):
        data = self.file.read(len(buffer))
        buffer[:len(data)] = data
        self.count += len(data)
        return len(data)


class LeadFile:
    """The rows of a CSV or XLSX file, read as a stream: `rows()` yields
    (row number as the spreadsheet shows it, [cell text])."""

    def __init__(self, file, filename=None):
        "file: a seekable binary file object."
        self.file = file
        self.filename = filename or ''
        self.size = self._size()
        self.encoding = None
        self.sheet = None
        self._fraction = None
        self._row_estimate = None
        head = file.read(8)
        file.seek(0)
        if head.startswith(b'PK\x03\x04'):
            self.kind = 'xlsx'
        elif head.startswith(b'\xd0\xcf\x11\xe0'):
            raise LeadImportError(gettext('kraya_crm.msg_import_old_excel',
                    filename=self.filename))
        else:
            self.kind = 'csv'

    def _size(self):
        position = self.file.tell()
        size = self.file.seek(0, io.SEEK_END)
        self.file.seek(position)
        return size

    def fraction_done(self):
        "How much of the file has been read, 0 to 1 (None when unknown)."
        return self._fraction() if self._fraction else None

    def estimated_rows(self):
        """About how many rows the file has, once reading has begun: from
        the lines of its first 64 KB (CSV) or the sheet's size (XLSX)."""
        return self._row_estimate or 0

    def rows(self):
        if self.kind == 'xlsx':
            return self._xlsx_rows()
        return self._csv_rows()

    def _detect_encoding(self):
        """UTF-8 (with or without BOM), else Windows-1252, the two encodings
        Excel writes CSV in; UTF-16 when it starts with its BOM. Decodes the
        whole file once as a stream, so a late non-UTF-8 byte is caught."""
        head = self.file.read(4)
        self.file.seek(0)
        if head.startswith((b'\xff\xfe', b'\xfe\xff')):
            return 'utf-16'
        decoder = codecs.getincrementaldecoder('utf-8-sig')()
        try:
            while chunk := self.file.read(1 << 20):
                decoder.decode(chunk)
            decoder.decode(b'', final=True)
            return 'utf-8-sig'
        except UnicodeDecodeError:
            return 'cp1252'
        finally:
            self.file.seek(0)

    def _csv_rows(self):
        self.encoding = self._detect_encoding()
        sample = self.file.read(SNIFF_BYTES).decode(
            self.encoding, errors='ignore')
        self.file.seek(0)
        self._row_estimate = self.size * sample.count('\n') // max(
            min(self.size, SNIFF_BYTES), 1)
        try:
            dialect = csv.Sniffer().sniff(sample, delimiters=',;\t|')
        except csv.Error:
            dialect = csv.excel
        counter = _CountingReader(self.file)
        text = io.TextIOWrapper(io.BufferedReader(counter),
            encoding=self.encoding, errors='replace', newline='')
        size = self.size or 1
        self._fraction = lambda: min(counter.count / size, 1)
        for number, cells in enumerate(csv.reader(text, dialect), 1):
            yield number, [c.strip() for c in cells]

    def _xlsx_rows(self):
        try:
            import openpyxl
        except ImportError as exception:
            raise LeadImportError(gettext(
                    'kraya_crm.msg_import_xlsx_unsupported')) from exception
        try:
            workbook = openpyxl.load_workbook(
                self.file, read_only=True, data_only=True)
        except Exception as exception:
            raise LeadImportError(gettext('kraya_crm.msg_import_unreadable',
                    filename=self.filename, error=str(exception))) \
                from exception
        try:
            sheet = workbook.worksheets[0]
            self.sheet = sheet.title
            total = self._row_estimate = sheet.max_row or 0
            number = 0
            self._fraction = lambda: min(number / total, 1) if total else None
            for number, values in enumerate(
                    sheet.iter_rows(values_only=True), 1):
                yield number, [cell_text(v) for v in values]
        finally:
            workbook.close()


class ColumnMap:
    "Which column of the file holds which lead field, found by its header."

    def __init__(self, header):
        self.header = header
        self.index = {}
        self.ignored = []
        for position, title in enumerate(header):
            if not title.strip():
                continue
            field = self.field_of(title)
            if field and field not in self.index:
                self.index[field] = position
            else:
                self.ignored.append(title)

    @staticmethod
    def field_of(title):
        key = compact(title)
        for field, spellings in HEADER_SYNONYMS.items():
            if key in spellings:
                return field
        tokens = set(words(title))
        for field, keywords in HEADER_KEYWORDS:
            if tokens & keywords:
                return field

    def __bool__(self):
        "Whether the header names a column to find a person by."
        return bool(self.index.keys()
            & {'name', 'first_name', 'phone', 'whatsapp', 'email'})

    def title(self, field):
        "The file's header of the field's column, for the report."
        if field in self.index:
            return self.header[self.index[field]]
        return FIELD_LABELS.get(field, field)

    def cells_of(self, cells):
        "field -> text of the row's mapped cells that are not blank."
        found = {}
        for field, position in self.index.items():
            if position < len(cells) and (text := cells[position]) \
                    and text.lower() not in BLANKS:
                found[field] = text
        return found

    def mapping_text(self):
        return ', '.join(f'{self.header[i]} → {FIELD_LABELS[f]}'
            for f, i in sorted(self.index.items(), key=lambda x: x[1]))


class StateLookup:
    """Indian states and union territories by name, ISO code ("MH",
    "IN-MH") or a common spelling, case-insensitively."""

    def __init__(self, subdivisions):
        "subdivisions: [(id, code, name)] of India's top-level subdivisions"
        self.by_key = {}
        by_code = {}
        for id_, code, name in subdivisions:
            by_code[code.upper()] = id_
            self.by_key[compact(name)] = id_
            self.by_key[compact(code)] = id_
            self.by_key[compact(code.split('-', 1)[-1])] = id_
        for alias, code in STATE_ALIASES.items():
            if code in by_code:
                self.by_key.setdefault(alias, by_code[code])
        self.names = sorted(k for k in self.by_key if len(k) > 3)
        self.cache = {}

    def get(self, text):
        "The subdivision id, None when unknown."
        if text not in self.cache:
            key = compact(text)
            found = self.by_key.get(key)
            if found is None and len(key) >= 4:
                # "Andaman & Nicobar", "Maha": a unique beginning of a name.
                ids = {self.by_key[n] for n in self.names if n.startswith(key)}
                if len(ids) == 1:
                    found, = ids
            self.cache[text] = found
        return self.cache[text]


class RowParser:
    "Turns a row's cells into lead values, or says what is wrong with it."

    def __init__(self, columns, states):
        self.columns = columns
        self.states = states

    def parse(self, cells):
        """Return (values, problems): problems are (field, reason, fatal);
        a fatal problem keeps the row out, another drops only the value."""
        given = self.columns.cells_of(cells)
        values, problems = {}, []
        name = given.get('name') or ' '.join(filter(None, [
                    given.get('first_name'), given.get('last_name')]))
        if name:
            values['name'] = ' '.join(name.split())
        for field in ('company_name', 'city', 'campaign', 'notes'):
            if field in given:
                values[field] = given[field]
        for field in ('phone', 'whatsapp'):
            text = given.get(field)
            if not text or (field == 'whatsapp' and text.lower() in YES_NO):
                # A yes/no WhatsApp column: the mobile is (not) on WhatsApp.
                continue
            try:
                values[field] = phone_number(text)
            except InvalidPhone as exception:
                problems.append((field, str(exception), True))
        if 'whatsapp' in values and values['whatsapp'] == values.get('phone'):
            del values['whatsapp']
        if text := given.get('email'):
            email = normalize_email(text)
            if EMAIL.match(email):
                values['email'] = email
            else:
                problems.append(
                    ('email', f"not an email address: {text!r}", True))
        if text := given.get('state'):
            subdivision = self.states.get(text)
            if subdivision:
                values['subdivision'] = subdivision
            else:
                problems.append(('state',
                        f"not an Indian state or union territory: {text!r}; "
                        "imported without a state", False))
        if not problems and not identity_keys(values):
            field = next((f for f in ('phone', 'email', 'whatsapp')
                    if f in self.columns.index), 'phone')
            problems.append((field, "no phone, WhatsApp number or email: "
                    "nobody could reach this lead", True))
        return values, problems


def phone_number(text):
    """The phone number in E.164. Undoes what Excel does to long numbers
    (9.19876543210E+11, 919876543210.0) and refuses the ones whose digits
    Excel rounded away (9.19877E+11)."""
    text = text.strip()
    if '.' not in text:
        pass
    elif match := DECIMAL_ZERO.match(text):
        text = match.group(1)
    elif match := SCIENTIFIC.match(text):
        first, rest, exponent = match.groups()
        digits = 1 + len(rest or '')
        if digits < int(exponent) + 1:
            raise InvalidPhone(f"Excel rounded this number to {text}: "
                "format the column as Text and export it again")
        text = '%d' % Decimal(text.lstrip('+'))
    try:
        phone = normalize_phone(text)
    except InvalidPhone:
        phone = None
    if phone is None:
        raise InvalidPhone(f"not a valid phone number: {text!r} (give 10 "
            "digits for India, or + and the country code)")
    return phone


class RowSorter:
    """Parses rows and sorts the good ones: for each, the identity keys of
    its person, whether that person was met earlier in the file and, when
    the sorter was given the keys of the people in the database
    (add_known), whether the database knows them. Keys are kept in a
    private on-disk SQLite database, so that memory stays flat however
    long the file is. Rows must come in file order, chunk after chunk."""

    def __init__(self, parser, knows=False):
        "knows: whether add_known will be given all the database's keys."
        self.parser = parser
        self.knows = knows
        # An empty name is a temporary database on disk, removed on close;
        # nothing to recover after a crash, and 16 MB of cache at most.
        self.db = sqlite3.connect('')
        for pragma in ['journal_mode = OFF', 'synchronous = OFF',
                'cache_size = -16000']:
            self.db.execute('PRAGMA ' + pragma)
        for table in ['seen', 'known']:
            self.db.execute(
                f'CREATE TABLE {table} (key TEXT PRIMARY KEY) WITHOUT ROWID')

    def add_known(self, texts):
        "Keys (key_text) of people the database has a lead for."
        self.db.executemany('INSERT OR IGNORE INTO known VALUES (?)',
            ((k,) for k in texts))

    def sort(self, chunk):
        """[(values, problems, keys, repeat, known)] for a chunk of (number,
        cells): values is None for an empty row; keys, repeat and known are
        None for a row with an error that keeps it out, known is None too
        when the sorter does not know the database's people."""
        results, good = [], []
        for _, cells in chunk:
            if not any(cells):
                results.append([None] * 5)
                continue
            values, problems = self.parser.parse(cells)
            result = [values, problems, None, None, None]
            if not any(fatal for _, _, fatal in problems):
                result[2] = identity_keys(values)
                good.append(result)
            results.append(result)
        texts = [{key_text(k) for k in result[2]} for result in good]
        every = set().union(*texts)
        met = self._among('seen', every)
        known = self._among('known', every) if self.knows else None
        for result, keys in zip(good, texts):
            result[3] = bool(keys & met)
            if known is not None:
                result[4] = bool(keys & known)
            met |= keys
        self.db.executemany('INSERT OR IGNORE INTO seen VALUES (?)',
            ((k,) for k in every))
        return results

    def _among(self, table, keys):
        "The keys among these that the table has."
        found = set()
        for sub in grouped_slice(sorted(keys), 500):
            sub = list(sub)
            found.update(k for k, in self.db.execute(
                    f'SELECT key FROM {table} WHERE key IN (%s)'
                    % ','.join('?' * len(sub)), sub))
        return found

    def close(self):
        self.db.close()


def sort_rows(parser, rows, known=None, size=2000):
    """(number, cells, values, problems, keys, repeat, known) for each
    row, as RowSorter.sort gives them; `known`: None, or lists of the key
    texts of all the people in the database."""
    sorter = RowSorter(parser, knows=known is not None)
    try:
        for texts in known or []:
            sorter.add_known(texts)
        for chunk in _slices_of(rows, size):
            yield from _joined(chunk, sorter.sort(chunk))
    finally:
        sorter.close()


def _joined(chunk, sorted_):
    for (number, cells), result in zip(chunk, sorted_):
        yield number, cells, *result


class ChildSorter:
    """sort_rows in a child process that reads the file too, a few chunks
    ahead of the caller, which works the database meanwhile. Only what the
    caller needs comes back: a row's cells only when it has problems (for
    the report). Iterating gives what sort_rows gives; fraction_done() says
    how far the child has read. The caller must not read `rows` itself:
    the child, forked, goes on with the caller's copy of the file."""

    def __init__(self, parser, lead_file, rows, known=None, size=2000,
            ahead=3):
        self.args = (parser, lead_file, rows, known is not None, size)
        self.known = known
        self.ahead = ahead
        self.fraction = None

    def __iter__(self):
        context = multiprocessing.get_context('fork')
        with context.Pool(1, _start_child, self.args) as pool:
            # A pool of one takes the requests in order: the known keys
            # first, a few lists at a time (memory stays flat), then each
            # request reads the next chunk. An empty answer means the file
            # has ended.
            waiting = collections.deque()
            for texts in self.known or []:
                waiting.append(pool.apply_async(_add_known, (texts,)))
                if len(waiting) > self.ahead:
                    waiting.popleft().get()
            for added in waiting:
                added.get()
            waiting = collections.deque(
                pool.apply_async(_sort_next_chunk) for _ in range(self.ahead))
            while True:
                results, self.fraction = waiting.popleft().get()
                if not results:
                    break
                waiting.append(pool.apply_async(_sort_next_chunk))
                yield from results

    def fraction_done(self):
        return self.fraction


_child = None


def _start_child(parser, lead_file, rows, knows, size):
    global _child
    _child = (RowSorter(parser, knows=knows), lead_file,
        _slices_of(rows, size))


def _add_known(texts):
    sorter, _, _ = _child
    sorter.add_known(texts)


def _sort_next_chunk():
    sorter, lead_file, chunks = _child
    chunk = next(chunks, [])
    # The cells go back only for the report of the row's problems.
    results = [(number, cells if problems else None, values, problems, *rest)
        for number, cells, values, problems, *rest in _joined(
            chunk, sorter.sort(chunk))]
    return results, lead_file.fraction_done()


def _slices_of(iterable, size):
    "Lists of at most size items of an iterable, read as they are needed."
    iterator = iter(iterable)
    while chunk := list(islice(iterator, size)):
        yield chunk


def key_text(key):
    return '%s:%s' % key


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


def _sql_format(field):
    """The field's sql_format; for text, which the importer hands over
    cleaned, only the strip that sql_format would do. Other values (states,
    the source) repeat: each is formatted once."""
    if isinstance(field, fields.Char) and field.strip is True:
        return str.strip
    if isinstance(field, fields.Char) and not field.strip:
        return str
    return functools.lru_cache(maxsize=1024)(field.sql_format)


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
            for field, reason, fatal in problems:
                self.report.add(number, columns.title(field), reason, fatal,
                    columns.header, cells)
            if any(fatal for _, _, fatal in problems):
                summary.errors += 1
                continue
            if problems:
                summary.warnings += 1
            batch.append((values, keys, repeat, known))
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
        """Sort a batch of (values, keys, repeat, known) into new people,
        repeats in the file and known people; known is None when the
        sorter does not know the database's people: they are looked up."""
        Lead, summary = self.Lead, self.summary
        if not batch:
            return
        lookup = set().union(*(keys for _, keys, repeat, known in batch
                if not repeat and known is None))
        found = Lead._known_identities(lookup) if lookup else set()
        new = []
        for values, keys, repeat, known in batch:
            if repeat:
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
            self._opt_in(Lead.create_in_bulk(new))
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
                ids += [lead.id for lead, _ in results]
            self._opt_in(ids)
        self.known_rows = []

    def _opt_in(self, ids):
        if not self.consent_basis:
            return
        ids = sorted(set(ids))
        for sub_ids in grouped_slice(ids, KNOWN_SIZE):
            self.Lead.opt_in(self.Lead.browse(list(sub_ids)),
                self.consent_channel, 'import', self.consent_basis)


class Lead(metaclass=PoolMeta):
    __name__ = 'crm.lead'

    @classmethod
    def import_file(cls, file, filename=None, source=None, dry_run=False,
            consent_channel=None, consent_basis=None, report=None,
            progress=None, batch_size=BATCH_SIZE, parallel=False):
        """Import the leads of a CSV or XLSX file (a seekable binary file
        object) and return an ImportSummary. People already known by phone,
        WhatsApp number or email are attached to, not duplicated. Consent
        is recorded on `consent_channel` only with a `consent_basis`.
        In a dry run nothing is written and the summary says what would be.
        `report` (ProblemReport) receives the problems as they are found;
        `progress(rows, fraction)` is called after each batch. With
        `parallel` the rows are parsed in a child process (for ./crm import;
        not inside the server)."""
        pool = Pool()
        ModelAccess = pool.get('ir.model.access')
        Source = pool.get('crm.source')
        if not dry_run:
            for mode in ('create', 'write'):
                if not ModelAccess.check(cls.__name__, mode,
                        raise_exception=False):
                    raise AccessError(gettext(
                            'kraya_crm.msg_import_no_access'))
        if isinstance(source, str):
            code = source
            source = Source.get_by_code(code)
            if not source:
                raise LeadImportError(gettext(
                        'kraya_crm.msg_import_unknown_source', source=code,
                        sources=', '.join(s.code for s in Source.search([]))))
        consent_basis = (consent_basis or '').strip() or None
        # The importer's company, else the site's; none raises NoCompanyError.
        company = Transaction().context.get('company') or capture_company()
        run = LeadImport(cls, source=source, dry_run=dry_run,
            consent_channel=consent_channel or 'whatsapp',
            consent_basis=consent_basis, report=report, progress=progress,
            batch_size=batch_size, parallel=parallel)
        # One person, one lead: identities are matched across all leads,
        # whoever may see them (see docs/decisions.md).
        with without_check_access(), roomy_sqlite_cache(), \
                Transaction().set_context(company=company):
            return run.run(LeadFile(file, filename))

    @classmethod
    def _import_subdivisions(cls):
        Subdivision = Pool().get('country.subdivision')
        return [(s.id, s.code, s.name) for s in Subdivision.search([
                    ('country.code', '=', 'IN'), ('parent', '=', None)])]

    @classmethod
    def _of_active_leads(cls, table, where=None):
        "The condition, for the active leads only (identities are theirs)."
        if 'active' not in cls._fields:
            return where
        return table.active if where is None else where & table.active

    @classmethod
    def _leads_more_than(cls, count):
        """Whether there are more than count active leads, counted exactly
        (the estimate of PostgreSQL's statistics misses an open transaction's
        leads) but no further than count + 1."""
        table = cls.__table__()
        cursor = Transaction().connection.cursor()
        cursor.execute(*table.select(table.id,
                where=cls._of_active_leads(table),
                limit=count + 1).select(Count()))
        return cursor.fetchone()[0] > count

    @classmethod
    def _identity_texts(cls, size=10000):
        """Lists of the key texts (key_text) of all the active leads, read
        `size` leads at a time in the order of their ids."""
        table = cls.__table__()
        cursor = Transaction().connection.cursor()
        last = 0
        while True:
            cursor.execute(*table.select(table.id,
                    *(Column(table, n) for n in IDENTITY_FIELDS),
                    where=cls._of_active_leads(table, table.id > last),
                    order_by=[table.id.asc], limit=size))
            rows = cursor.fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield [key_text(k) for _, *row in rows
                for k in identity_keys(dict(zip(IDENTITY_FIELDS, row)))]

    @classmethod
    def _known_identities(cls, keys):
        "The keys among these that an active lead already has."
        found = set()
        for lead in cls._identity_rows(keys, IDENTITY_FIELDS):
            found |= identity_keys(lead)
        return found & set(keys)

    @classmethod
    def _attach_known(cls, vlist):
        """Attach rows of people who already have a lead, the way
        Lead.capture does: each row goes to the oldest active lead with one
        of its keys and fills that lead's empty fields only (the first row
        to give a value wins). Return the ids of the leads, row by row, and
        the rows whose lead was not found."""
        leads = cls._identity_rows(
            set().union(*(identity_keys(v) for v in vlist)), CAPTURE_FIELDS)
        owners, current = {}, {}
        for lead in leads:
            current[lead['id']] = lead
            for key in identity_keys(lead):
                owners.setdefault(key, lead['id'])
        ids, missing, fills = [], [], {}
        for values in vlist:
            keys = identity_keys(values)
            lead_id = next(
                (owners[k] for k in sorted(keys) if k in owners), None)
            if lead_id is None:
                missing.append(values)
                continue
            ids.append(lead_id)
            lead = current[lead_id]
            for name in CAPTURE_FIELDS:
                if values.get(name) and not lead[name]:
                    lead[name] = fills.setdefault(lead_id, {})[name] = \
                        values[name]
            for key in keys:
                owners.setdefault(key, lead_id)
        if fills:
            cls.fill_in_bulk(fills)
        return ids, missing

    @staticmethod
    def _import_values(values, source):
        """The values of a new lead, as Lead.capture makes them, from the
        parser's values (capture fields only, never None), completed."""
        values.setdefault('name', values.get('phone')
            or values.get('whatsapp') or values.get('email'))
        if source:
            values['source'] = source.id
        return values

    @classmethod
    def _in_bulk(cls, vlist):
        "Only plain column values go in bulk (no x2many, translation...)."
        for name in set().union(*vlist):
            field = cls._fields[name]
            if hasattr(field, 'set') or getattr(field, 'translate', False):
                return False
        return not (cls._history or cls._path_fields or cls._mptt_fields)

    @classmethod
    def create_in_bulk(cls, vlist):
        """Create leads from values the importer checked and return their
        ids: what ModelSQL.create does (access checks, preprocess_values,
        defaults, create_uid/create_date, then triggers, check_modification,
        on_modification, validate and record rules) with one prepared
        INSERT for all rows and without the per-field checks of values
        already checked (required, domains, selections)."""
        if not cls._in_bulk(vlist):
            return [lead.id for lead in cls.create(vlist)]
        transaction = Transaction()
        database = transaction.database
        cursor = transaction.connection.cursor()
        table = cls.__table__()
        normalised = _normalised.set(True)
        try:
            vlist = cls._before_create(vlist)
        finally:
            _normalised.reset(normalised)
        magic = {'id', 'create_uid', 'create_date', 'write_uid', 'write_date'}
        storable = [n for n, f in cls._fields.items()
            if n not in magic and not hasattr(f, 'set')
            and not (isinstance(f, fields.Function) and not f.setter)]
        defaults = cls._clean_defaults(
            cls.default_get(storable, with_rec_name=False))
        given = sorted(set().union(*vlist) - magic)
        # Columns no row gives take their default: formatted once.
        constant = [n for n in sorted(defaults) if n not in given]
        head = [transaction.user, cls._create_date(cursor)]
        tail = [cls._fields[n].sql_format(defaults[n]) for n in constant]
        formats = [(n, _sql_format(cls._fields[n]), defaults.get(n))
            for n in given]
        params = []
        for values in vlist:
            row = head.copy()
            for name, sql_format, default in formats:
                value = values.get(name, default)
                row.append(sql_format(value) if value is not None else None)
            params.append(row + tail)
        columns = [table.create_uid, table.create_date] + [
            Column(table, n) for n in given + constant]

        def insert(columns):
            "The statement once, with placeholders for each row's values."
            query, _ = tuple(table.insert(columns, [[0] * len(columns)]))
            return query

        ids = cls._next_ids(len(params))
        first = []
        if not ids:
            # The first row takes the next id; on SQLite it also takes the
            # write lock until commit, so the other rows can follow it.
            cursor.execute(insert(columns), params[0])
            first = [database.lastid(cursor)]
            params = params[1:]
            if backend.name == 'sqlite':
                ids = range(first[0] + 1, first[0] + 1 + len(params))
        if ids:
            for row, id_ in zip(params, ids):
                row.append(id_)
            if backend.name == 'postgresql':
                cls._copy_rows(columns + [table.id], params)
            else:
                cursor.executemany(insert(columns + [table.id]), params)
            ids = first + list(ids)
        else:
            query = insert(columns)
            ids = first
            for row in params:
                cursor.execute(query, row)
                ids.append(database.lastid(cursor))
        checked = _checked_ids.set(frozenset(ids))
        try:
            cls._after_create_in_bulk(ids)
        finally:
            _checked_ids.reset(checked)
        cls._ModelSQL__check_domain_rule(ids, 'create')
        return ids

    @classmethod
    def fill_in_bulk(cls, fills):
        """Write each lead its own values ({lead id: values}, fields the
        importer checked): what ModelSQL.write does, with its own checks and
        hooks before and after, but one prepared UPDATE per set of fields
        instead of one statement per lead."""
        leads = cls.browse(list(fills))
        args = list(chain.from_iterable(([l], fills[l.id]) for l in leads))
        if not cls._in_bulk(fills.values()):
            cls.write(*args)
            return
        ids, field_names, on_write, trigger_eligibles, *args = (
            cls._before_write(*args))
        cls._ModelSQL__check_timestamp(ids)
        cls._ModelSQL__check_domain_rule(ids, 'write')
        transaction = Transaction()
        cursor = transaction.connection.cursor()
        table = cls.__table__()
        by_names = collections.defaultdict(list)
        for (lead,), values in zip(args[::2], args[1::2]):
            names = tuple(sorted(values))
            by_names[names].append([transaction.user]
                + [cls._fields[n].sql_format(values[n]) for n in names]
                + [lead.id])
        for names, params in by_names.items():
            columns = [table.write_uid] + [Column(table, n) for n in names]
            query, _ = tuple(table.update(
                    columns + [table.write_date],
                    [0] * len(columns) + [CurrentTimestamp()],
                    where=table.id == 0))
            cursor.executemany(query, params)
        cls._ModelSQL__check_domain_rule(ids, 'write')
        cls._after_write(ids, field_names, on_write, trigger_eligibles)

    @classmethod
    def _after_create_in_bulk(cls, ids):
        """ModelStorage._after_create (validate, check_modification,
        on_modification, triggers) once for all the rows, on records
        browsed BROWSE_SLICE at a time: calling it per slice would repeat
        each hook's queries."""
        Trigger = Pool().get('ir.trigger')
        transaction = Transaction()
        check_access = transaction.user and transaction.check_access
        records = list(chain.from_iterable(cls.browse(sub_ids)
                for sub_ids in grouped_slice(ids, BROWSE_SLICE)))
        with without_check_access():
            triggers = Trigger.get_triggers(cls.__name__, 'create')
            cls._validate(records)
            cls.check_modification('create', records, external=check_access)
            cls._compute_fields(records)
            cls.on_modification('create', records)
            for trigger in triggers:
                trigger.queue_trigger_action(records)
            transaction.create_records[cls.__name__].extend(ids)

    @classmethod
    def _next_ids(cls, count):
        """count ids from the table's sequence (PostgreSQL); none where
        the database gives them on insert (SQLite). Tryton's nextid finds
        the sequence again for each id: ten times slower for a thousand."""
        transaction = Transaction()
        if backend.name != 'postgresql':
            ids = transaction.database.nextid(
                transaction.connection, cls._table, count=count)
            return [ids] if isinstance(ids, int) else ids
        cursor = transaction.connection.cursor()
        cursor.execute('WITH s AS MATERIALIZED (SELECT '
            "pg_get_serial_sequence(format('%%I', %s::text), 'id')::regclass "
            'AS seq) SELECT nextval(s.seq) FROM s, generate_series(1, %s)',
            (cls._table, count))
        return [id_ for id_, in cursor]

    @staticmethod
    def _create_date(cursor):
        """The create_date an INSERT of CURRENT_TIMESTAMP stores (the same
        for the whole transaction), asked once instead of once a row."""
        if backend.name == 'postgresql':
            cursor.execute('SELECT CAST(CURRENT_TIMESTAMP AS TIMESTAMP)')
        else:
            cursor.execute(*Select([CurrentTimestamp()]))
        return cursor.fetchone()[0]

    @classmethod
    def _copy_rows(cls, columns, rows):
        """COPY rows into the table (PostgreSQL): twice as fast as
        INSERTs. In binary, which the server reads a tenth faster than text:
        each value goes as its column's type, asked of the server."""
        cursor = Transaction().connection.cursor()
        cursor.execute('SELECT attname, atttypid FROM pg_attribute '
            'WHERE attrelid = %s::regclass AND attnum > 0', (cls._table,))
        types = dict(cursor)
        with cursor.copy('COPY "%s" (%s) FROM STDIN (FORMAT BINARY)' % (
                    cls._table, ', '.join('"%s"' % c.name for c in columns))
                ) as copy:
            copy.set_types([types[c.name] for c in columns])
            for row in rows:
                copy.write_row(row)

    @classmethod
    def _normalized_phone(cls, value, strict=True):
        if _normalised.get():
            # The importer's parser gave it in E.164: checked once is enough.
            return value
        return super()._normalized_phone(value, strict=strict)

    @classmethod
    def _validate(cls, records, field_names=None):
        checked = _checked_ids.get()
        if checked and all(r.id in checked for r in records):
            # Required fields, domains and selections of these rows were
            # checked once for the import; model-level checks still run.
            field_names = set()
        super()._validate(records, field_names=field_names)


class ImportStart(ModelView):
    "Import Leads"
    __name__ = 'crm.lead.import.start'
    file = fields.Binary(
        "File", required=True, filename='filename',
        help="A CSV or Excel (.xlsx) file with a header row and one lead "
        "per row.")
    filename = fields.Char("File Name")
    source = fields.Many2One(
        'crm.source', "Source", required=True,
        help="Where these leads came from; set on the new leads.")
    dry_run = fields.Boolean(
        "Dry Run",
        help="Check the file and count what would be imported, without "
        "saving anything.")
    consent_basis = fields.Char(
        "Consent Basis",
        help="Why these people may be messaged, e.g. \"Asked for a call "
        "back at the Powai site office, Nov 2026\". Leave empty when they "
        "have not agreed: then no consent is recorded.")
    consent_channel = fields.Selection(
        CONSENT_CHANNELS, "Consent For",
        states={
            'invisible': ~Bool(Eval('consent_basis')),
            'required': Bool(Eval('consent_basis')),
            })

    @classmethod
    def default_source(cls):
        pool = Pool()
        ModelData = pool.get('ir.model.data')
        try:
            return ModelData.get_id('kraya_crm', 'source_import')
        except KeyError:
            return None

    @classmethod
    def default_dry_run(cls):
        return False

    @classmethod
    def default_consent_channel(cls):
        return 'whatsapp'


class ImportResult(ModelView):
    "Import Leads"
    __name__ = 'crm.lead.import.result'
    summary = fields.Text("Summary", readonly=True)
    problems = fields.Text("Problems", readonly=True)
    report = fields.Binary(
        "Problem Report", filename='report_filename', readonly=True,
        help="Every problem as CSV, with the row's cells: fix the rows and "
        "import this file again.")
    report_filename = fields.Char("Report File Name", readonly=True)
    dry_run = fields.Boolean("Dry Run", readonly=True)


class Import(Wizard):
    "Import Leads"
    __name__ = 'crm.lead.import'
    start = StateView('crm.lead.import.start',
        'kraya_crm.lead_import_start_view_form', [
            Button("Cancel", 'end', 'tryton-cancel'),
            Button("Import", 'import_', 'tryton-import', default=True),
            ])
    import_ = StateTransition()
    result = StateView('crm.lead.import.result',
        'kraya_crm.lead_import_result_view_form', [
            Button("Close", 'end', 'tryton-close', default=True),
            Button("Import for Real", 'import_for_real', 'tryton-import',
                states={'invisible': ~Eval('dry_run')}),
            ])
    import_for_real = StateTransition()

    def transition_import_(self):
        Lead = Pool().get('crm.lead')
        stream = io.StringIO()
        report = ProblemReport(stream)
        summary = Lead.import_file(
            io.BytesIO(self.start.file), self.start.filename,
            source=self.start.source, dry_run=self.start.dry_run,
            consent_channel=self.start.consent_channel,
            consent_basis=self.start.consent_basis, report=report)
        self.result.summary = summary.text()
        self.result.dry_run = summary.dry_run
        lines = stream.getvalue().splitlines()
        shown = lines[1:SHOWN_PROBLEMS + 1]
        if len(lines) - 1 > len(shown):
            shown.append(f"... and {len(lines) - 1 - len(shown):,} more in "
                "the problem report")
        self.result.problems = '\n'.join(shown)
        if report.count:
            stem = (self.start.filename or 'leads').rsplit('.', 1)[0]
            self.result.report = stream.getvalue().encode('utf-8-sig')
            self.result.report_filename = f'{stem}.errors.csv'
        else:
            self.result.report = None
            self.result.report_filename = None
        return 'result'

    def transition_import_for_real(self):
        self.start.dry_run = False
        return self.transition_import_()

    def default_result(self, fields):
        return {name: getattr(self.result, name, None) for name in [
                'summary', 'problems', 'report', 'report_filename',
                'dry_run']}
