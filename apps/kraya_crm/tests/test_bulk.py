"Writing many records at once with Tryton's hooks kept (bulk.py)."
import unittest
from unittest.mock import patch

from trytond.modules.company.tests import create_company, set_company
from trytond.pool import Pool
from trytond.tests.test_tryton import activate_module, with_transaction


class BulkTestCase(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        activate_module('kraya_crm')

    @with_transaction()
    def test_fill_in_bulk_writes_each_its_values_and_hooks_once_per_set(self):
        Lead = Pool().get('crm.lead')
        with set_company(create_company()):
            leads = Lead.create([{'name': f"Lead {i}", 'city': "Thane"}
                    for i in range(5)])
            fills = {l.id: {'status': 'contacted'} for l in leads[:4]}
            fills[leads[4].id] = {'status': 'qualified', 'city': "Pune"}
            on_write = Lead.on_write
            calls = []

            def counted(records, values):
                calls.append((sorted(r.id for r in records), values))
                return on_write(records, values)
            with patch.object(Lead, 'on_write', counted):
                Lead.fill_in_bulk(fills)

            self.assertEqual(
                [(l.status, l.city) for l in Lead.browse(leads)],
                [('contacted', "Thane")] * 4 + [('qualified', "Pune")])
            # The four alike are one write, as Lead.write would take them
            # (the writes after them are the hooks' own: score, SLA).
            self.assertEqual(calls[:2], [
                    (sorted(l.id for l in leads[:4]),
                        {'status': 'contacted'}),
                    ([leads[4].id], {'status': 'qualified', 'city': "Pune"}),
                    ])
