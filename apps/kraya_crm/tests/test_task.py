"""Tasks in the database: kinds and outcomes, reminders (due ones only,
once), overdue, the next task, and the call an outcome logs."""
import datetime as dt
import json
import unittest

from trytond.model.exceptions import ValidationError
from trytond.modules.company.tests import create_company, set_company
from trytond.pool import Pool
from trytond.tests.test_tryton import activate_module, with_transaction
from trytond.transaction import Transaction

from kraya_peers.whatsapp import Simulator

from .. import outbox
from ..message import utcnow as precise_utcnow
from ..task import NextTask
from .plans import full_scans
from .test_mail import configure

HOUR = dt.timedelta(hours=1)


def utcnow():
    "Now to the second, as a DateTime field stores it."
    return precise_utcnow().replace(microsecond=0)


def admin():
    User = Pool().get('res.user')
    user, = User.search([('login', '=', 'admin')])
    return user


def new_lead(name="Asha Rao", **values):
    Lead = Pool().get('crm.lead')
    lead, = Lead.create([{'name': name, 'phone': '9876543210', **values}])
    return lead


def new_task(**values):
    Task = Pool().get('crm.task')
    task, = Task.create([{'name': "Call about the 2 BHK", **values}])
    return task


class TaskTestCase(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        activate_module('kraya_crm')

    @with_transaction()
    def test_new_task_is_a_call_reminded_15_minutes_before(self):
        with set_company(create_company()):
            due = utcnow() + 2 * HOUR
            task = new_task(due=due)
            self.assertEqual(task.kind, 'call')
            self.assertEqual(task.remind_before, dt.timedelta(minutes=15))
            self.assertEqual(task.remind_at, due - dt.timedelta(minutes=15))

    @with_transaction()
    def test_outcomes_offered_follow_the_kind(self):
        Task = Pool().get('crm.task')
        call, visit = Task(kind='call'), Task(kind='site_visit')
        self.assertIn('no_answer', dict(call.get_outcomes()))
        self.assertNotIn('visit_done', dict(call.get_outcomes()))
        self.assertIn('visit_done', dict(visit.get_outcomes()))
        self.assertNotIn('busy', dict(visit.get_outcomes()))

    @with_transaction()
    def test_outcome_of_another_kind_is_refused(self):
        Task = Pool().get('crm.task')
        with set_company(create_company()):
            task = new_task(kind='site_visit', due=utcnow())
            with self.assertRaises(ValidationError):
                Task.log_outcome([task], 'busy')
            self.assertEqual(task.state, 'open')

    @with_transaction()
    def test_reminder_cron_sends_only_due_reminders_once(self):
        pool = Pool()
        Task = pool.get('crm.task')
        Notification = pool.get('res.notification')
        with set_company(create_company()):
            owner = admin()
            soon = new_task(name="Soon", owner=owner.id,
                due=utcnow() + dt.timedelta(minutes=10))
            later = new_task(name="Later", owner=owner.id,
                due=utcnow() + 3 * HOUR)
            self.assertEqual(Task.send_reminders(), [soon])
            self.assertEqual(Task.send_reminders(), [])
            notification, = Notification.search([('user', '=', owner.id)])
            self.assertEqual(notification.label, "Reminder: Soon")
            self.assertEqual(json.loads(notification.records), [soon.id])
            self.assertEqual(Task(soon.id).remind_at, None)
            self.assertTrue(Task(soon.id).reminded_at)
            self.assertEqual(Task(later.id).remind_at,
                later.due - dt.timedelta(minutes=15))
            # Three hours on, the later one is due, and only it.
            self.assertEqual(Task.send_reminders(utcnow() + 3 * HOUR),
                [later])

    @with_transaction()
    def test_done_cancelled_or_already_late_tasks_are_not_reminded(self):
        Task = Pool().get('crm.task')
        with set_company(create_company()):
            late = new_task(due=utcnow() - HOUR)
            done = new_task(due=utcnow() + dt.timedelta(minutes=5))
            cancelled = new_task(due=utcnow() + dt.timedelta(minutes=5))
            silent = new_task(due=utcnow() + dt.timedelta(minutes=5),
                remind_before=None)
            Task.log_outcome([done], 'connected')
            Task.cancel([cancelled])
            self.assertEqual(
                [t.remind_at for t in Task.browse(
                        [late, done, cancelled, silent])],
                [None, None, None, None])
            self.assertEqual(Task.send_reminders(), [])

    @with_transaction()
    def test_moving_the_due_time_moves_the_reminder(self):
        Task = Pool().get('crm.task')
        with set_company(create_company()):
            task = new_task(due=utcnow() + HOUR)
            due = utcnow() + 5 * HOUR
            Task.write([task], {'due': due,
                    'remind_before': dt.timedelta(hours=1)})
            self.assertEqual(Task(task.id).remind_at, due - HOUR)

    @with_transaction()
    def test_reminder_cron_reads_through_the_index(self):
        Task = Pool().get('crm.task')
        query, params = tuple(Task.due_reminders_query(utcnow(), 100))
        self.assertEqual(full_scans(query, params, 'crm_task'), [])

    @with_transaction()
    def test_reminder_goes_to_the_owners_whatsapp_when_set(self):
        pool = Pool()
        Task = pool.get('crm.task')
        Configuration = pool.get('crm.configuration')
        Queue = pool.get('ir.queue')
        with Simulator(access_token='token', phone_number_id='1') as sim, \
                set_company(create_company()):
            configure(self, 'kraya_crm', whatsapp_api_url=sim.url,
                whatsapp_access_token='token', whatsapp_phone_number_id='1')
            outbox._whatsapp_client = None
            try:
                owner = admin()
                owner.crm_whatsapp = '98200 12345'
                owner.save()
                self.assertEqual(owner.crm_whatsapp, '+919820012345')
                Configuration.write([Configuration(1)],
                    {'task_reminder_whatsapp': True})
                new_task(owner=owner.id, lead=new_lead().id,
                    due=utcnow() + dt.timedelta(minutes=5))
                Task.send_reminders()
                for task_id in Transaction().tasks:
                    Queue(task_id).run()
            finally:
                outbox._whatsapp_client = None
            sent, = sim.sent
            self.assertEqual(sent['to'], '919820012345')
            self.assertEqual(sent['template']['name'], 'task_reminder')
            self.assertEqual(sent['template']['parameters'][0],
                "Call about the 2 BHK")
            self.assertEqual(sent['template']['parameters'][2], "Asha Rao")

    @with_transaction()
    def test_overdue_is_open_and_past_due_and_searchable(self):
        Task = Pool().get('crm.task')
        with set_company(create_company()):
            late = new_task(due=utcnow() - HOUR)
            later = new_task(due=utcnow() + HOUR)
            done = new_task(due=utcnow() - HOUR)
            Task.log_outcome([done], 'no_answer')
            self.assertEqual([late.overdue, later.overdue, Task(done.id).overdue],
                [True, False, False])
            self.assertEqual(Task.search([('overdue', '=', True)]), [late])
            self.assertEqual(set(Task.search([('overdue', '=', False)])),
                {later, done})

    @with_transaction()
    def test_finishing_plans_the_next_task_chained_to_it(self):
        Task = Pool().get('crm.task')
        with set_company(create_company()):
            lead = new_lead()
            task = new_task(lead=lead.id, owner=admin().id, due=utcnow())
            due = utcnow() + 24 * HOUR
            planned, = Task.log_outcome([task], 'interested',
                "Wants to see it on Sunday",
                NextTask('site_visit', due, "Show the flat"))
            task = Task(task.id)
            self.assertEqual((task.state, task.outcome, task.outcome_note),
                ('done', 'interested', "Wants to see it on Sunday"))
            self.assertEqual(
                (planned.kind, planned.name, planned.due, planned.lead,
                    planned.owner, planned.previous, planned.state),
                ('site_visit', "Show the flat", due, lead, task.owner, task,
                    'open'))
            self.assertEqual(list(task.next_tasks), [planned])

    @with_transaction()
    def test_call_outcome_on_a_lead_is_its_first_response(self):
        pool = Pool()
        Task = pool.get('crm.task')
        Lead = pool.get('crm.lead')
        with set_company(create_company()):
            lead = new_lead()
            task = new_task(lead=lead.id, kind='whatsapp', due=utcnow())
            Task.log_outcome([task], 'no_answer', "Rang twice")
            call, = [m for m in Lead(lead.id).messages if m.channel == 'call']
            self.assertEqual(
                (call.direction, call.call_outcome, call.body,
                    call.author.id),
                ('outbound', 'no_answer', "Rang twice", Transaction().user))
            self.assertEqual(Lead(lead.id).first_response_at, call.at)

    @with_transaction()
    def test_visit_outcome_logs_no_call(self):
        pool = Pool()
        Task = pool.get('crm.task')
        Lead = pool.get('crm.lead')
        with set_company(create_company()):
            lead = new_lead()
            task = new_task(lead=lead.id, kind='site_visit', due=utcnow())
            Task.log_outcome([task], 'visit_done')
            self.assertEqual(
                [m for m in Lead(lead.id).messages if m.channel == 'call'],
                [])
            self.assertIsNone(Lead(lead.id).first_response_at)

    @with_transaction()
    def test_finish_wizard_logs_outcome_and_next_task(self):
        pool = Pool()
        Task = pool.get('crm.task')
        Finish = pool.get('crm.task.finish', type='wizard')
        with set_company(create_company()):
            task = new_task(lead=new_lead().id, due=utcnow())
            session_id, _, _ = Finish.create()
            finish = Finish(session_id)
            with Transaction().set_context(active_model='crm.task',
                    active_id=task.id, active_ids=[task.id]):
                defaults = finish.default_start(None)
                self.assertEqual(defaults['kind'], 'call')
                finish.start.kind = 'call'
                finish.start.outcome = 'busy'
                finish.start.note = None
                finish.start.plan_next = True
                finish.start.next_kind = 'call'
                finish.start.next_due = utcnow() + HOUR
                finish.start.next_name = None
                finish.transition_finish()
            task = Task(task.id)
            self.assertEqual((task.state, task.outcome), ('done', 'busy'))
            planned, = task.next_tasks
            self.assertEqual((planned.name, planned.kind), ("Call", 'call'))
