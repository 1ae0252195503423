"Possible duplicates, and merging them without losing a record."
import json
import unittest

from trytond.modules.company.tests import create_company, set_company
from trytond.pool import Pool
from trytond.tests.test_tryton import activate_module, with_transaction
from trytond.transaction import Transaction


class MergeTestCase(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        activate_module('kraya_crm')

    def two_of_one_person(self):
        Lead = Pool().get('crm.lead')
        return Lead.create([
                {'name': "Asha Kulkarni", 'phone': '9876543210',
                    'notes': "Wants 2 BHK"},
                {'name': "Asha K", 'email': 'asha@example.in',
                    'whatsapp': '9876543210', 'city': "Pune",
                    'notes': "Budget 1.5 Cr"},
                ])

    @with_transaction()
    def test_possible_duplicates_are_leads_sharing_a_number_or_email(self):
        Lead = Pool().get('crm.lead')
        with set_company(create_company()):
            first, second = self.two_of_one_person()
            alone, = Lead.create([{'name': "Ravi", 'phone': '9811111111'}])
            self.assertEqual(
                set(Lead.search([('similar_leads', '!=', None)])),
                {first, second})
            self.assertEqual(Lead.search([('similar_leads', '=', None)]),
                [alone])
            self.assertEqual(list(first.similar_leads), [second])

    @with_transaction()
    def test_merge_moves_messages_tasks_deals_and_keeps_the_other(self):
        pool = Pool()
        Lead = pool.get('crm.lead')
        Message = pool.get('crm.message')
        Task = pool.get('crm.task')
        Log = pool.get('crm.lead.merge_log')
        with set_company(create_company()):
            keep, other = self.two_of_one_person()
            Message.create([{'lead': other.id, 'direction': 'inbound',
                        'channel': 'whatsapp', 'status': 'received',
                        'body': "Hello"}])
            Task.create([{'name': "Call back", 'lead': other.id}])
            deal, = Lead.convert_to_deals([other])

            Lead.merge_into(keep, [other], {
                    'name': "Asha Kulkarni", 'email': 'asha@example.in',
                    'city': "Pune"})

            keep, other = Lead(keep.id), Lead(other.id)
            self.assertEqual(
                (keep.email, keep.city, keep.phone),
                ('asha@example.in', "Pune", '+919876543210'))
            self.assertEqual(keep.notes, "Wants 2 BHK\n\nBudget 1.5 Cr")
            self.assertEqual(len(keep.messages), 1)
            self.assertEqual(len(keep.tasks), 1)
            self.assertEqual(list(keep.deals), [deal])
            self.assertFalse(other.active)
            self.assertEqual(other.merged_into, keep)
            log, = Log.search([])
            snapshot, = json.loads(log.snapshot)
            self.assertEqual(snapshot['whatsapp'], '+919876543210')
            self.assertEqual(list(log.merged), [other])

    @with_transaction()
    def test_merged_lead_no_longer_matches_on_capture(self):
        Lead = Pool().get('crm.lead')
        with set_company(create_company()):
            keep, other = self.two_of_one_person()
            Lead.merge_into(keep, [other], {'email': 'asha@example.in'})
            (lead, created), = Lead.capture([{'email': 'asha@example.in'}])
            self.assertEqual((lead, created), (keep, False))

    @with_transaction()
    def test_an_opt_out_on_any_merged_lead_wins(self):
        Lead = Pool().get('crm.lead')
        with set_company(create_company()):
            keep, other = self.two_of_one_person()
            Lead.opt_in([keep], 'whatsapp', 'form')
            Lead.opt_out([other], 'whatsapp', "STOP")
            Lead.opt_in([other], 'email', 'form')
            Lead.merge_into(keep, [other], {})
            keep = Lead(keep.id)
            self.assertEqual({c.channel: c.state for c in keep.consents},
                {'whatsapp': 'opted_out', 'email': 'opted_in'})

    @with_transaction()
    def test_wizard_offers_each_leads_values_and_defaults_to_oldest(self):
        pool = Pool()
        Merge = pool.get('crm.lead.merge', type='wizard')
        with set_company(create_company()):
            keep, other = self.two_of_one_person()
            with Transaction().set_context(
                    active_model='crm.lead', active_id=other.id,
                    active_ids=[other.id]):
                session_id, _, _ = Merge.create()
                merge = Merge(session_id)
                defaults = merge.default_start(None)
            self.assertEqual(set(defaults['leads']), {keep.id, other.id})
            self.assertEqual(defaults['survivor'], keep.id)
            self.assertEqual(defaults['keep_name'], "Asha Kulkarni")
            self.assertEqual(defaults['keep_city'], "Pune")
            start = pool.get('crm.lead.merge.start')(
                leads=[keep, other], survivor=keep)
            self.assertEqual(
                [v for v, _ in start.value_options('name')],
                [None, "Asha Kulkarni", "Asha K"])
