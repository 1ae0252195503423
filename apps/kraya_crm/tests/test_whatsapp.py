"Reading WhatsApp deliveries, and replaying a kept one."
import datetime as dt
import io
import json
import unittest

from trytond.modules.company.tests import create_company
from trytond.pool import Pool
from trytond.tests.test_tryton import activate_module, with_transaction

from kraya_crm.exceptions import NoCompanyError
from kraya_crm.http import RateLimiter
from kraya_crm.whatsapp import (
    QUEUE_NAME, Delivery, WebhookError, message_content, signature_valid)


def delivery(value):
    return {'object': 'whatsapp_business_account', 'entry': [
            {'id': '1', 'changes': [{'field': 'messages', 'value': value}]}]}


MESSAGE = delivery({
        'contacts': [{'profile': {'name': "Asha"}, 'wa_id': '919876543210'}],
        'messages': [{'from': '919876543210', 'id': 'wamid.A',
                'timestamp': '1763892000', 'type': 'text',
                'text': {'body': "Hello"}}]})


class ReadDeliveryTestCase(unittest.TestCase):

    def test_message_with_sender_name_and_time(self):
        message, = Delivery.from_payload(MESSAGE).messages
        self.assertEqual((message['wamid'], message['wa_id'], message['name'],
                message['body']), ('wamid.A', '919876543210', "Asha", "Hello"))
        self.assertEqual(message['at'].year, 2025)

    def test_failed_status_keeps_code_and_detail(self):
        statuses = Delivery.from_payload(delivery({'statuses': [{
                            'id': 'wamid.B', 'status': 'failed',
                            'timestamp': '1763892000',
                            'errors': [{'code': 131026,
                                    'title': "Message undeliverable",
                                    'error_data': {'details': "Not on WhatsApp"}}],
                            }]})).statuses
        self.assertEqual(statuses[0][3:5], (
                '131026', "Message undeliverable: Not on WhatsApp"))

    def test_document_described_with_type_and_name(self):
        kind, body, attachment = message_content({'type': 'document',
                'document': {'id': '77', 'mime_type': 'application/pdf',
                    'filename': 'brochure.pdf'}})
        self.assertEqual(attachment,
            "document: application/pdf brochure.pdf id 77")

    def test_not_a_business_account_delivery_is_refused(self):
        for payload in [[], {'object': 'page', 'entry': []},
                {'object': 'whatsapp_business_account', 'entry': [{}]},
                delivery({'messages': [{'type': 'text'}]})]:
            with self.subTest(payload=payload), \
                    self.assertRaises(WebhookError):
                Delivery.from_payload(payload)

    def test_signature_is_hmac_sha256_of_the_raw_body(self):
        import hashlib
        import hmac
        body = b'{"a": 1}'
        good = 'sha256=' + hmac.new(b's3cret', body, hashlib.sha256).hexdigest()
        self.assertTrue(signature_valid(body, good, 's3cret'))
        self.assertFalse(signature_valid(body + b' ', good, 's3cret'))
        self.assertFalse(signature_valid(body, good, ''))
        self.assertFalse(signature_valid(body, None, 's3cret'))


class RateLimiterTestCase(unittest.TestCase):

    def test_refuses_past_the_limit_per_key(self):
        limiter = RateLimiter(3, seconds=60)
        self.assertEqual([limiter.allow('a') for _ in range(4)],
            [True, True, True, False])
        self.assertTrue(limiter.allow('b'))


class ReplayTestCase(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        activate_module('kraya_crm')

    @with_transaction()
    def test_replayed_dead_letter_creates_the_lead_once(self):
        pool = Pool()
        DeadLetter = pool.get('crm.dead_letter')
        Lead = pool.get('crm.lead')
        create_company()
        letter = DeadLetter.keep(
            'whatsapp', "processing failed", json.dumps(MESSAGE))
        DeadLetter.replay([letter])
        DeadLetter.replay([letter])
        lead, = Lead.search([('whatsapp', '=', '+919876543210')])
        self.assertEqual(len(lead.messages), 1)
        self.assertEqual(letter.state, 'replayed')

    @with_transaction()
    def test_replayed_web_form_letter_creates_the_lead(self):
        pool = Pool()
        DeadLetter = pool.get('crm.dead_letter')
        Lead = pool.get('crm.lead')
        Source = pool.get('crm.source')
        create_company()
        source, = Source.search([('code', '=', 'website')])
        Source.write([source], {'web_form': True})
        letter = DeadLetter.keep('web_form:website', "refused",
            'name=Ravi+Iyer&phone=98111+22233')
        DeadLetter.replay([letter])
        lead, = Lead.search([('phone', '=', '+919811122233')])
        self.assertEqual((lead.name, letter.state), ("Ravi Iyer", 'replayed'))


class AcceptTestCase(unittest.TestCase):
    "The webhook's request stores the body and makes sure a task takes it."

    @classmethod
    def setUpClass(cls):
        activate_module('kraya_crm')

    @with_transaction()
    def test_one_task_waits_and_one_put_off_does_not_count(self):
        pool = Pool()
        Inbox = pool.get('crm.whatsapp.inbox')
        Queue = pool.get('ir.queue')

        def waiting():
            return Queue.search([('name', '=', QUEUE_NAME),
                    ('dequeued_at', '=', None)], order=[('id', 'ASC')])
        body = json.dumps(MESSAGE).encode()
        Inbox.accept(body)
        Inbox.accept(body)
        task, = waiting()
        # As trytond puts off a task the database failed.
        Queue.write([task], {'scheduled_at': dt.datetime.now()
                + dt.timedelta(minutes=10)})
        Inbox.accept(body)
        later, now = waiting()
        self.assertEqual((later.id, now.scheduled_at), (task.id, None))


class NoCompanyTestCase(unittest.TestCase):
    "A site without a company: every channel says so, none recurses."

    @classmethod
    def setUpClass(cls):
        activate_module('kraya_crm')

    @with_transaction()
    def test_delivery_without_company_raises_no_company(self):
        WhatsApp = Pool().get('crm.whatsapp.webhook')
        with self.assertRaisesRegex(NoCompanyError, 'no company'):
            WhatsApp.process(Delivery.from_payload(MESSAGE))

    @with_transaction()
    def test_replay_without_company_raises_and_keeps_the_letter(self):
        DeadLetter = Pool().get('crm.dead_letter')
        letter = DeadLetter.keep('whatsapp', "refused", json.dumps(MESSAGE))
        with self.assertRaises(NoCompanyError):
            DeadLetter.replay([letter])
        self.assertEqual(letter.state, 'new')

    @with_transaction()
    def test_import_without_company_raises_no_company(self):
        Lead = Pool().get('crm.lead')
        with self.assertRaises(NoCompanyError):
            Lead.import_file(io.BytesIO(b'Name,Mobile\r\nAsha,9876543210\r\n'),
                'leads.csv', source='import')

    @with_transaction()
    def test_body_refused_twice_is_kept_once(self):
        DeadLetter = Pool().get('crm.dead_letter')
        first = DeadLetter.keep('email', "no company", 'body', once=True)
        again = DeadLetter.keep('email', "no company", 'body', once=True)
        self.assertEqual(first, again)
