"""Reading a CSV or XLSX file as a stream of rows, whatever its encoding,
separator or the notations Excel left in it."""
import codecs
import csv
import datetime as dt
import io

from trytond.i18n import gettext

from ..exceptions import LeadImportError
from ..spreadsheet import typed_text

SNIFF_BYTES = 64 * 1024


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
    return typed_text(str(value).strip())


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
            yield number, [typed_text(c.strip()) for c in cells]

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
