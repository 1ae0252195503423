"A person's rights over their data: export, erasure, suppression, retention."
import csv
import datetime as dt
import hashlib
import hmac
import io
import json
import unittest
import unittest.mock
import zipfile

from trytond import backend
from trytond.model.exceptions import AccessError
from trytond.modules.company.tests import create_company, set_company
from trytond.pool import Pool
from trytond.tests.test_tryton import activate_module, with_transaction
from trytond.transaction import Transaction

from ..exceptions import PrivacyError
from ..mail import Reply
from ..message import utcnow
from ..whatsapp import Delivery
from .plans import full_scans
from .test_assignment import always_open, make_rule, make_team
from .test_lead_import import import_text
from .test_mail import configure
from .test_whatsapp import MESSAGE

PEPPER = 'test-privacy-pepper'
PHONE = '+919876543210'  # the sender of test_whatsapp.MESSAGE
EMAIL = 'asha@example.in'


def peppered(key):
    kind, value = key
    return hmac.new(PEPPER.encode(), f'{kind}:{value}'.encode(),
        hashlib.sha256).hexdigest()


class PrivacyTestCase(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        activate_module('kraya_crm')

    def setUp(self):
        configure(self, 'kraya_crm', privacy_pepper=PEPPER)

    def person(self, name="Asha Kulkarni", phone=PHONE, email=EMAIL):
        """A lead with a WhatsApp message, a file, WhatsApp consent given
        then withdrawn, a task naming them and a deal (converted)."""
        pool = Pool()
        Attachment = pool.get('ir.attachment')
        Lead = pool.get('crm.lead')
        Message = pool.get('crm.message')
        Task = pool.get('crm.task')
        lead, = Lead.create([{'name': name, 'phone': phone, 'email': email,
                    'city': "Pune", 'notes': "Wants a 2BHK in Baner"}])
        message, = Message.create([{'lead': lead.id, 'direction': 'inbound',
                    'channel': 'whatsapp', 'status': 'received',
                    'provider_id': 'wamid.KYC', 'address': phone,
                    'kind': 'document', 'body': "My Aadhaar, as asked",
                    'attachment': "document: aadhaar.pdf"}])
        Attachment.create([{'name': 'aadhaar.pdf', 'resource': str(lead),
                    'data': b'%PDF-1.4 aadhaar'}])
        Lead.opt_in([lead], 'whatsapp', 'inbound_chat')
        Lead.opt_out([Lead(lead.id)], 'whatsapp', "Sent STOP")
        Task.create([{'name': f"Call {name} back", 'kind': 'call',
                    'lead': lead.id, 'notes': f"{name} prefers evenings"}])
        return Lead(lead.id)

    # Export

    @with_transaction()
    def test_export_zip_holds_everything_about_the_person_and_is_logged(self):
        pool = Pool()
        Lead = pool.get('crm.lead')
        Log = pool.get('crm.privacy.log')
        with set_company(create_company()):
            lead = self.person(name="=HYPERLINK(\"http://x\")")
            Lead.convert_to_deals([lead])
            Export = pool.get('crm.lead.privacy_export', type='wizard')
            session_id, _, _ = Export.create()
            with Transaction().set_context(active_model='crm.lead',
                    active_id=lead.id, active_ids=[lead.id]):
                answer = Export.execute(session_id, {}, 'start')
            values = answer['view']['defaults']
            self.assertEqual(values['filename'],
                f'personal-data-lead-{lead.id}.zip')
            archive = zipfile.ZipFile(io.BytesIO(values['file']))
            data = json.loads(archive.read('personal-data.json'))
            self.assertEqual(data['lead'][0]['phone'], PHONE)
            self.assertEqual([m['body'] for m in data['messages']],
                ["My Aadhaar, as asked"])
            attachment, = data['attachments']
            self.assertEqual(attachment['name'], 'aadhaar.pdf')
            self.assertEqual(attachment['content_base64'],
                'JVBERi0xLjQgYWFkaGFhcg==')
            self.assertEqual(archive.read(
                    f"attachments/{attachment['id']}-aadhaar.pdf"),
                b'%PDF-1.4 aadhaar')
            self.assertEqual([(c['channel'], c['state'])
                    for c in data['consents']], [('whatsapp', 'opted_out')])
            self.assertEqual(len(data['tasks']), 1)
            self.assertEqual(len(data['deals']), 1)
            self.assertEqual(len(data['stage_history']), 1)
            for table in ['lead', 'messages', 'attachments', 'consents',
                    'tasks', 'deals', 'stage_history', 'enrollments',
                    'merges', 'privacy_log']:
                self.assertIn(f'{table}.csv', archive.namelist())
            rows = list(csv.DictReader(io.StringIO(
                        archive.read('lead.csv').decode('utf-8-sig'))))
            # The name a lead typed is text in a spreadsheet, not a formula.
            self.assertEqual(rows[0]['name'], "'=HYPERLINK(\"http://x\")")
            log, = Log.search([('lead', '=', lead.id)])
            self.assertEqual((log.action, log.lead_number, log.done_by.id),
                ('export', lead.id, Transaction().user))

    @with_transaction()
    def test_export_of_several_leads_at_once_is_refused(self):
        pool = Pool()
        Lead = pool.get('crm.lead')
        Export = pool.get('crm.lead.privacy_export', type='wizard')
        with set_company(create_company()):
            leads = Lead.create([{'name': "One"}, {'name': "Two"}])
            session_id, _, _ = Export.create()
            with Transaction().set_context(active_model='crm.lead',
                    active_id=leads[0].id, active_ids=[l.id for l in leads]):
                with self.assertRaises(PrivacyError):
                    Export.execute(session_id, {}, 'start')

    # Erasure

    @with_transaction()
    def test_erasure_removes_the_person_and_keeps_hashed_consent_proof(self):
        pool = Pool()
        Attachment = pool.get('ir.attachment')
        Lead = pool.get('crm.lead')
        Log = pool.get('crm.privacy.log')
        Suppression = pool.get('crm.privacy.suppression')
        with set_company(create_company()):
            lead = self.person()
            deal, = Lead.convert_to_deals([lead])
            Lead.erase_personal_data([lead])
            lead = Lead(lead.id)
            self.assertEqual(lead.name, f"Erased person #{lead.id}")
            self.assertEqual([lead.phone, lead.whatsapp, lead.email,
                    lead.city, lead.notes, lead.active],
                [None, None, None, None, None, False])
            self.assertTrue(lead.erased_at)
            message, = lead.messages
            self.assertEqual([message.body, message.address,
                    message.attachment, message.provider_id],
                [None, None, None, None])
            self.assertEqual(
                Attachment.search([('resource', '=', str(lead))]), [])
            task, = lead.tasks
            self.assertNotIn("Asha", task.name + (task.notes or ''))
            self.assertNotIn("Asha", Pool().get('crm.deal')(deal.id).title)
            consent, = lead.consents
            self.assertEqual(
                (consent.state, bool(consent.opted_in_at),
                    bool(consent.opted_out_at)),
                ('opted_out', True, True))
            self.assertEqual(consent.identity_hashes.splitlines(), sorted([
                        peppered(('phone', PHONE)),
                        peppered(('email', EMAIL))]))
            self.assertNotIn(PHONE, consent.identity_hashes)
            self.assertEqual({s.identity_hash for s in Suppression.search([])},
                {peppered(('phone', PHONE)), peppered(('email', EMAIL))})
            log, = Log.search([('action', '=', 'erasure')])
            self.assertEqual(log.lead, lead)
            self.assertIn('1 messages', log.detail)
            # The customer had no invoice: it goes too.
            self.assertEqual(deal.party.name, "Erased person")
            self.assertEqual(deal.party.contact_mechanisms, ())

    def unassigned_person(self):
        "A person's lead waiting for the round robin of a team, open always."
        Lead = Pool().get('crm.lead')
        always_open()
        team, _ = make_team('asha')
        make_rule(team, method='round_robin')
        lead = self.person()
        Lead.write([lead], {'owner': None})
        return lead

    @with_transaction()
    def test_erased_lead_is_neither_assigned_nor_chased(self):
        "Its assignment was queued at capture and runs after the erasure."
        pool = Pool()
        Lead = pool.get('crm.lead')
        Message = pool.get('crm.message')
        with set_company(create_company()):
            lead = self.unassigned_person()
            self.assertTrue(lead.sla_next_at)
            Lead.erase_personal_data([lead])
            before = Message.search_count([('lead', '=', lead.id)])

            Lead.assign_captured([lead])
            lead = Lead(lead.id)
            self.assertEqual((lead.owner, lead.sla_next_at, lead.reassign_at),
                (None, None, None))
            self.assertEqual(
                Message.search_count([('lead', '=', lead.id)]), before)

    @with_transaction()
    def test_lead_erased_while_being_assigned_sends_the_task_round_again(self):
        """SQLite locks no row: the erasure may commit between the queued
        assignment's search and its write (CI saw "Assigned to ..." on an
        erased lead). The task then fails as on a write conflict, and the
        worker's next try skips the lead."""
        pool = Pool()
        Lead = pool.get('crm.lead')
        with set_company(create_company()):
            lead = self.unassigned_person()
            assign = Lead.assign

            def erased_meanwhile(leads, reassign=False):
                assigned = assign(leads, reassign=reassign)
                Lead.erase_personal_data([lead])
                return assigned
            with unittest.mock.patch.object(
                    Lead, 'assign', side_effect=erased_meanwhile):
                with self.assertRaises(backend.DatabaseOperationalError):
                    Lead.assign_captured([lead])

    @with_transaction()
    def test_erasure_keeps_the_gst_invoice_and_its_party(self):
        pool = Pool()
        Company = pool.get('company.company')
        Invoice = pool.get('account.invoice')
        Journal = pool.get('account.journal')
        Lead = pool.get('crm.lead')
        company = create_company()
        with set_company(company):
            Company.set_up_indian_accounting([company])
            lead = self.person()
            deal, = Lead.convert_to_deals([lead])
            party = deal.party
            journal, = Journal.search([('type', '=', 'revenue')], limit=1)
            invoice, = Invoice.create([{'type': 'out', 'party': party.id,
                        'invoice_address': party.addresses[0].id,
                        'journal': journal.id,
                        'account': party.account_receivable_used.id,
                        'currency': company.currency.id,
                        'company': company.id}])
            Lead.erase_personal_data([lead])
            invoice = Invoice(invoice.id)
            self.assertEqual(invoice.party, party)
            self.assertEqual(invoice.party.name, "Asha Kulkarni")
            self.assertIn(EMAIL,
                [m.value for m in invoice.party.contact_mechanisms])
            self.assertIsNone(Lead(lead.id).phone)

    @with_transaction()
    def test_erasure_without_a_pepper_is_refused_and_erases_nothing(self):
        Lead = Pool().get('crm.lead')
        configure(self, 'kraya_crm', privacy_pepper='')
        with set_company(create_company()):
            lead = self.person()
            with self.assertRaises(PrivacyError):
                Lead.erase_personal_data([lead])
            self.assertEqual(Lead(lead.id).phone, PHONE)

    @with_transaction()
    def test_erase_button_is_refused_to_a_user_without_the_group(self):
        pool = Pool()
        Lead = pool.get('crm.lead')
        User = pool.get('res.user')
        with set_company(create_company()):
            lead = self.person()
            user, = User.create([{'login': 'clerk', 'name': "Clerk"}])
            with Transaction().set_user(user.id), \
                    Transaction().set_context(_check_access=True):
                with self.assertRaises(AccessError):
                    Lead.erase_personal_data([lead])

    # Suppression, through each channel

    def erased(self):
        "Asha erased on her request; returns the erased lead."
        Lead = Pool().get('crm.lead')
        lead = self.person()
        Lead.erase_personal_data([lead])
        return lead

    def live_leads(self):
        return Pool().get('crm.lead').search([])

    @with_transaction()
    def test_whatsapp_message_of_an_erased_person_makes_no_lead(self):
        pool = Pool()
        Message = pool.get('crm.message')
        WhatsApp = pool.get('crm.whatsapp.webhook')
        with set_company(create_company()):
            self.erased()
            before = Message.search_count([])
            self.assertEqual(
                WhatsApp.process(Delivery.from_payload(MESSAGE)), 1)
            self.assertEqual(self.live_leads(), [])
            self.assertEqual(Message.search_count([]), before)

    @with_transaction()
    def test_whatsapp_message_of_someone_else_still_makes_a_lead(self):
        pool = Pool()
        WhatsApp = pool.get('crm.whatsapp.webhook')
        with set_company(create_company()):
            self.person(phone='+919811122233', email='ravi@example.in')
            Pool().get('crm.lead').erase_personal_data(self.live_leads())
            WhatsApp.process(Delivery.from_payload(MESSAGE))
            lead, = self.live_leads()
            self.assertEqual(lead.whatsapp, PHONE)

    @with_transaction()
    def test_web_form_of_an_erased_person_is_accepted_and_stores_nothing(self):
        pool = Pool()
        Source = pool.get('crm.source')
        with set_company(create_company()):
            self.erased()
            source, = Source.create([{'name': "Form", 'code': 'form',
                        'web_form': True}])
            self.assertEqual(source.capture_submission({'name': "Asha K",
                        'email': 'ASHA@example.in', 'phone': '9999912345'}),
                (None, False))
            self.assertEqual(self.live_leads(), [])

    @with_transaction()
    def test_email_of_an_erased_person_makes_no_lead(self):
        Message = Pool().get('crm.message')
        with set_company(create_company()):
            self.erased()
            stored = Message.receive_emails([Reply(
                        message_id='<m1@example.in>', sender=EMAIL,
                        sender_name="Asha", subject="Still there?",
                        text="Hello", attachment=None, at=utcnow(),
                        thread_ids=[], automatic=False)])
            self.assertEqual(stored, [])
            self.assertEqual(self.live_leads(), [])

    @with_transaction()
    def test_import_reports_an_erased_person_and_imports_the_others(self):
        with set_company(create_company()):
            self.erased()
            summary, problems = import_text(
                "Name,Mobile,Email\n"
                "Asha,98765 43210,\n"
                "Ravi,98111 22233,\n"
                "A. Kulkarni,,asha@example.in\n")
            self.assertEqual((summary.created, summary.suppressed), (1, 2))
            self.assertEqual([p['Row'] for p in problems], ['2', '4'])
            self.assertIn('erased', problems[0]['Problem'])
            lead, = self.live_leads()
            self.assertEqual(lead.name, "Ravi")

    # Retention

    def age(self, lead, days):
        "Make the lead (and its messages) as old as that."
        cursor = Transaction().connection.cursor()
        at = utcnow() - dt.timedelta(days=days)
        cursor.execute('UPDATE crm_lead SET create_date = %s WHERE id = %s'
            .replace('%s', '?' if self.sqlite else '%s'), (at, lead.id))
        cursor.execute('UPDATE crm_message SET at = %s WHERE lead = %s'
            .replace('%s', '?' if self.sqlite else '%s'), (at, lead.id))

    @property
    def sqlite(self):
        from trytond import backend
        return backend.name == 'sqlite'

    @with_transaction()
    def test_retention_purges_only_old_silent_unconverted_leads(self):
        pool = Pool()
        Configuration = pool.get('crm.configuration')
        Lead = pool.get('crm.lead')
        Log = pool.get('crm.privacy.log')
        Message = pool.get('crm.message')
        Suppression = pool.get('crm.privacy.suppression')
        with set_company(create_company()):
            Configuration.write([Configuration(1)],
                {'privacy_retention_months': 12})
            silent, talking, converted, recent = Lead.create([
                    {'name': "Silent", 'phone': '+919800000001'},
                    {'name': "Talking", 'phone': '+919800000002'},
                    {'name': "Converted", 'phone': '+919800000003'},
                    {'name': "Recent", 'phone': '+919800000004'},
                    ])
            Lead.convert_to_deals([converted])
            for lead in [silent, talking, converted]:
                self.age(lead, 400)
            self.age(recent, 200)
            Message.create([{'lead': talking.id, 'direction': 'inbound',
                        'channel': 'whatsapp', 'status': 'received',
                        'body': "Still interested"}])
            self.assertEqual(Lead.purge_silent_leads(batch_size=1), 1)
            self.assertEqual(Lead(silent.id).phone, None)
            self.assertEqual([Lead(l.id).phone
                    for l in [talking, converted, recent]],
                ['+919800000002', '+919800000003', '+919800000004'])
            log, = Log.search([])
            self.assertEqual((log.action, log.lead, log.done_by),
                ('retention', Lead(silent.id), None))
            # Not the person's request: they may come back as a new lead.
            self.assertEqual(Suppression.search([]), [])
            self.assertEqual(Lead.purge_silent_leads(), 0)

    @with_transaction()
    def test_retention_is_off_without_months(self):
        Lead = Pool().get('crm.lead')
        with set_company(create_company()):
            lead, = Lead.create([{'name': "Old", 'phone': '+919800000001'}])
            self.age(lead, 4000)
            self.assertEqual(Lead.purge_silent_leads(), 0)
            self.assertEqual(Lead(lead.id).phone, '+919800000001')

    @with_transaction()
    def test_retention_selects_leads_by_index(self):
        Lead = Pool().get('crm.lead')
        with set_company(create_company()):
            Lead.create([{'name': f"Lead {i}", 'phone': f'98000{i:05d}'}
                    for i in range(50)])
            query, params = Lead.retention_query(utcnow(), 500)
            self.assertEqual(full_scans(query, params, 'crm_lead'), [])
