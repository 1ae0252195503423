"""Automation rules in one transaction: which changes fire which rules,
their conditions and actions, the run log, the loop guard, the timed
triggers and the dry run. The worker's own path (a transaction per rule,
a failing action rolled back and logged) runs on a live site:
tests/test_automation_rpc.py."""
import datetime as dt
import unittest
from decimal import Decimal

from trytond.model.exceptions import ValidationError
from trytond.modules.company.tests import create_company, set_company
from trytond.pool import Pool
from trytond.tests.test_tryton import activate_module, with_transaction
from trytond.transaction import Transaction

from ..automation import MAX_DEPTH
from ..message import utcnow
from .test_board import new_deals, stage
from .test_task import admin, new_lead, new_task


def rule(name, applies_to='crm.lead', trigger='created', actions=(),
        **values):
    Rule = Pool().get('crm.automation.rule')
    made, = Rule.create([{'name': name, 'applies_to': applies_to,
                'trigger': trigger,
                'actions': [('create', list(actions))], **values}])
    return made


def field(model, name):
    Field = Pool().get('ir.model.field')
    found, = Field.search([('model', '=', model), ('name', '=', name)])
    return found.id


def queued():
    """The automation tasks this transaction queued, taken off the queue:
    [(rule ids, model, record ids, trigger, chain)]."""
    Queue = Pool().get('ir.queue')
    tasks = [Queue(i) for i in Transaction().tasks]
    mine = [t for t in tasks if t.data['model'] == 'crm.automation.rule']
    Transaction().tasks[:] = [t.id for t in tasks if t not in mine]
    return [(t.data['instances'], *t.data['args']) for t in mine]


def run_queued(tasks=None):
    """What the worker does with the queued rules (or these tasks taken
    off the queue), in this transaction (the worker gives each rule its
    own): run until nothing more is queued."""
    Rule = Pool().get('crm.automation.rule')
    rounds = 0
    while (tasks := tasks or queued()):
        rounds += 1
        for rule_ids, model, ids, trigger, chain in tasks:
            for rule_ in Rule.browse(rule_ids):
                rule_.apply(Pool().get(model).browse(ids), trigger, chain)
        tasks = None
    return rounds


def runs(record):
    Run = Pool().get('crm.automation.run')
    return [(r.rule.name, r.state) for r in Run.search(
            [('record', '=', str(record))], order=[('id', 'ASC')])]


class AutomationTestCase(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        activate_module('kraya_crm')

    @with_transaction()
    def test_a_created_lead_matching_the_condition_is_tagged_assigned_and_tasked(self):
        pool = Pool()
        Tag = pool.get('crm.tag')
        Source = pool.get('crm.source')
        with set_company(create_company()):
            hot, = Tag.create([{'name': "Big budget"}])
            indiamart, = Source.create([{'name': "IndiaMART",
                        'code': 'indiamart-test'}])
            senior = admin()
            rule("IndiaMART over ₹10 lakh",
                condition=f'[["source", "=", {indiamart.id}], '
                '["budget", ">", 1000000]]',
                actions=[
                    {'kind': 'add_tag', 'tag': hot.id, 'sequence': 1},
                    {'kind': 'assign', 'user': senior.id, 'sequence': 2},
                    {'kind': 'create_task', 'task_name': "Call today",
                        'task_kind': 'call', 'due_in_hours': 1,
                        'sequence': 3},
                    ])
            big = new_lead("Big Buyer", source=indiamart.id,
                budget=Decimal(2500000))
            small = new_lead("Small Buyer", source=indiamart.id,
                budget=Decimal(500000))
            other = new_lead("Walk-in", budget=Decimal(5000000))
            self.assertEqual(run_queued(), 1)

            self.assertEqual([t.name for t in big.tags], ["Big budget"])
            self.assertEqual(big.owner, senior)
            task, = big.tasks
            self.assertEqual((task.name, task.owner), ("Call today", senior))
            for untouched in [small, other]:
                self.assertEqual((untouched.tags, untouched.tasks), ((), ()))
            run, = big.automation_runs
            self.assertEqual(run.state, 'done')
            self.assertEqual(run.actions.splitlines(), [
                    "Add a Tag: Big budget",
                    f"Assign: {senior.rec_name}",
                    "Create a Task: Call today"])
            self.assertEqual(small.automation_runs, ())

    @with_transaction()
    def test_one_task_for_a_whole_import(self):
        Lead = Pool().get('crm.lead')
        with set_company(create_company()):
            rule("Welcome", actions=[{'kind': 'create_task',
                        'task_name': "Welcome call", 'task_kind': 'call'}])
            Lead.create([{'name': f"Lead {i}"} for i in range(50)])
            (rule_ids, model, ids, trigger, chain), = queued()
            self.assertEqual((model, len(ids), trigger, chain),
                ('crm.lead', 50, 'created', []))

    @with_transaction()
    def test_a_field_change_fires_only_from_and_to_the_values_given(self):
        Lead = Pool().get('crm.lead')
        with set_company(create_company()):
            rule("Qualified straight from new", trigger='changed',
                trigger_field=field('crm.lead', 'status'),
                changed_from='new', changed_to='qualified',
                actions=[{'kind': 'notify', 'user': admin().id,
                        'text': "{lead.name} qualified"}])
            first, second = new_lead("First"), new_lead("Second")
            Lead.write([first], {'status': 'contacted'})
            Lead.write([first], {'city': "Pune"})
            self.assertEqual(queued(), [])
            Lead.write([first], {'status': 'qualified'})
            Lead.write([second], {'status': 'qualified'})
            (_, _, ids, trigger, _), = queued()
            self.assertEqual((ids, trigger), ([second.id], 'changed'))

    @with_transaction()
    def test_a_deal_entering_the_stage_gets_its_task(self):
        Deal = Pool().get('crm.deal')
        with set_company(create_company()):
            proposal = stage("Proposal Sent")
            rule("Proposal: follow up", applies_to='crm.deal',
                trigger='stage_entered', stage=proposal.id,
                actions=[{'kind': 'create_task', 'task_kind': 'call',
                        'task_name': "Ask about the proposal"}])
            sent, kept = new_deals("Sent", "Kept", owner=admin().id)
            Deal.write([sent], {'stage': proposal.id})
            Deal.write([kept], {'stage': stage("Qualified").id})
            run_queued()
            self.assertEqual([t.name for t in sent.tasks],
                ["Ask about the proposal"])
            self.assertEqual(kept.tasks, ())
            self.assertEqual(runs(sent), [("Proposal: follow up", 'done')])

    @with_transaction()
    def test_a_rule_triggering_itself_is_stopped_and_says_why(self):
        with set_company(create_company()):
            rule("City to Pune", trigger='changed',
                trigger_field=field('crm.lead', 'campaign'),
                actions=[{'kind': 'set_field', 'value': "Pune drive",
                        'field': field('crm.lead', 'campaign')}])
            lead = new_lead()
            Pool().get('crm.lead').write([lead], {'campaign': "Diwali"})
            run_queued()
            self.assertEqual(lead.campaign, "Pune drive")
            Run = Pool().get('crm.automation.run')
            # The stopped run is logged as the action fires it, before the
            # run that did the action.
            stopped, done = Run.search([], order=[('id', 'ASC')])
            self.assertEqual((done.state, stopped.state), ('done', 'stopped'))
            self.assertIn("would trigger itself", stopped.error)
            self.assertEqual(stopped.chain, "City to Pune")

    @with_transaction()
    def test_a_chain_of_rules_stops_at_the_depth_limit(self):
        Lead = Pool().get('crm.lead')
        with set_company(create_company()):
            chain = ['campaign', 'city', 'company_name', 'notes', 'email']
            for i, (watched, written) in enumerate(zip(chain, chain[1:])):
                value = 'a@example.in' if written == 'email' else f"step {i}"
                rule(f"Rule {i}", trigger='changed',
                    trigger_field=field('crm.lead', watched),
                    actions=[{'kind': 'set_field', 'value': value,
                            'field': field('crm.lead', written)}])
            lead = new_lead()
            Lead.write([lead], {'campaign': "Diwali"})
            run_queued()
            self.assertEqual(sorted(runs(lead)), [("Rule 0", 'done'),
                    ("Rule 1", 'done'), ("Rule 2", 'done'),
                    ("Rule 3", 'stopped')])
            self.assertEqual(MAX_DEPTH, 3)
            self.assertIsNone(lead.email)
            stopped, = [r for r in lead.automation_runs
                if r.state == 'stopped']
            self.assertEqual(stopped.chain, "Rule 0 → Rule 1 → Rule 2")
            self.assertIn("3 deep", stopped.error)

    @with_transaction()
    def test_an_inbound_message_fires_the_leads_rules(self):
        Message = Pool().get('crm.message')
        with set_company(create_company()):
            rule("Replied: stop sequences", trigger='message_received',
                actions=[{'kind': 'stop_sequences'}])
            lead = new_lead()
            Message.create([{'lead': lead.id, 'direction': 'outbound',
                        'channel': 'whatsapp', 'body': "Hello",
                        'status': 'sent', 'kind': 'text'}])
            self.assertEqual(queued(), [])
            Message.create([{'lead': lead.id, 'direction': 'inbound',
                        'channel': 'whatsapp', 'body': "Interested",
                        'kind': 'text', 'status': 'received',
                        'at': utcnow()}])
            (_, _, ids, trigger, _), = queued()
            self.assertEqual((ids, trigger), ([lead.id], 'message_received'))

    @with_transaction()
    def test_overdue_tasks_fire_once(self):
        Rule = Pool().get('crm.automation.rule')
        with set_company(create_company()):
            rule("Overdue: tell the manager", applies_to='crm.task',
                trigger='task_overdue', actions=[{'kind': 'notify',
                        'user': admin().id, 'text': "Late"}])
            late = new_task(due=utcnow() - dt.timedelta(hours=2))
            new_task(due=utcnow() + dt.timedelta(hours=2))
            Rule.run_timed()
            (_, _, ids, trigger, _), = queued()
            self.assertEqual((ids, trigger), ([late.id], 'task_overdue'))
            Rule.run_timed()
            self.assertEqual(queued(), [])

    @with_transaction()
    def test_an_idle_deal_fires_once_until_it_changes(self):
        pool = Pool()
        Rule = pool.get('crm.automation.rule')
        Deal = pool.get('crm.deal')
        with set_company(create_company()):
            rule("Proposal idle 3 days", applies_to='crm.deal',
                trigger='idle', idle_hours=27,
                condition=f'[["stage", "=", {stage("Proposal Sent").id}]]',
                actions=[{'kind': 'create_task', 'task_kind': 'call',
                        'task_name': "Nudge the proposal"}])
            idle, busy = new_deals("Idle", "Busy", owner=admin().id,
                stage=stage("Proposal Sent").id)
            table = Deal.__table__()
            cursor = Transaction().connection.cursor()
            cursor.execute(*table.update([table.write_date],
                    [utcnow() - dt.timedelta(days=10)],
                    where=table.id == idle.id))
            Rule.run_timed()
            tasks = queued()
            (_, _, ids, _, _), = tasks
            self.assertEqual(ids, [idle.id])
            run_queued(tasks)
            Rule.run_timed()
            self.assertEqual(queued(), [], "fired again without a change")
            self.assertEqual([t.name for t in Deal(idle.id).tasks],
                ["Nudge the proposal"])

    @with_transaction()
    def test_daily_and_weekly_times_are_india_time(self):
        Rule = Pool().get('crm.automation.rule')
        with set_company(create_company()):
            daily = rule("Morning list", applies_to='crm.task',
                trigger='daily', at_time=dt.time(9, 0))
            weekly = rule("Monday review", applies_to='crm.task',
                trigger='weekly', at_time=dt.time(9, 0), weekday='0')
            # Wednesday 9 December 2026, 10:00 in India.
            now = dt.datetime(2026, 12, 9, 4, 30)
            self.assertEqual(Rule(daily.id)._scheduled_at(now),
                dt.datetime(2026, 12, 9, 3, 30))
            self.assertEqual(Rule(weekly.id)._scheduled_at(now),
                dt.datetime(2026, 12, 7, 3, 30))
            # 08:00 in India: yesterday's time.
            self.assertEqual(Rule(daily.id)._scheduled_at(
                    dt.datetime(2026, 12, 9, 2, 30)),
                dt.datetime(2026, 12, 8, 3, 30))

    @with_transaction()
    def test_dry_run_lists_and_does_nothing(self):
        with set_company(create_company()):
            proposal = stage("Proposal Sent")
            made = rule("Proposal: follow up", applies_to='crm.deal',
                trigger='stage_entered', stage=proposal.id,
                actions=[{'kind': 'create_task', 'task_kind': 'call',
                        'task_name': "Ask about the proposal"}])
            inside, = new_deals("Inside", stage=proposal.id)
            new_deals("Outside", stage=stage("Qualified").id)
            self.assertEqual(made.would_act_on(), [inside])
            self.assertEqual((inside.tasks, runs(inside)), ((), []))

    @with_transaction()
    def test_wrong_rules_are_refused_with_a_clear_error(self):
        with set_company(create_company()):
            with self.assertRaisesRegex(ValidationError, "not a domain"):
                rule("Bad", condition='[["no_such_field", "=", 1]]')
            # What the desk's widget makes of a Python tuple typed in.
            with self.assertRaisesRegex(ValidationError, "list of conditions"):
                rule("Bad", condition='["Pune"]')
            with self.assertRaisesRegex(ValidationError, "does not happen"):
                rule("Bad", trigger='task_overdue')
            with self.assertRaisesRegex(ValidationError, "cannot be done"):
                rule("Bad", actions=[{'kind': 'move_stage',
                            'stage': stage("Won").id}])
            with self.assertRaisesRegex(ValidationError, "not a value"):
                rule("Bad", actions=[{'kind': 'set_field',
                            'field': field('crm.lead', 'status'),
                            'value': "maybe"}])

    @with_transaction()
    def test_a_switched_off_rule_costs_nothing_and_does_nothing(self):
        with set_company(create_company()):
            made = rule("Welcome", actions=[{'kind': 'create_task',
                        'task_name': "Welcome call", 'task_kind': 'call'}])
            made.active = False
            made.save()
            new_lead()
            self.assertEqual(queued(), [])


class PythonActionTestCase(unittest.TestCase):
    "The administrator's Python action, and what it may not do."

    @classmethod
    def setUpClass(cls):
        activate_module('kraya_crm')

    def python_rule(self, code):
        return rule("Snippet", actions=[{'kind': 'python', 'code': code}])

    @with_transaction()
    def test_a_snippet_reads_sets_logs_and_enrols(self):
        pool = Pool()
        Sequence = pool.get('crm.sequence')
        with set_company(create_company()):
            Sequence.create([{'name': "Big budget welcome"}])
            made = self.python_rule(
                "if (record['budget'] or 0) > 1000000:\n"
                "    set('campaign', 'Big ' + record['name'])\n"
                "    log('budget', record['budget'])\n"
                "    enqueue('Big budget welcome')\n")
            big = new_lead("Asha", budget=Decimal(2500000))
            small = new_lead("Ravi", budget=Decimal(100))
            made.apply([big, small], 'created')
            self.assertEqual((big.campaign, small.campaign), ("Big Asha", None))
            self.assertEqual([e.sequence.name for e in big.enrollments],
                ["Big budget welcome"])
            self.assertEqual(small.enrollments, ())
            run, = big.automation_runs
            self.assertIn("Asha: budget 2500000", run.actions)

    @with_transaction()
    def test_hostile_snippets_fail_clearly_and_the_crm_goes_on(self):
        from ..automation import AutomationError
        with set_company(create_company()):
            lead = new_lead()
            refused_at_save = {
                "x = ().__class__.__subclasses__()": "__subclasses__",
                "f = lambda: 0\nf.__globals__": "__globals__",
                }
            for code, reason in refused_at_save.items():
                with self.subTest(code=code), self.assertRaisesRegex(
                        ValidationError, reason):
                    self.python_rule(code)
            failing_at_run = {
                "import os": "__import__ not found",
                "open('/etc/passwd').read()": "name 'open' is not defined",
                "__import__('os')": "invalid variable name",
                # The CPU limit, or on a busy machine the wall clock first.
                "while True:\n    pass": "seconds of CPU|longer than 5 seconds",
                "x = []\nwhile True:\n    x.append('x' * 10 ** 6)": "MB",
                "set('id', 1)": "not a field it may set",
                }
            for code, reason in failing_at_run.items():
                with self.subTest(code=code):
                    try:
                        made = self.python_rule(code)
                    except ValidationError as error:
                        self.assertIn(reason, str(error))
                        continue
                    with self.assertRaisesRegex(AutomationError, reason):
                        made.apply([lead], 'created')
            lead.city = "Pune"
            lead.save()
            self.assertEqual(new_lead("Still works").name, "Still works")


class SlaTriggerTestCase(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        activate_module('kraya_crm')

    @with_transaction()
    def test_a_missed_first_response_fires_once(self):
        Lead = Pool().get('crm.lead')
        with set_company(create_company()):
            rule("Missed: tell the manager", trigger='sla_breached',
                actions=[{'kind': 'notify', 'user': admin().id,
                        'text': "{lead.name} waited too long"}])
            now = utcnow()
            late, on_time = new_lead("Late"), new_lead("On time")
            Lead.write([late], {'sla_due_at': now - dt.timedelta(minutes=5),
                    'sla_started_at': now - dt.timedelta(hours=2),
                    'first_response_at': None, 'sla_stage': 'reminded'})
            Lead.write([on_time], {
                    'sla_due_at': now + dt.timedelta(hours=1),
                    'sla_started_at': now - dt.timedelta(minutes=5),
                    'first_response_at': None, 'sla_stage': None})
            Lead._chase(Lead.browse([late.id, on_time.id]), now)
            (_, _, ids, trigger, _), = queued()
            self.assertEqual((ids, trigger), ([late.id], 'sla_breached'))
            # The next step of the chase (the manager's) is no new breach.
            Lead._chase(Lead.browse([late.id]), now + dt.timedelta(hours=3))
            self.assertEqual(queued(), [])


class ActionTestCase(unittest.TestCase):
    "The actions not met in the stories above, each on a small list."

    @classmethod
    def setUpClass(cls):
        activate_module('kraya_crm')

    @with_transaction()
    def test_move_stage_goes_through_the_deals_history(self):
        with set_company(create_company()):
            negotiation = stage("Negotiation")
            made = rule("To negotiation", applies_to='crm.deal',
                actions=[{'kind': 'move_stage', 'stage': negotiation.id}])
            deal, = new_deals("2 BHK Powai")
            self.assertEqual(made.apply([deal], 'created'), [deal])
            History = Pool().get('crm.deal.stage_history')
            # Read afresh: the test's instance keeps what it read before.
            (moved,) = Pool().get('crm.deal').read([deal.id], ['stage'])
            self.assertEqual(moved['stage'], negotiation.id)
            self.assertIn(negotiation, [h.to_stage for h in History.search(
                        [('deal', '=', deal.id)])])

    @with_transaction()
    def test_messages_go_only_where_consent_allows(self):
        pool = Pool()
        Lead = pool.get('crm.lead')
        Template = pool.get('crm.whatsapp.template')
        with set_company(create_company()):
            template, = Template.create([{'name': 'thank_you',
                        'language': 'en', 'status': 'APPROVED',
                        'category': 'MARKETING'}])
            made = rule("Thank them", actions=[
                    {'kind': 'send_email', 'subject': "Thanks {lead.name}",
                        'text': "Dear {lead.name}, thank you."},
                    {'kind': 'send_whatsapp', 'template': template.id,
                        'text': "{lead.name}"}])
            opted, silent = new_lead("Asha", email='asha@example.in'), \
                new_lead("Ravi")
            Lead.opt_in([opted], 'whatsapp', 'form', "Ticked the box")
            made.apply([opted, silent], 'created')
            sent = sorted((m.channel, m.status, m.subject or m.body)
                for m in opted.messages if m.direction == 'outbound')
            self.assertEqual(sent, [('email', 'queued', "Thanks Asha"),
                    ('whatsapp', 'queued', None)])
            whatsapp, = [m for m in opted.messages
                if m.channel == 'whatsapp']
            self.assertEqual((whatsapp.template_name,
                    whatsapp.template_parameters), ('thank_you', '["Asha"]'))
            # No email, no WhatsApp opt-in: on the timeline, not sent.
            self.assertEqual(sorted(m.status for m in silent.messages),
                ['skipped', 'skipped'])

    @with_transaction()
    def test_post_to_a_webhook_queues_a_signed_delivery(self):
        pool = Pool()
        Webhook = pool.get('crm.webhook')
        Delivery = pool.get('crm.webhook.delivery')
        with set_company(create_company()):
            webhook, = Webhook.create([{'name': "n8n",
                        'url': 'http://127.0.0.1:9/hook',
                        'events': ['task.done'], 'active': False}])
            made = rule("Tell n8n", actions=[
                    {'kind': 'post_webhook', 'webhook': webhook.id}])
            lead = new_lead()
            made.apply([lead], 'created')
            delivery, = Delivery.search([])
            self.assertEqual((delivery.webhook, delivery.event.kind,
                    delivery.about), (webhook, 'automation', str(lead)))
            payload = delivery.event.payload()
            self.assertEqual((payload['data']['name'],
                    payload['data']['rule']), ("Asha Rao", "Tell n8n"))
