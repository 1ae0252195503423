"Writing many records at once with Tryton's hooks kept (bulk.py)."
import unittest
from unittest.mock import patch

from trytond.modules.company.tests import create_company, set_company
from trytond.pool import Pool
from trytond.tests.test_tryton import activate_module, with_transaction

from ..bulk import column_values, plain_values


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
            on_modification = Lead.on_modification
            calls, modified = [], []

            def counted(records, values):
                calls.append((sorted(r.id for r in records), values))
                return on_write(records, values)

            def noted(mode, records, field_names=None):
                if mode == 'write' and 'status' in field_names:
                    modified.extend(r.id for r in records)
                return on_modification(mode, records, field_names)
            with patch.object(Lead, 'on_write', counted), \
                    patch.object(Lead, 'on_modification', noted):
                Lead.fill_in_bulk(fills)
            # The hooks after the write see every record, of every set.
            self.assertEqual(sorted(modified), sorted(l.id for l in leads))

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

    @with_transaction()
    def test_plain_values_come_from_the_cache_or_one_read(self):
        pool = Pool()
        Message = pool.get('crm.message')
        Lead = pool.get('crm.lead')
        with set_company(create_company()):
            lead, = Lead.create([{'name': "Asha Rao"}])
            ids = Message.create_in_bulk([{'lead': lead.id,
                        'direction': 'outbound', 'channel': 'whatsapp',
                        'status': 'queued', 'body': f"Hello {i}"}
                    for i in range(3)])
            messages = Message.browse(ids)
            with patch.object(Message, 'read', side_effect=AssertionError(
                        "read although create_in_bulk remembered them")):
                values = plain_values(messages, ['lead', 'body', 'author'])
            self.assertEqual([(v.id, v.lead, v.body, v.author)
                    for v in values],
                [(i, lead.id, f"Hello {n}", None)
                    for n, i in enumerate(ids)])
            # A write forgets the written ones: read back, the others not.
            Message.write([messages[1]], {'body': "Changed"})
            self.assertEqual(column_values(messages, 'body'),
                ["Hello 0", "Changed", "Hello 2"])
            inbound, = Message.browse(Message.create_in_bulk([{
                            'lead': lead.id, 'direction': 'inbound',
                            'channel': 'whatsapp', 'status': 'received'}]))
            self.assertEqual(Message.from_leads(messages + [inbound]),
                [inbound])
