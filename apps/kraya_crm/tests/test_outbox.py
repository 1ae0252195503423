"""The outbox's tasks in the queue: one waiting task takes everything due,
and a message due a little later gets a task queued for its time."""
import datetime as dt
import unittest

from trytond.modules.company.tests import create_company, set_company
from trytond.pool import Pool
from trytond.tests.test_tryton import activate_module, with_transaction

from ..message import utcnow
from ..outbox import QUEUE_NAME
from .test_sequence import whatsapp_lead


def outbox_tasks():
    """The waiting outbox tasks: in how many seconds each is scheduled,
    None for those to run now, those first."""
    Queue = Pool().get('ir.queue')
    now = dt.datetime.now()
    tasks = Queue.search([('name', '=', QUEUE_NAME),
            ('dequeued_at', '=', None)])
    return sorted((round((t.scheduled_at - now).total_seconds())
            if t.scheduled_at else None for t in tasks),
        key=lambda s: -1 if s is None else s)


class OutboxTestCase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        activate_module('kraya_crm')

    def queued(self, lead, in_seconds):
        Message = Pool().get('crm.message')
        Message.create([{'lead': lead.id, 'direction': 'outbound',
                    'channel': 'whatsapp', 'status': 'queued', 'kind': 'text',
                    'body': "Namaste", 'address': lead.whatsapp_number,
                    'send_after': utcnow() + dt.timedelta(
                        seconds=in_seconds)}])

    @with_transaction()
    def test_message_due_soon_gets_a_task_for_its_time(self):
        Message = Pool().get('crm.message')
        with set_company(create_company()):
            lead = whatsapp_lead()
            # A second message to the same person, waiting out WhatsApp's
            # pair limit: what send_outbox finds when it has nothing to
            # send now.
            self.queued(lead, 5)
            Message.wake_outbox()
            self.assertEqual(outbox_tasks(), [])
            Message.wake_outbox(dt.timedelta(seconds=6))
            self.assertEqual(outbox_tasks(), [6])
            # It takes the message when it runs: no second one.
            Message.wake_outbox(dt.timedelta(seconds=6))
            self.assertEqual(outbox_tasks(), [6])

    @with_transaction()
    def test_message_due_now_does_not_wait_for_a_later_task(self):
        Message = Pool().get('crm.message')
        with set_company(create_company()):
            lead = whatsapp_lead()
            self.queued(lead, 5)
            Message.wake_outbox(dt.timedelta(seconds=6))
            self.queued(whatsapp_lead("Ravi Kumar", phone='9876500000'), 0)
            Message.wake_outbox()
            self.assertEqual(outbox_tasks(), [None, 6])
            Message.wake_outbox()
            self.assertEqual(outbox_tasks(), [None, 6])
