"""Outgoing webhooks against a real HTTP receiver on this machine: which
changes are events, the signed body, the order of one lead's events, a
receiver that is down and comes back, one too slow, 410 Gone, giving up
after a day, and a manager's replay."""
import datetime as dt
import hashlib
import hmac
import json
import threading
import time
import unittest
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from trytond.model.exceptions import ValidationError
from trytond.modules.company.tests import create_company, set_company
from trytond.pool import Pool
from trytond.tests.test_tryton import activate_module, with_transaction
from trytond.transaction import Transaction

from ..message import utcnow
from ..webhook import sign
from .test_board import stage
from .test_mail import configure, free_port

SECRET = 'receiver-secret'


class Receiver:
    """An HTTP server that takes POSTs and answers what it is told:
    `answers` is a list of (status, delay in seconds), the last repeated."""

    def __init__(self, answers=((200, 0),), port=0):
        self.answers = list(answers)
        self.received = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers['Content-Length']))
                receiver.received.append((dict(self.headers), body))
                status, delay = (receiver.answers.pop(0)
                    if len(receiver.answers) > 1 else receiver.answers[0])
                time.sleep(delay)
                try:
                    self.send_response(status)
                    self.end_headers()
                    self.wfile.write(b'ok')
                except OSError:
                    pass  # the sender gave up waiting

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(('127.0.0.1', port), Handler)
        self.url = f'http://127.0.0.1:{self.server.server_port}/hook'
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def events(self):
        return [json.loads(body) for _, body in self.received]


def subscribe(url, events, **values):
    Webhook = Pool().get('crm.webhook')
    webhook, = Webhook.create([{'name': "n8n", 'url': url,
                'events': events, 'secret': SECRET, **values}])
    return webhook


def new_lead(name="Asha Rao", **values):
    Lead = Pool().get('crm.lead')
    lead, = Lead.create([{'name': name, 'phone': '9876543210', **values}])
    return lead


def due_ids():
    "The deliveries the worker would take now, as its claim selects them."
    Delivery = Pool().get('crm.webhook.delivery')
    cursor = Transaction().connection.cursor()
    cursor.execute(*Delivery._due(Delivery.__table__(), utcnow(), 100))
    return [i for i, in cursor]


def send_due():
    """What the worker does, in the test's transaction: claim what is due
    (state sending, one more try) and send it."""
    Delivery = Pool().get('crm.webhook.delivery')
    deliveries = Delivery.browse(due_ids())
    for delivery in deliveries:
        delivery.state = 'sending'
        delivery.sending_at = utcnow()
        delivery.attempts += 1
    Delivery.save(deliveries)
    Delivery.send(deliveries)
    return deliveries


class WebhookTestCase(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        activate_module('kraya_crm')

    def setUp(self):
        self.receiver = Receiver()
        self.addCleanup(self.receiver.close)

    @with_transaction()
    def test_without_a_webhook_no_event_is_written(self):
        Event = Pool().get('crm.event')
        with set_company(create_company()):
            new_lead()
            self.assertEqual(Event.search([]), [])

    @with_transaction()
    def test_new_lead_reaches_the_receiver_signed(self):
        with set_company(create_company()):
            subscribe(self.receiver.url, ['lead.created'])
            lead = new_lead(email='Asha@Example.in')
            delivery, = send_due()
            self.assertEqual(delivery.state, 'delivered')
            (headers, body), = self.receiver.received
            timestamp = headers['X-Kraya-Timestamp']
            self.assertLessEqual(abs(int(timestamp) - time.time()), 5)
            expected = 'sha256=' + hmac.new(SECRET.encode(),
                timestamp.encode() + b'.' + body, hashlib.sha256).hexdigest()
            self.assertEqual(headers['X-Kraya-Signature'], expected)
            self.assertEqual(sign(SECRET, timestamp, body), expected)
            event = json.loads(body)
            self.assertEqual(headers['X-Kraya-Event-Id'], event['id'])
            self.assertEqual((event['event'], event['about'], event['attempt']),
                ('lead.created', f'crm.lead,{lead.id}', 1))
            self.assertEqual((event['data']['name'], event['data']['phone'],
                    event['data']['email']),
                ("Asha Rao", '+919876543210', 'asha@example.in'))
            self.assertEqual(delivery.tries[0].status_code, 200)

    @with_transaction()
    def test_a_body_changed_on_the_way_fails_the_signature(self):
        with set_company(create_company()):
            subscribe(self.receiver.url, ['lead.created'])
            new_lead()
            send_due()
            (headers, body), = self.receiver.received
            forged = body.replace(b'Asha', b'Eve')
            self.assertNotEqual(headers['X-Kraya-Signature'],
                sign(SECRET, headers['X-Kraya-Timestamp'], forged))

    @with_transaction()
    def test_only_the_events_subscribed_and_the_fields_people_change(self):
        Event = Pool().get('crm.event')
        with set_company(create_company()):
            subscribe(self.receiver.url, ['lead.updated'])
            lead = new_lead()
            lead.score = 80
            lead.save()
            self.assertEqual(Event.search([]), [])
            lead.city = "Pune"
            lead.save()
            event, = Event.search([])
            self.assertEqual(event.kind, 'lead.updated')
            self.assertEqual(json.loads(event.data)['changed'], ['city'])

    @with_transaction()
    def test_events_of_one_lead_go_in_order_others_do_not_wait(self):
        Delivery = Pool().get('crm.webhook.delivery')
        with set_company(create_company()):
            subscribe(self.receiver.url, ['lead.created', 'lead.updated'])
            asha = new_lead()
            asha.city = "Pune"
            asha.save()
            new_lead("Ravi Kumar", phone='9876500000')
            created, updated, ravi_created = Delivery.search(
                [], order=[('id', 'ASC')])
            self.assertEqual(due_ids(), [created.id, ravi_created.id])
            # Asha's first event fails: her update waits for it, Ravi's not.
            self.receiver.answers = [(500, 0), (200, 0)]
            send_due()
            self.assertEqual(
                [Delivery(created.id).state, Delivery(ravi_created.id).state],
                ['pending', 'delivered'])
            self.assertEqual(due_ids(), [])
            Delivery.write([created], {'next_attempt_at': utcnow()})
            send_due()
            send_due()
            self.assertEqual(
                [(e['event'], e['data']['name'])
                    for e in self.receiver.events()],
                [('lead.created', "Asha Rao"), ('lead.created', "Ravi Kumar"),
                    ('lead.created', "Asha Rao"),
                    ('lead.updated', "Asha Rao")])

    @with_transaction()
    def test_receiver_down_then_back_gets_it_on_the_next_try(self):
        Delivery = Pool().get('crm.webhook.delivery')
        configure(self, 'kraya_crm', webhook_retry_seconds='30')
        with set_company(create_company()):
            webhook = subscribe(
                f'http://127.0.0.1:{free_port()}/hook', ['lead.created'])
            new_lead()
            before = utcnow()
            delivery, = send_due()
            self.assertEqual(delivery.state, 'pending')
            self.assertIn('ConnectionError', delivery.last_error)
            self.assertGreaterEqual(delivery.next_attempt_at,
                before + dt.timedelta(seconds=30))
            self.assertEqual(due_ids(), [])
            webhook.url = self.receiver.url
            webhook.save()
            Delivery.write([delivery], {'next_attempt_at': utcnow()})
            delivery, = send_due()
            self.assertEqual((delivery.state, delivery.attempts),
                ('delivered', 2))
            self.assertEqual(self.receiver.events()[0]['attempt'], 2)
            self.assertEqual([t.status_code for t in delivery.tries],
                [200, None])

    @with_transaction()
    def test_slow_receiver_times_out_and_is_tried_again(self):
        configure(self, 'kraya_crm', webhook_timeout_seconds='1')
        with set_company(create_company()):
            self.receiver.answers = [(200, 3)]
            subscribe(self.receiver.url, ['lead.created'])
            new_lead()
            started = time.monotonic()
            delivery, = send_due()
            self.assertLess(time.monotonic() - started, 2.5)
            self.assertEqual(delivery.state, 'pending')
            self.assertIn('Timeout', delivery.last_error)

    @with_transaction()
    def test_gone_receiver_switches_the_webhook_off(self):
        Delivery = Pool().get('crm.webhook.delivery')
        Event = Pool().get('crm.event')
        with set_company(create_company()):
            self.receiver.answers = [(410, 0)]
            webhook = subscribe(self.receiver.url,
                ['lead.created', 'lead.updated'])
            lead = new_lead()
            lead.city = "Pune"
            lead.save()
            send_due()
            self.assertFalse(webhook.active)
            self.assertIn('410', webhook.disabled_reason)
            self.assertEqual({d.state for d in Delivery.search([])},
                {'failed'})
            # No one listens any more: the next change is no event.
            count = len(Event.search([]))
            new_lead("Ravi Kumar", phone='9876500000')
            self.assertEqual(len(Event.search([])), count)
            webhook.active = True
            webhook.save()
            self.assertIsNone(webhook.disabled_reason)

    @with_transaction()
    def test_gives_up_after_a_day_and_a_replay_sends_again(self):
        Delivery = Pool().get('crm.webhook.delivery')
        Event = Pool().get('crm.event')
        with set_company(create_company()):
            self.receiver.answers = [(503, 0), (200, 0)]
            subscribe(self.receiver.url, ['lead.created'])
            new_lead()
            event, = Event.search([])
            table = Event.__table__()
            cursor = Transaction().connection.cursor()
            cursor.execute(*table.update([table.create_date],
                    [utcnow() - dt.timedelta(hours=25)]))
            Transaction().cache.clear()  # the event read before the update
            failed, = send_due()
            self.assertEqual(failed.state, 'failed')
            self.assertEqual(due_ids(), [])
            replayed, = Delivery.replay([failed])
            self.assertEqual(send_due(), [replayed])
            self.assertEqual(replayed.state, 'delivered')
            self.assertEqual([e['id'] for e in self.receiver.events()],
                [f'evt_{event.id}'] * 2)

    @with_transaction()
    def test_deal_won_message_received_and_task_done_are_events(self):
        pool = Pool()
        Deal = pool.get('crm.deal')
        Event = pool.get('crm.event')
        Message = pool.get('crm.message')
        Task = pool.get('crm.task')
        with set_company(create_company()):
            subscribe(self.receiver.url, ['deal.stage_changed', 'deal.won',
                    'message.received', 'task.done'])
            lead = new_lead()
            deal, = Deal.create([{'title': "2 BHK Powai", 'lead': lead.id,
                        'value': Decimal(7500000)}])
            Deal.write([deal], {'stage': stage("Won").id})
            Message.create([{'lead': lead.id, 'direction': 'inbound',
                        'channel': 'whatsapp', 'kind': 'text',
                        'body': "Is it still available?", 'status': 'received',
                        'address': lead.phone}])
            task, = Task.create([{'name': "Call back", 'lead': lead.id}])
            Task.mark_done([task])
            events = Event.search([], order=[('id', 'ASC')])
            self.assertEqual([e.kind for e in events], ['deal.stage_changed',
                    'deal.won', 'message.received', 'task.done'])
            moved = json.loads(events[0].data)
            self.assertEqual((moved['from_stage'], moved['to_stage'],
                    moved['value']), ("New", "Won", '7500000.00'))
            self.assertEqual(json.loads(events[2].data)['text'],
                "Is it still available?")
            self.assertEqual(events[2].about, f'crm.lead,{lead.id}')

    @with_transaction()
    def test_a_url_that_is_no_web_address_is_refused(self):
        with set_company(create_company()):
            for url in ['file:///etc/passwd', 'n8n.local/hook', 'http://']:
                with self.assertRaises(ValidationError):
                    subscribe(url, ['lead.created'])

    @with_transaction()
    def test_an_erased_persons_events_and_deliveries_go(self):
        pool = Pool()
        Delivery = pool.get('crm.webhook.delivery')
        Event = pool.get('crm.event')
        Lead = pool.get('crm.lead')
        configure(self, 'kraya_crm', privacy_pepper='test-pepper')
        with set_company(create_company()):
            subscribe(self.receiver.url, ['lead.created', 'lead.updated'])
            asha = new_lead()
            asha.city = "Pune"
            asha.save()
            ravi = new_lead("Ravi Kumar", phone='9876500000')
            Lead.erase_personal_data([asha])
            data = [json.loads(e.data) for e in Event.search([])]
            self.assertNotIn('+919876543210', json.dumps(data))
            # Ravi's stays; Asha's erasure itself is told, without her data.
            self.assertEqual(sorted(
                    (d['id'], d.get('phone')) for d in data),
                sorted([(ravi.id, '+919876500000'), (asha.id, None)]))
            self.assertEqual(len(Delivery.search([])), 2)
