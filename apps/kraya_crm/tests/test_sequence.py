"""Follow-up sequences in the database: enrolment, the engine's steps,
business hours, replies, stage moves and silence."""
import datetime as dt
import gc
import io
import unittest

from trytond.exceptions import UserError
from trytond.modules.company.tests import create_company, set_company
from trytond.pool import Pool
from trytond.tests.test_tryton import activate_module, with_transaction

from .. import cron_process
from ..engine import DueFollowUp, StepValues
from ..message import utcnow
from .plans import full_scans

ALWAYS = {
    'business_days': ['0', '1', '2', '3', '4', '5', '6'],
    'business_hours_start': dt.time(0, 0),
    'business_hours_end': dt.time(23, 59, 59),
    }


def make_sequence(steps, **values):
    "A sequence that may send at any hour, with these steps."
    Sequence = Pool().get('crm.sequence')
    sequence, = Sequence.create([{
                'name': "Nurture", **ALWAYS, **values,
                'steps': [('create', [{
                                'name': f"Step {i}", 'delay': 0,
                                'delay_unit': 'minutes', **step}
                            for i, step in enumerate(steps, 1)])],
                }])
    return sequence


def enrolling_source(code, sequence):
    "The lead source of this code, set to enrol its new leads in sequence."
    Source = Pool().get('crm.source')
    source, = Source.search([('code', '=', code)])
    source.follow_up_sequence = sequence
    source.save()
    return source


def whatsapp_lead(name="Asha Rao", **values):
    "A lead who opted in to WhatsApp."
    Lead = Pool().get('crm.lead')
    lead, = Lead.create([{'name': name, 'phone': '9876543210', **values}])
    Lead.opt_in([lead], 'whatsapp', 'form', "Ticked the box")
    return Lead(lead.id)


def run(now=None):
    "One tick of the engine, at `now` (a minute from now by default)."
    Enrollment = Pool().get('crm.enrollment')
    now = now or utcnow() + dt.timedelta(minutes=1)
    return Enrollment.advance(Enrollment.due(now, 1000), now)


TEXT = {'channel': 'whatsapp_text', 'body': "Namaste {lead.first_name}!",
    'template_name': 'welcome', 'template_parameters': '{lead.first_name}'}


class SequenceTestCase(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        activate_module('kraya_crm')

    @with_transaction()
    def test_new_lead_of_a_source_is_enrolled(self):
        pool = Pool()
        Lead = pool.get('crm.lead')
        with set_company(create_company()):
            sequence = make_sequence([TEXT])
            source = enrolling_source('website', sequence)
            (lead, _), = Lead.capture(
                [{'name': "Asha", 'phone': '+919876543210'}], source=source)
            enrollment, = lead.enrollments
            self.assertEqual(enrollment.sequence, sequence)
            self.assertEqual(enrollment.state, 'active')
            self.assertEqual(enrollment.next_step, sequence.steps[0])
            self.assertIsNotNone(enrollment.next_run_at)

    @with_transaction()
    def test_source_sequence_applies_from_the_next_lead_on(self):
        "Setting or clearing a source's sequence applies to the next lead."
        pool = Pool()
        Source = pool.get('crm.source')
        Lead = pool.get('crm.lead')
        with set_company(create_company()):
            sequence = make_sequence([TEXT])
            source, = Source.search([('code', '=', 'website')])

            def capture(phone):
                (lead, _), = Lead.capture(
                    [{'name': phone, 'phone': phone}], source=source)
                return len(lead.enrollments)

            before = capture('+919876543210')
            source.follow_up_sequence = sequence
            source.save()
            during = capture('+919876543211')
            source.follow_up_sequence = None
            source.save()
            after = capture('+919876543212')
            self.assertEqual((before, during, after), (0, 1, 0))

    @with_transaction()
    def test_imported_leads_are_enrolled_in_their_source_sequence(self):
        pool = Pool()
        Lead = pool.get('crm.lead')
        with set_company(create_company()):
            sequence = make_sequence([TEXT])
            enrolling_source('import', sequence)
            rows = ''.join(f'Lead {i},98765{i:05d}\n' for i in range(120))
            Lead.import_file(io.BytesIO(('Name,Mobile\n' + rows).encode()),
                'leads.csv', source='import')
            leads = Lead.search([])
            self.assertEqual(len(leads), 120)
            self.assertEqual({len(l.enrollments) for l in leads}, {1})

    @with_transaction()
    def test_enrolling_twice_keeps_one_running_enrollment(self):
        Enrollment = Pool().get('crm.enrollment')
        with set_company(create_company()):
            sequence = make_sequence([TEXT])
            lead = whatsapp_lead()
            Enrollment.enrol(sequence, [(lead, None), (lead, None)])
            Enrollment.enrol(sequence, [(lead, None)])
            self.assertEqual(
                Enrollment.search_count([('lead', '=', lead.id)]), 1)

    @with_transaction()
    def test_step_queues_rendered_whatsapp_message_and_schedules_next(self):
        Enrollment = Pool().get('crm.enrollment')
        with set_company(create_company()):
            sequence = make_sequence([TEXT, {
                        'channel': 'email', 'subject': "Brochure",
                        'body': "Dear {lead.name}", 'delay': 2,
                        'delay_unit': 'days'}])
            lead = whatsapp_lead()
            enrollment, = Enrollment.enrol(sequence, [(lead, None)])
            now = utcnow() + dt.timedelta(minutes=1)
            self.assertEqual(run(now), 1)
            message, = lead.messages
            self.assertEqual((message.status, message.kind, message.body,
                    message.template_parameters, message.address),
                ('queued', 'text', "Namaste Asha!", '["Asha"]',
                    '+919876543210'))
            self.assertEqual(message.step, sequence.steps[0])
            enrollment = Enrollment(enrollment.id)
            self.assertEqual(enrollment.next_step, sequence.steps[1])
            self.assertEqual(enrollment.next_run_at,
                now + dt.timedelta(days=2))
            self.assertEqual(lead.__class__(lead.id).status, 'contacted')

    @with_transaction()
    def test_failed_step_stops_its_follow_up_with_the_error(self):
        pool = Pool()
        Lead = pool.get('crm.lead')
        Enrollment = pool.get('crm.enrollment')
        with set_company(create_company()):
            sequence = make_sequence([TEXT, {**TEXT, 'delay': 2}])
            lead = whatsapp_lead()
            enrollment, = Enrollment.enrol(sequence, [(lead, None)])
            Enrollment._stop_failed(enrollment,
                ValueError("the template was deleted"))
            enrollment = Enrollment(enrollment.id)
            self.assertEqual((enrollment.state, enrollment.stop_reason,
                    enrollment.next_run_at), ('stopped', 'failed', None))
            message, = Lead(lead.id).messages
            self.assertEqual((message.status, message.step, message.body),
                ('skipped', sequence.steps[0], sequence.steps[0].name))
            self.assertIn("the template was deleted", message.error_message)

    @with_transaction()
    def test_cron_process_freezes_its_loaded_objects_once(self):
        Cron = Pool().get('ir.cron')
        self.assertTrue(issubclass(Cron, cron_process.Cron))
        cron_process._frozen = False
        gc.unfreeze()
        try:
            cron_process.freeze_loaded_objects()
            # The pool's classes and their fields are among them.
            self.assertGreater(gc.get_freeze_count(), 10_000)
            # The count is no witness for the second call: a frozen object
            # that dies leaves it. An object made after the first call is:
            # frozen objects are in no generation get_objects() lists.
            made_after = [Cron]
            cron_process.freeze_loaded_objects()
            self.assertTrue(
                any(o is made_after for o in gc.get_objects()))
        finally:
            gc.unfreeze()

    @with_transaction()
    def test_nothing_due_runs_nothing(self):
        Enrollment = Pool().get('crm.enrollment')
        with set_company(create_company()):
            sequence = make_sequence([{**TEXT, 'delay': 1,
                        'delay_unit': 'hours'}])
            lead = whatsapp_lead()
            Enrollment.enrol(sequence, [(lead, None)])
            self.assertEqual(run(), 0)
            self.assertEqual(len(lead.messages), 0)

    @with_transaction()
    def test_due_enrollments_are_read_through_the_index(self):
        Enrollment = Pool().get('crm.enrollment')
        query, params = tuple(Enrollment.due_query(utcnow(), 100))
        self.assertEqual(full_scans(query, params, 'crm_enrollment'), [])

    @with_transaction()
    def test_outbox_reads_due_messages_through_its_indexes(self):
        Message = Pool().get('crm.message')
        table = Message.__table__()
        for query in Message.outbox_due(table, utcnow(), 50, table.address):
            self.assertEqual(
                full_scans(*tuple(query), 'crm_message'), [], str(query))

    @with_transaction()
    def test_opted_out_channel_is_skipped_with_the_reason(self):
        pool = Pool()
        Lead = pool.get('crm.lead')
        Enrollment = pool.get('crm.enrollment')
        with set_company(create_company()):
            sequence = make_sequence([TEXT])
            lead = whatsapp_lead()
            Lead.opt_out([lead], 'whatsapp', "Sent STOP")
            Enrollment.enrol(sequence, [(lead, None)])
            self.assertEqual(run(), 0)
            message, = Lead(lead.id).messages
            self.assertEqual(message.status, 'skipped')
            self.assertIn("opted out", message.error_message)

    @with_transaction()
    def test_a_step_is_never_queued_twice_for_one_enrollment(self):
        pool = Pool()
        Enrollment = pool.get('crm.enrollment')
        Message = pool.get('crm.message')
        with set_company(create_company()):
            sequence = make_sequence([TEXT])
            lead = whatsapp_lead()
            enrollment, = Enrollment.enrol(sequence, [(lead, None)])
            run()
            # The first step's message again, as the engine would queue it.
            step, = sequence.steps
            follow_up, = DueFollowUp.read([enrollment], utcnow())
            again = Message(**follow_up.message_values(
                    StepValues.of([step])[step.id], utcnow()))
            with self.assertRaises(UserError):
                Message.save([again])

    @with_transaction()
    def test_reply_stops_enrollment_cancels_queue_and_tasks_owner(self):
        pool = Pool()
        Lead = pool.get('crm.lead')
        Enrollment = pool.get('crm.enrollment')
        Task = pool.get('crm.task')
        with set_company(create_company()):
            sequence = make_sequence([TEXT, {**TEXT, 'delay': 1}])
            lead = whatsapp_lead()
            enrollment, = Enrollment.enrol(sequence, [(lead, None)])
            run()
            Lead.record_inbound([(lead, utcnow(), True)])
            enrollment = Enrollment(enrollment.id)
            self.assertEqual((enrollment.state, enrollment.stop_reason),
                ('stopped', 'replied'))
            self.assertIsNone(enrollment.next_run_at)
            self.assertEqual([m.status for m in enrollment.messages],
                ['cancelled'])
            task, = Task.search([('lead', '=', lead.id)])
            self.assertIn("replied", task.name)
            Lead.record_inbound([(lead, utcnow(), True)])
            self.assertEqual(Task.search_count([('lead', '=', lead.id)]), 1)

    @with_transaction()
    def test_reply_pauses_until_the_lead_goes_silent(self):
        pool = Pool()
        Lead = pool.get('crm.lead')
        Enrollment = pool.get('crm.enrollment')
        with set_company(create_company()):
            sequence = make_sequence([TEXT, {**TEXT, 'delay': 1}],
                on_reply='pause', silence_hours=24)
            lead = whatsapp_lead()
            enrollment, = Enrollment.enrol(sequence, [(lead, None)])
            run()
            replied = utcnow()
            Lead.record_inbound([(lead, replied, True)])
            enrollment = Enrollment(enrollment.id)
            self.assertEqual(enrollment.state, 'paused')
            self.assertEqual(enrollment.next_run_at,
                replied + dt.timedelta(hours=24))
            self.assertEqual(run(replied + dt.timedelta(hours=23)), 0)
            self.assertEqual(run(replied + dt.timedelta(hours=25)), 1)
            self.assertEqual(Enrollment(enrollment.id).state, 'active')

    @with_transaction()
    def test_silent_lead_after_last_step_is_reengaged(self):
        Enrollment = Pool().get('crm.enrollment')
        with set_company(create_company()):
            reengage = make_sequence([TEXT], name="Win back")
            sequence = make_sequence([TEXT], silence_hours=48,
                reengage_sequence=reengage.id)
            lead = whatsapp_lead()
            enrollment, = Enrollment.enrol(sequence, [(lead, None)])
            start = utcnow() + dt.timedelta(minutes=1)
            run(start)
            run(start + dt.timedelta(hours=49))
            enrollment = Enrollment(enrollment.id)
            self.assertEqual((enrollment.state, enrollment.stop_reason),
                ('completed', 'reengaged'))
            self.assertEqual(Enrollment.search_count([
                        ('sequence', '=', reengage.id),
                        ('lead', '=', lead.id),
                        ('state', '=', 'active')]), 1)

    @with_transaction()
    def test_deal_entering_stage_is_enrolled_and_won_stops_it(self):
        pool = Pool()
        Lead = pool.get('crm.lead')
        Stage = pool.get('crm.stage')
        Deal = pool.get('crm.deal')
        Enrollment = pool.get('crm.enrollment')
        with set_company(create_company()):
            sequence = make_sequence([TEXT], applies_to='deal')
            proposal, = Stage.search([('name', '=', "Proposal Sent")])
            won, = Stage.search([('kind', '=', 'won')])
            proposal.follow_up_sequence = sequence
            proposal.save()
            lead = whatsapp_lead()
            deal, = Lead.convert_to_deals([lead])
            Deal.write([deal], {'stage': proposal.id})
            enrollment, = Enrollment.search([('deal', '=', deal.id)])
            self.assertEqual(enrollment.state, 'active')
            Deal.write([deal], {'stage': won.id})
            enrollment = Enrollment(enrollment.id)
            self.assertEqual((enrollment.state, enrollment.stop_reason),
                ('stopped', 'closed'))

    @with_transaction()
    def test_task_and_notification_steps_reach_the_owner(self):
        pool = Pool()
        Enrollment = pool.get('crm.enrollment')
        Task = pool.get('crm.task')
        Notification = pool.get('res.notification')
        User = pool.get('res.user')
        with set_company(create_company()):
            owner, = User.search([('login', '=', 'admin')])
            sequence = make_sequence([
                    {'channel': 'task', 'body': "Call {lead.name}\nAsk budget"},
                    {'channel': 'notify', 'body': "{lead.name} got 2 steps"},
                    ])
            lead = whatsapp_lead(owner=owner.id)
            Enrollment.enrol(sequence, [(lead, None)])
            run()
            run(utcnow() + dt.timedelta(minutes=2))
            task, = Task.search([('lead', '=', lead.id)])
            self.assertEqual((task.name, task.notes, task.owner),
                ("Call Asha Rao", "Ask budget", owner))
            notification, = Notification.search([('user', '=', owner.id)])
            self.assertEqual(notification.description, "Asha Rao got 2 steps")

    @with_transaction()
    def test_condition_skips_leads_not_matching(self):
        Enrollment = Pool().get('crm.enrollment')
        with set_company(create_company()):
            sequence = make_sequence([
                    {**TEXT, 'condition': '[["city", "=", "Mumbai"]]'}])
            pune = whatsapp_lead(city="Pune")
            Enrollment.enrol(sequence, [(pune, None)])
            self.assertEqual(run(), 0)
            message, = pune.__class__(pune.id).messages
            self.assertEqual(message.status, 'skipped')

    @with_transaction()
    def test_unknown_template_variable_is_refused(self):
        with set_company(create_company()):
            with self.assertRaises(UserError) as context:
                make_sequence([{**TEXT, 'body': "Hi {lead.__class__}"}])
            self.assertIn("{lead.__class__}", str(context.exception))

    @with_transaction()
    def test_business_hours_postpone_to_next_opening_in_kolkata(self):
        with set_company(create_company()):
            sequence = make_sequence([TEXT], business_days=[
                    '0', '1', '2', '3', '4', '5'],
                business_hours_start=dt.time(9, 0),
                business_hours_end=dt.time(20, 0),
                quiet_hours_start=dt.time(13, 0),
                quiet_hours_end=dt.time(14, 0))
            # Sunday 2026-11-29 10:00 IST = 04:30 UTC: closed.
            sunday = dt.datetime(2026, 11, 29, 4, 30)
            self.assertFalse(sequence.is_open(sunday))
            # Monday 09:00 IST = 03:30 UTC.
            self.assertEqual(sequence.next_open(sunday),
                dt.datetime(2026, 11, 30, 3, 30))
            # Monday 13:30 IST is quiet: 14:00 IST = 08:30 UTC.
            self.assertEqual(sequence.next_open(dt.datetime(2026, 11, 30, 8)),
                dt.datetime(2026, 11, 30, 8, 30))
            # Friday 21:00 IST: Saturday 09:00 IST.
            self.assertEqual(
                sequence.next_open(dt.datetime(2026, 11, 27, 15, 30)),
                dt.datetime(2026, 11, 28, 3, 30))

    @with_transaction()
    def test_quiet_hours_covering_the_day_wait_a_day_not_spin(self):
        with set_company(create_company()):
            sequence = make_sequence([TEXT],
                quiet_hours_start=dt.time(0, 0),
                quiet_hours_end=dt.time(23, 59, 59))
            at = dt.datetime(2026, 11, 30, 4, 0)
            self.assertEqual(sequence.next_open(at),
                at + dt.timedelta(days=1))

    @with_transaction()
    def test_sequence_without_business_days_is_refused(self):
        with set_company(create_company()):
            with self.assertRaises(UserError):
                make_sequence([TEXT], business_days=[])

    @with_transaction()
    def test_closed_hours_move_the_step_not_skip_it(self):
        Enrollment = Pool().get('crm.enrollment')
        with set_company(create_company()):
            sequence = make_sequence([TEXT], business_days=['0'],
                business_hours_start=dt.time(9, 0),
                business_hours_end=dt.time(10, 0))
            lead = whatsapp_lead()
            enrollment, = Enrollment.enrol(sequence, [(lead, None)])
            sunday = dt.datetime(2026, 11, 29, 4, 30)
            Enrollment.write([enrollment], {'next_run_at': sunday})
            self.assertEqual(Enrollment.advance([enrollment], sunday), 0)
            self.assertEqual(Enrollment(enrollment.id).next_run_at,
                dt.datetime(2026, 11, 30, 3, 30))

    @with_transaction()
    def test_figures_count_enrolled_sent_and_replied(self):
        pool = Pool()
        Lead = pool.get('crm.lead')
        Enrollment = pool.get('crm.enrollment')
        Message = pool.get('crm.message')
        Sequence = pool.get('crm.sequence')
        with set_company(create_company()):
            sequence = make_sequence([TEXT])
            asha = whatsapp_lead()
            ravi = whatsapp_lead("Ravi", phone='9876500000')
            Enrollment.enrol(sequence, [(asha, None), (ravi, None)])
            run()
            Message.write(Message.search([('lead', '=', asha.id)]),
                {'status': 'read'})
            Lead.record_inbound([(asha, utcnow(), True)])
            sequence = Sequence(sequence.id)
            self.assertEqual((sequence.figure_enrolled, sequence.figure_sent,
                    sequence.figure_read, sequence.figure_replied,
                    sequence.figure_reply_rate), (2, 1, 1, 1, 50.0))
