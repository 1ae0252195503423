"""Cells safe to open in a spreadsheet: what leads type (a name, a note, a
web form's field) must never run as a formula in Excel, LibreOffice or
Google Sheets once a manager exports it (OWASP's CSV injection).

A text cell starting with =, +, -, @, a tab or a carriage return is
prefixed with an apostrophe, which every spreadsheet shows as text and
does not display. Numbers, dates and booleans stay what they are: they
are values, never formulas."""
import csv
import datetime as dt
import io
from decimal import Decimal

FORMULA_STARTS = ('=', '+', '-', '@', '\t', '\r')


def safe_cell(value):
    "The value, with a text that a spreadsheet would run made inert."
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def safe_row(row):
    return [safe_cell(value) for value in row]


def typed_text(text):
    """The text a person typed, from a cell safe_cell wrote: the import
    reads back a problem report or an export without the apostrophe."""
    if text.startswith("'") and text[1:2] and text[1] in FORMULA_STARTS:
        return text[1:]
    return text


def _csv_text(value):
    if value is None:
        return ''
    if isinstance(value, (dt.date, dt.datetime, Decimal, int, float)):
        return str(value)
    return value


def csv_bytes(header, rows):
    """A UTF-8 CSV (with a BOM, so that Excel reads ₹ and Hindi right) of
    the header and rows, every text cell made safe."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(safe_row(header))
    for row in rows:
        writer.writerow(safe_row([_csv_text(value) for value in row]))
    return ('\ufeff' + out.getvalue()).encode('utf-8')


def xlsx_bytes(header, rows, title="Export"):
    """An .xlsx workbook of one sheet: the header in bold, then the rows,
    every text cell made safe and typed as text."""
    # Imported here: openpyxl is only needed when someone exports.
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.styles import Font

    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet(title=title[:31])
    bold = Font(bold=True)

    def cells(values, font=None):
        for value in values:
            if isinstance(value, dt.datetime) and value.tzinfo:
                value = value.replace(tzinfo=None)
            cell = WriteOnlyCell(sheet, value=safe_cell(value))
            if isinstance(cell.value, str):
                # Text, never a formula, whatever openpyxl would guess.
                cell.data_type = 's'
            if font:
                cell.font = font
            yield cell
    sheet.append(list(cells(header, bold)))
    for row in rows:
        sheet.append(list(cells(row)))
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


class FormulaSafeExport:
    """The desk's own export (sao's CSV and spreadsheet export call
    export_data) made safe: a lead's name "=HYPERLINK(...)" reaches the
    manager's spreadsheet as text."""
    __slots__ = ()

    @classmethod
    def export_data(cls, records, fields_names, header=False):
        return [safe_row(row)
            for row in super().export_data(records, fields_names, header)]
