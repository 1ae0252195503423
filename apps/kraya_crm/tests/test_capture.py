"One identity per person, consent and message statuses, in the database."
import datetime as dt
import unittest

from trytond import backend
from trytond.modules.company.tests import create_company, set_company
from trytond.pool import Pool
from trytond.tests.test_tryton import activate_module, with_transaction
from trytond.transaction import Transaction

from ..capture import index_lookups
from .plans import full_scans


class CaptureTestCase(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        activate_module('kraya_crm')

    @with_transaction()
    def test_capture_creates_unknown_person_with_source(self):
        Lead = Pool().get('crm.lead')
        with set_company(create_company()):
            (lead, created), = Lead.capture(
                [{'name': "Asha", 'phone': '+919876543210'}], source='website')
            self.assertTrue(created)
            self.assertEqual(lead.source.code, 'website')

    @with_transaction()
    def test_capture_matches_phone_whatsapp_or_email(self):
        Lead = Pool().get('crm.lead')
        with set_company(create_company()):
            lead, = Lead.create([{
                        'name': "Asha", 'phone': '9876543210',
                        'email': 'asha@example.in'}])
            results = Lead.capture([
                    {'whatsapp': '+919876543210'},
                    {'email': 'ASHA@example.in '},
                    {'phone': '+919876543210', 'city': "Pune"},
                    ])
            self.assertEqual([(l, c) for l, c in results],
                [(lead, False)] * 3)
            self.assertEqual(Lead.search_count([]), 1)

    @with_transaction()
    def test_identity_lookup_reads_leads_by_index(self):
        Lead = Pool().get('crm.lead')
        with set_company(create_company()):
            Lead.create([{'name': f"Lead {i}", 'phone': f'98765{i:05d}',
                        'email': f'lead{i}@example.in'} for i in range(50)])
            keys = {('phone', '+919876500007'), ('email', 'lead9@example.in')}
            queries = list(Lead.identity_queries(keys, ['name']))
            self.assertTrue(queries)
            for query, params in queries:
                self.assertEqual(full_scans(query, params, 'crm_lead'), [])
            self.assertEqual(
                {l.name for l in set(Lead.find_by_identity(keys).values())},
                {"Lead 7", "Lead 9"})

    @unittest.skipUnless(backend.name == 'postgresql', "PostgreSQL planner")
    @with_transaction()
    def test_identity_lookups_of_many_keys_stay_index_lookups(self):
        """With a hundred keys on some 20,000 leads, PostgreSQL on its own
        picks a scan of the whole table (ten times slower, as an import
        of 100,000 rows showed); index_lookups keeps it to the indexes."""
        Lead = Pool().get('crm.lead')
        cursor = Transaction().connection.cursor()
        company = create_company()
        with set_company(company):
            Lead.create([{'name': "First", 'phone': '+919800000000'}])
            cursor.execute('INSERT INTO crm_lead (name, phone, email, '
                'company, status, active) SELECT %s || g, '
                "'+9198' || lpad(g::text, 8, '0'), 'lead' || g || "
                "'@example.in', %s, 'new', true "
                'FROM generate_series(1, 20000) g', ("Lead ", company.id))
            cursor.execute('ANALYZE crm_lead')
            keys = {('phone', '+9197%08d' % i) for i in range(100)} | {
                ('email', f'someone{i}@example.in') for i in range(100)}
            (query, params), = Lead.identity_queries(keys, ['name'])

            def plan():
                cursor.execute('EXPLAIN ' + query, params)
                return '\n'.join(line for line, in cursor)
            self.assertIn('Seq Scan on crm_lead', plan())
            with index_lookups(cursor):
                self.assertNotIn('Seq Scan', plan())
            self.assertIn('Seq Scan on crm_lead', plan())
            self.assertEqual(
                [l['name'] for l in Lead._identity_rows(
                        keys | {('phone', '+919800000123')}, ['name'])],
                ["Lead 123"])

    @with_transaction()
    def test_capture_fills_empty_fields_only(self):
        Lead = Pool().get('crm.lead')
        with set_company(create_company()):
            lead, = Lead.create([{
                        'name': "Asha K", 'phone': '9876543210'}])
            Lead.capture([{'name': "Someone Else", 'phone': '+919876543210',
                        'city': "Pune"}])
            self.assertEqual(lead.name, "Asha K")
            self.assertEqual(lead.city, "Pune")

    @with_transaction()
    def test_same_person_twice_in_one_batch_is_one_lead(self):
        Lead = Pool().get('crm.lead')
        with set_company(create_company()):
            results = Lead.capture([
                    {'name': "Ravi", 'phone': '+919811111111'},
                    {'name': "Ravi S", 'email': 'ravi@example.in',
                        'phone': '+919811111111'},
                    ])
            self.assertEqual(results[0][0], results[1][0])
            self.assertEqual([c for _, c in results], [True, False])
            self.assertEqual(Lead.search_count([]), 1)

    @with_transaction()
    def test_whatsapp_needs_opt_in_and_opt_out_stands(self):
        Lead = Pool().get('crm.lead')
        with set_company(create_company()):
            lead, = Lead.create([{'name': "Asha", 'phone': '9876543210'}])
            self.assertFalse(lead.may_contact('whatsapp'))
            self.assertTrue(lead.may_contact('email'))
            Lead.opt_in([lead], 'whatsapp', 'inbound_chat')
            self.assertTrue(Lead(lead.id).may_contact('whatsapp'))
            self.assertEqual(
                Lead.opt_out([Lead(lead.id)], 'whatsapp', "STOP"), [lead])
            self.assertEqual(
                Lead.opt_out([Lead(lead.id)], 'whatsapp', "STOP"), [])
            Lead.opt_in([Lead(lead.id)], 'whatsapp', 'form')
            self.assertFalse(Lead(lead.id).may_contact('whatsapp'))

    @staticmethod
    def sent_message(wamid):
        "A WhatsApp message we sent to a new lead, known by its wamid."
        pool = Pool()
        Lead = pool.get('crm.lead')
        Message = pool.get('crm.message')
        lead, = Lead.create([{'name': "Asha", 'phone': '9876543210'}])
        message, = Message.create([{
                    'lead': lead.id, 'direction': 'outbound',
                    'channel': 'whatsapp', 'status': 'sent',
                    'provider_id': wamid}])
        return message

    @with_transaction()
    def test_message_status_never_moves_backwards(self):
        Message = Pool().get('crm.message')
        with set_company(create_company()):
            message = self.sent_message('wamid.1')
            at = dt.datetime(2026, 11, 23, 10, 0)
            Message.apply_statuses('whatsapp', [
                    ('wamid.1', 'read', at, None, None),
                    ('wamid.1', 'delivered', at, None, None),
                    ('wamid.1', 'failed', at, '131026', "Undeliverable"),
                    ('wamid.unknown', 'read', at, None, None),
                    ])
            message = Message(message.id)
            self.assertEqual(message.status, 'read')
            self.assertEqual(message.read_at, at)
            self.assertIsNone(message.error_code)

    @with_transaction()
    def test_failed_status_keeps_error_code(self):
        Message = Pool().get('crm.message')
        with set_company(create_company()):
            message = self.sent_message('wamid.2')
            Message.apply_statuses('whatsapp', [('wamid.2', 'failed',
                        dt.datetime(2026, 11, 23), '131026', "Undeliverable")])
            message = Message(message.id)
            self.assertEqual(
                (message.status, message.error_code), ('failed', '131026'))

