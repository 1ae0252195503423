"""The Print menu's "Spreadsheet (Excel)" of leads and of a report: the
list's columns, typed cells, hostile text inert, only readable rows."""
import io
import unittest
from decimal import Decimal

from openpyxl import load_workbook

from trytond.modules.company.tests import create_company, set_company
from trytond.pool import Pool
from trytond.tests.test_tryton import activate_module, with_transaction

from .test_spreadsheet import HOSTILE
from .test_task import new_lead


def download(model_xml_id, ids, **data):
    pool = Pool()
    ModelData = pool.get('ir.model.data')
    Export = pool.get('crm.spreadsheet_export', type='report')
    action_id = ModelData.get_id('kraya_crm', model_xml_id)
    kind, content, _, name = Export.execute(ids,
        {'action_id': action_id, **data})
    sheet = load_workbook(io.BytesIO(content)).active
    return kind, name, [[c.value for c in row] for row in sheet.iter_rows()]


class SpreadsheetExportTestCase(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        activate_module('kraya_crm')

    @with_transaction()
    def test_selected_leads_come_with_the_lists_columns_and_inert_text(self):
        with set_company(create_company()):
            hostile = new_lead(HOSTILE[0], budget=Decimal(2500000),
                city="Pune")
            plain = new_lead("Ravi Kumar")
            new_lead("Not selected")
            kind, name, rows = download('report_spreadsheet_lead',
                [hostile.id, plain.id])
            self.assertEqual((kind, name), ('xlsx', "Lead"))
            header, *body = rows
            self.assertIn("Contact Name", header)
            self.assertEqual(len(body), 2)
            names = [row[header.index("Contact Name")] for row in body]
            self.assertEqual(names, ["'" + HOSTILE[0], "Ravi Kumar"])

    @with_transaction()
    def test_a_report_without_a_selection_gives_every_row(self):
        Source = Pool().get('crm.reporting.source')
        with set_company(create_company()):
            new_lead("Asha")
            shown = Source.search([])
            _, name, rows = download('report_spreadsheet_reporting_source',
                [])
            header, *body = rows
            self.assertEqual(name, "Lead Sources")
            self.assertEqual(len(body), len(shown))
            leads = header.index("Leads")
            self.assertTrue(all(isinstance(r[leads], int) for r in body))
