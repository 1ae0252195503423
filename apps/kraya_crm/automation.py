"""Automation rules: an admin's "when this happens to a lead, deal or task
matching that, do these", written in the desk instead of code.

A rule is a trigger, a condition (a domain on the record, edited with the
desk's PYSON widget) and ordered actions.

- Changes fire rules where they happen (`Rule.fire`, one small query per
  change when no rule listens): a record created, a field changed from/to,
  a deal entering a stage, a message received or failed, a first-response
  SLA breached. The cron fires the timed ones: a record idle for N working
  hours, a task overdue, daily or weekly at a time in Asia/Kolkata.
- Firing only queues a task: the actions run in the worker after the
  user's transaction commits, on the whole list of records at once, each
  rule in a transaction of its own. A failing action never breaks the
  user's save: the rule's changes are rolled back, it is tried again record
  by record to find the culprit, and the failure is logged.
- Every run is logged per record (crm.automation.run), on the lead's and
  deal's Automation tab: rule, trigger, actions done, outcome, error,
  duration.
- Actions that change records fire rules in turn. The chain of rules that
  led to a run travels with it: a rule meeting itself in its chain, or a
  chain MAX_DEPTH long, is stopped and the log says why.
- A dry run lists the records a rule would act on now, acting on none."""
import datetime as dt
import json
import logging
import time
from decimal import Decimal, InvalidOperation
from zoneinfo import ZoneInfo

from sql import Literal
from sql.conditionals import Coalesce
from sql.operators import Exists

from trytond import backend
from trytond.i18n import gettext
from trytond.model import (
    DeactivableMixin, Index, ModelSQL, ModelView, fields, sequence_ordered)
from trytond.model.exceptions import AccessError, ValidationError
from trytond.model.fields.field import domain_validate
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Bool, Eval, If, PYSONDecoder
from trytond.tools import grouped_slice
from trytond.transaction import Transaction, without_check_access
from trytond.wizard import Button, StateView, Wizard

from . import python_action
from .indexes import CoveredIndexes
from .message import utcnow
from .task import KINDS as TASK_KINDS
from .template import render

logger = logging.getLogger(__name__)
QUEUE_NAME = 'crm_automation'
# A chain of rules firing rules stops at this depth.
MAX_DEPTH = 3
# Tries of a slice the database refused (a concurrent write), then failed.
RETRIES = 2
# The fields a Python action reads and may set: plain values.
PLAIN_TYPES = {'char', 'text', 'integer', 'float', 'numeric', 'boolean',
    'selection', 'date', 'many2one'}
# The records a timed trigger or a dry run takes at once.
BATCH = 1000
# The records a rule acts on in one transaction: Tryton checks every id
# of a list against every other when it browses one (quadratic).
CHUNK = 200
DRY_RUN_SHOWN = 100

MODELS = [
    ('crm.lead', "Lead"),
    ('crm.deal', "Deal"),
    ('crm.task', "Task"),
    ]
TRIGGERS = [
    ('created', "Is Created"),
    ('changed', "A Field Changes"),
    ('stage_entered', "Enters a Stage"),
    ('idle', "Is Idle"),
    ('message_received', "A Message Is Received"),
    ('message_failed', "A Message Fails"),
    ('task_overdue', "Is Overdue"),
    ('sla_breached', "Misses the First-Response Target"),
    ('daily', "Every Day"),
    ('weekly', "Every Week"),
    ]
# The triggers that make sense for each kind of record.
TRIGGERS_OF = {
    'crm.lead': {'created', 'changed', 'idle', 'message_received',
        'message_failed', 'sla_breached', 'daily', 'weekly'},
    'crm.deal': {'created', 'changed', 'stage_entered', 'idle',
        'message_received', 'daily', 'weekly'},
    'crm.task': {'created', 'changed', 'task_overdue', 'daily', 'weekly'},
    }
TIMED = {'idle', 'task_overdue', 'daily', 'weekly'}
WEEKDAYS = [(str(i), d) for i, d in enumerate([
            "Monday", "Tuesday", "Wednesday", "Thursday", "Friday",
            "Saturday", "Sunday"])]
ACTIONS = [
    ('set_field', "Set a Field"),
    ('move_stage', "Move to Stage"),
    ('assign', "Assign"),
    ('enrol', "Enrol in a Sequence"),
    ('stop_sequences', "Stop Sequences"),
    ('create_task', "Create a Task"),
    ('notify', "Notify"),
    ('send_whatsapp', "Send a WhatsApp Template"),
    ('send_email', "Send an Email"),
    ('add_tag', "Add a Tag"),
    ('post_webhook', "POST to a Webhook"),
    ('python', "Run Python (Administrators)"),
    ]
ACTIONS_OF = {
    'crm.lead': {k for k, _ in ACTIONS} - {'move_stage'},
    'crm.deal': {k for k, _ in ACTIONS},
    'crm.task': {'set_field', 'assign', 'create_task', 'notify',
        'post_webhook', 'send_whatsapp', 'send_email', 'enrol',
        'stop_sequences', 'python'},
    }


class AutomationError(ValidationError):
    pass


def only_for(field, *values, required=True):
    """The states of a setting shown (and, unless told, required) only when
    `field` is one of `values`: a trigger's or an action's own settings."""
    chosen = Eval(field).in_(list(values))
    states = {'invisible': ~chosen}
    if required:
        states['required'] = chosen
    return states


def lead_of(record):
    "The lead a lead, deal or task is about, if any."
    if record.__name__ == 'crm.lead':
        return record
    if record.__name__ == 'crm.task':
        return record.lead or (record.deal.lead if record.deal else None)
    return record.lead


def deal_of(record):
    if record.__name__ == 'crm.deal':
        return record
    if record.__name__ == 'crm.task':
        return record.deal
    return None


def value_text(value):
    "How a field's value reads in a rule's from/to: keys, ids or names."
    if value is None or value is False:
        return {''}
    if isinstance(value, ModelSQL):
        return {str(value.id), value.rec_name}
    if value is True:
        return {'true', 'True', '1'}
    return {str(value)}


class Rule(DeactivableMixin, ModelSQL, ModelView):
    "When something happens to a lead, deal or task matching a condition, "
    "do these actions."
    __name__ = 'crm.automation.rule'
    __string__ = "Automation Rule"
    name = fields.Char("Name", required=True,
        help="What the rule does, as the team says it, e.g. \"Proposal "
        "idle 3 days: follow-up task\".")
    applies_to = fields.Selection(MODELS, "Applies To", required=True,
        sort=False)
    trigger = fields.Selection(TRIGGERS, "When", required=True, sort=False)
    trigger_field = fields.Many2One('ir.model.field', "Field",
        domain=[('model', '=', Eval('applies_to', ''))],
        states=only_for('trigger', 'changed'))
    changed_from = fields.Char("From",
        states=only_for('trigger', 'changed', required=False),
        help="The value before (a key, an id or a name); empty: any.")
    changed_to = fields.Char("To",
        states=only_for('trigger', 'changed', required=False),
        help="The value after (a key, an id or a name); empty: any.")
    stage = fields.Many2One('crm.stage', "Stage",
        states=only_for('trigger', 'stage_entered'))
    idle_hours = fields.Integer("Idle For (Working Hours)",
        domain=[If(Eval('trigger') == 'idle',
                ('idle_hours', '>', 0), ())],
        states=only_for('trigger', 'idle'),
        help="Working hours of the business calendar without any change.")
    at_time = fields.Time("At (India Time)",
        states=only_for('trigger', 'daily', 'weekly'))
    weekday = fields.Selection([(None, "")] + WEEKDAYS, "On", sort=False,
        states=only_for('trigger', 'weekly'))
    condition = fields.Char("Only For Records Matching",
        help="A domain on the record, a list of conditions, e.g. "
        "[[\"city\", \"=\", \"Pune\"], [\"budget\", \">\", 1000000]]; "
        "empty: every record.")
    actions = fields.One2Many('crm.automation.action', 'rule', "Actions")
    company = fields.Many2One('company.company', "Company", required=True)
    checked_at = fields.Timestamp("Timed Trigger Checked At", readonly=True)
    runs = fields.One2Many('crm.automation.run', 'rule', "Runs",
        readonly=True)

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_indexes.add(Index(t, (t.applies_to, Index.Equality()),
                (t.trigger, Index.Equality())))
        cls._buttons.update({
                'dry_run': {'icon': 'tryton-search'},
                })

    @staticmethod
    def default_company():
        return Transaction().context.get('company')

    @staticmethod
    def default_applies_to():
        return 'crm.lead'

    @staticmethod
    def default_trigger():
        return 'created'

    @staticmethod
    def default_condition():
        return '[]'

    @fields.depends('trigger', 'applies_to')
    def on_change_applies_to(self):
        if self.trigger not in TRIGGERS_OF.get(self.applies_to, ()):
            self.trigger = 'created'

    @property
    def domain(self):
        "The condition as a domain."
        return PYSONDecoder({}).decode(self.condition or '[]')

    @classmethod
    def validate_fields(cls, rules, field_names):
        super().validate_fields(rules, field_names)
        pool = Pool()
        for rule in rules:
            try:
                domain_validate(rule.domain)
                with without_check_access():
                    pool.get(rule.applies_to).search(
                        rule.domain, limit=1, order=[])
            except Exception as exception:
                raise AutomationError(gettext(
                        'kraya_crm.msg_automation_condition',
                        rule=rule.rec_name, error=exception)) from exception
            if rule.trigger not in TRIGGERS_OF[rule.applies_to]:
                raise AutomationError(gettext(
                        'kraya_crm.msg_automation_trigger',
                        rule=rule.rec_name))

    # Firing -----------------------------------------------------------

    @classmethod
    def listening(cls, model, trigger):
        """The active rules of this kind of record and trigger, read from
        the table at each change (one small query), like the webhooks:
        a rule written in one process counts at once in the others."""
        table = cls.__table__()
        cursor = Transaction().connection.cursor()
        cursor.execute(*table.select(table.id, where=(
                    table.applies_to == model) & (table.trigger == trigger)
                & (table.active == Literal(True))))
        ids = [i for i, in cursor]
        return cls.browse(ids) if ids else []

    @classmethod
    def fire(cls, trigger, records, changes=None):
        """The rules listening for `trigger` on these records (one model)
        act on them after the commit, in the worker. `changes` is
        {field name: {record id: value before}} for 'changed'."""
        records = [r for r in records if r.id is not None and r.id >= 0]
        if not records:
            return
        rules = cls.listening(records[0].__name__, trigger)
        if not rules:
            return
        chain = list(Transaction().context.get('automation_chain') or [])
        with without_check_access():
            for rule in rules:
                chosen = rule.triggered_by(records, changes or {})
                if not chosen:
                    continue
                refusal = rule.refused_in(chain)
                if refusal:
                    Pool().get('crm.automation.run').log(
                        rule, chosen, 'stopped', chain, error=refusal)
                    continue
                with Transaction().set_context(queue_name=QUEUE_NAME):
                    cls.__queue__.run_triggered([rule],
                        rule.applies_to, [r.id for r in chosen], trigger,
                        chain)

    def triggered_by(self, records, changes):
        """The records of these for which the trigger's own settings hold
        (their company and condition are the worker's to check: this runs
        in the person's save)."""
        if self.trigger == 'changed':
            name = self.trigger_field.name
            if name not in changes:
                return []
            before = changes[name]
            records = [r for r in records if r.id in before
                and (not self.changed_from
                    or self.changed_from in value_text(before[r.id]))
                and (not self.changed_to
                    or self.changed_to in value_text(getattr(r, name)))]
        elif self.trigger == 'stage_entered':
            records = [r for r in records if r.stage == self.stage]
        return records

    def refused_in(self, chain):
        "Why the rule may not run at the end of this chain, if it may not."
        Rule = self.__class__
        names = [r.rec_name for r in Rule.browse(chain)] + [self.rec_name]
        if self.id in chain:
            return gettext('kraya_crm.msg_automation_loop',
                chain=" → ".join(names))
        if len(chain) >= MAX_DEPTH:
            return gettext('kraya_crm.msg_automation_depth',
                depth=MAX_DEPTH, chain=" → ".join(names))

    # Running ----------------------------------------------------------

    @classmethod
    def run_triggered(cls, rules, model, ids, trigger, chain=()):
        """The worker's task: each rule acts on the records (those still
        there and matching its condition), a slice at a time, each slice
        in a transaction of its own."""
        for rule in rules:
            for chunk in grouped_slice(ids, CHUNK):
                rule.run_isolated(list(chunk), trigger, list(chain))

    def run_isolated(self, ids, trigger, chain):
        """Act in a transaction of its own; on an error, roll back and try
        record by record, so one bad record does not hold back the rest,
        and log the failure of the one that failed."""
        transaction = Transaction()
        started = time.monotonic()
        try:
            for attempt in range(RETRIES + 1):
                try:
                    with transaction.new_transaction() as acting:
                        rule = self.__class__(self.id)
                        records = Pool().get(rule.applies_to).browse(ids)
                        rule.apply(records, trigger, chain)
                        acting.commit()
                    break
                except backend.DatabaseOperationalError:
                    # Another transaction wrote the same rows: again.
                    if attempt == RETRIES:
                        raise
                    time.sleep(0.1 * 2 ** attempt)
        except Exception as exception:
            if len(ids) > 1:
                for record_id in ids:
                    self.run_isolated([record_id], trigger, chain)
                return
            logger.info("automation rule %s failed on %s %s", self.id,
                self.applies_to, ids, exc_info=True)
            with transaction.new_transaction() as logging_:
                Run = Pool().get('crm.automation.run')
                rule = self.__class__(self.id)
                with without_check_access():
                    Run.log(rule, Pool().get(rule.applies_to).browse(ids),
                        'failed', chain, error=str(exception)[:2000],
                        trigger=trigger, started=started)
                logging_.commit()

    def apply(self, records, trigger, chain=()):
        """Do the actions on those of the records matching the condition,
        in the current transaction, and log a run for each; the records
        acted on. Actions run as the rule's author would: without the
        access rules of whoever triggered it."""
        Run = Pool().get('crm.automation.run')
        started = time.monotonic()
        with without_check_access(), Transaction().set_context(
                company=self.company.id, active_test=False):
            matched = self.matching(records)
            if not matched:
                return []
            done = []
            with Transaction().set_context(
                    automation_chain=list(chain) + [self.id]):
                for action in self.actions:
                    said = action.do(matched)
                    done.append(action.rec_name)
                    done.extend(f"  {line}" for line in said)
            Run.log(self, matched, 'done', chain, actions=done,
                trigger=trigger, started=started)
        return matched

    def matching(self, records):
        "Those of the records of the rule's company matching the condition."
        Model = Pool().get(self.applies_to)
        ids = [r.id for r in records]
        if not ids:
            return []
        return Model.search([('id', 'in', ids), self.company_domain(),
                self.domain], order=[])

    def company_domain(self):
        "The rule's records are its company's (a task: its lead's or deal's)."
        company = self.company.id
        if self.applies_to == 'crm.task':
            return ['OR', ('lead.company', '=', company),
                ('deal.company', '=', company),
                [('lead', '=', None), ('deal', '=', None)]]
        return [('company', '=', company)]

    # Timed triggers -----------------------------------------------------

    @classmethod
    def run_timed(cls):
        """The cron: fire the idle, overdue and scheduled rules whose
        moment came since it last looked."""
        now = utcnow()
        with without_check_access():
            rules = cls.search([('trigger', 'in', sorted(TIMED))])
            for rule in rules:
                records = rule.due_records(now)
                if records:
                    cls.fire_timed(rule, records)
            if rules:
                cls.write(rules, {'checked_at': now})

    @classmethod
    def fire_timed(cls, rule, records):
        with Transaction().set_context(queue_name=QUEUE_NAME):
            cls.__queue__.run_triggered([rule], rule.applies_to,
                [r.id for r in records], rule.trigger, [])

    def due_records(self, now):
        "The records the timed trigger holds for now (not yet acted on)."
        return getattr(self, f'_due_{self.trigger}')(now)

    def _due_task_overdue(self, now):
        Task = Pool().get('crm.task')
        since = self.checked_at or now - dt.timedelta(days=1)
        # Through the index on due: those that became late since the
        # last look.
        return Task.search([
                ('state', '=', 'open'),
                ('due', '>', since), ('due', '<=', now),
                self.domain], order=[('due', 'ASC')], limit=BATCH)

    def _due_idle(self, now):
        """Records matching the condition, unchanged for idle_hours working
        hours and not acted on by this rule since their last change, the
        longest idle first."""
        pool = Pool()
        Model = pool.get(self.applies_to)
        Run = pool.get('crm.automation.run')
        calendar = pool.get('crm.business_calendar').get_default()
        table, run = Model.__table__(), Run.__table__()
        changed = Coalesce(table.write_date, table.create_date)
        # Working hours are never fewer than clock hours: a first cut in
        # SQL; the calendar decides on what is left.
        cutoff = now - dt.timedelta(hours=self.idle_hours)
        acted = Exists(run.select(run.id, where=(run.rule == self.id)
                & (run.record_id == table.id) & (run.state == 'done')
                & (run.at >= changed)))
        cursor = Transaction().connection.cursor()
        cursor.execute(*table.select(table.id, changed,
                where=table.id.in_(Model.search(self.domain, order=[],
                        query=True))
                & (changed <= cutoff) & ~acted,
                order_by=[changed.asc], limit=BATCH))
        wanted = dt.timedelta(hours=self.idle_hours)
        due = []
        for record_id, since in cursor:
            if isinstance(since, str):
                # SQLite gives an expression's timestamp as its text.
                since = dt.datetime.fromisoformat(since)
            if calendar.working_between(since, now) >= wanted:
                due.append(record_id)
        return Model.browse(due)

    def _scheduled_at(self, now):
        "When the schedule last came, at or before now (UTC)."
        calendar = Pool().get('crm.business_calendar').get_default()
        zone = ZoneInfo(calendar.timezone)
        local = now.replace(tzinfo=dt.timezone.utc).astimezone(zone)
        at = dt.datetime.combine(local.date(), self.at_time, tzinfo=zone)
        if self.trigger == 'weekly':
            at -= dt.timedelta(days=(local.weekday() - int(self.weekday)) % 7)
        if at > local:
            at -= dt.timedelta(days=7 if self.trigger == 'weekly' else 1)
        return at.astimezone(dt.timezone.utc).replace(tzinfo=None)

    def _due_scheduled(self, now):
        Model = Pool().get(self.applies_to)
        came = self._scheduled_at(now)
        if self.checked_at and self.checked_at >= came:
            return []
        if not self.checked_at and now - came > dt.timedelta(minutes=30):
            # A rule written after today's time waits for the next one.
            return []
        return Model.search(self.domain, order=[('id', 'ASC')], limit=BATCH)

    _due_daily = _due_weekly = _due_scheduled

    # Dry run -------------------------------------------------------------

    def would_act_on(self, now=None):
        """The records the rule would act on now, acting on none: those
        matching the condition and, for a rule on a state (a stage, idle,
        overdue, a missed target), in that state."""
        Model = Pool().get(self.applies_to)
        now = now or utcnow()
        domain = [self.domain]
        if self.trigger == 'stage_entered':
            domain.append(('stage', '=', self.stage.id))
        elif self.trigger == 'task_overdue':
            domain += [('state', '=', 'open'), ('due', '<=', now)]
        elif self.trigger == 'sla_breached':
            domain.append(('sla_stage', 'in', ['owner', 'manager']))
        elif self.trigger == 'changed' and self.changed_to:
            field = Model._fields[self.trigger_field.name]
            if field._type in {'many2one', 'selection', 'char', 'boolean',
                    'integer'}:
                value = self.changed_to
                if field._type == 'boolean':
                    value = value.lower() in {'1', 'true', 'yes'}
                elif field._type == 'integer':
                    value = int(value)
                elif field._type == 'many2one' and not value.isdigit():
                    return [r for r in Model.search(domain, limit=BATCH)
                        if self.changed_to in value_text(
                            getattr(r, field.name))]
                domain.append((field.name, '=', value))
        if self.trigger == 'idle':
            return self._due_idle(now)
        return Model.search(domain, order=[('id', 'ASC')], limit=BATCH)

    @classmethod
    @ModelView.button_action('kraya_crm.wizard_automation_dry_run')
    def dry_run(cls, rules):
        pass


class Action(sequence_ordered(), ModelSQL, ModelView):
    "One thing a rule does to the records it acts on."
    __name__ = 'crm.automation.action'
    __string__ = "Automation Action"
    rule = fields.Many2One('crm.automation.rule', "Rule", required=True,
        ondelete='CASCADE')
    applies_to = fields.Function(fields.Selection(MODELS, "Applies To"),
        'on_change_with_applies_to')
    kind = fields.Selection(ACTIONS, "Do", required=True, sort=False)
    field = fields.Many2One('ir.model.field', "Field",
        domain=[('model', '=', Eval('applies_to', ''))],
        states=only_for('kind', 'set_field'))
    value = fields.Char("Value",
        states=only_for('kind', 'set_field', required=False),
        help="A key, a number, a date (YYYY-MM-DD), an id or a name; "
        "empty: clear the field.")
    stage = fields.Many2One('crm.stage', "Stage",
        states=only_for('kind', 'move_stage'))
    user = fields.Many2One('res.user', "User",
        states=only_for('kind', 'assign', 'notify', required=False),
        help="Assign: empty uses the assignment rules (leads). "
        "Notify: empty tells the record's owner.")
    follow_up = fields.Many2One('crm.sequence', "Sequence",
        states={
            'invisible': ~Eval('kind').in_(['enrol', 'stop_sequences']),
            'required': Eval('kind') == 'enrol',
            },
        help="Stop: empty stops every running sequence of the lead.")
    task_name = fields.Char("Task",
        states=only_for('kind', 'create_task'))
    task_kind = fields.Selection(TASK_KINDS, "Task Type",
        states=only_for('kind', 'create_task'))
    due_in_hours = fields.Integer("Due In (Working Hours)",
        states=only_for('kind', 'create_task', required=False))
    template = fields.Many2One('crm.whatsapp.template', "WhatsApp Template",
        domain=[('status', '=', 'APPROVED')],
        states=only_for('kind', 'send_whatsapp'))
    subject = fields.Char("Subject",
        states=only_for('kind', 'send_email'))
    text = fields.Text("Text",
        states={
            'invisible': ~Eval('kind').in_(['notify', 'send_email',
                    'send_whatsapp', 'create_task']),
            'required': Eval('kind').in_(['notify', 'send_email']),
            },
        help="Variables as in sequences: {lead.name}, {owner.name}, "
        "{deal.title}... For a WhatsApp template, one parameter per line.")
    tag = fields.Many2One('crm.tag', "Tag",
        states=only_for('kind', 'add_tag'))
    webhook = fields.Many2One('crm.webhook', "Webhook",
        states=only_for('kind', 'post_webhook'))
    code = fields.Text("Python",
        states=only_for('kind', 'python'),
        help="Runs for each record, restricted: record['field'] reads a "
        "field, set('field', value) writes one, log('text') notes in the "
        "run, enqueue('Sequence name') enrols the lead. No imports.")

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.__access__.add('rule')

    @fields.depends('rule', '_parent_rule.applies_to')
    def on_change_with_applies_to(self, name=None):
        return self.rule.applies_to if self.rule else None

    @classmethod
    def default_task_kind(cls):
        return 'call'

    def get_rec_name(self, name):
        kinds = dict(ACTIONS)
        what = (self.stage or self.user or self.follow_up or self.tag
            or self.webhook or self.template)
        detail = (what.rec_name if what else self.task_name or self.subject
            or (self.field.name if self.field else None))
        return f'{kinds[self.kind]}: {detail}' if detail else kinds[self.kind]

    @classmethod
    def validate_fields(cls, actions, field_names):
        super().validate_fields(actions, field_names)
        for action in actions:
            if action.kind not in ACTIONS_OF[action.rule.applies_to]:
                raise AutomationError(gettext(
                        'kraya_crm.msg_automation_action',
                        action=dict(ACTIONS)[action.kind],
                        rule=action.rule.rec_name))
            if action.kind == 'set_field':
                action.field_value()
            if action.kind == 'python':
                try:
                    python_action.check(action.code)
                except python_action.SnippetError as error:
                    raise AutomationError(gettext(
                            'kraya_crm.msg_automation_python',
                            rule=action.rule.rec_name, error=error)) from error

    @classmethod
    def check_modification(cls, mode, actions, values=None, external=False):
        """Python actions are the administrators': a snippet runs with the
        rule's power over every record."""
        pool = Pool()
        User = pool.get('res.user')
        ModelData = pool.get('ir.model.data')
        super().check_modification(
            mode, actions, values=values, external=external)
        if not external:
            return
        python = (any(a.kind == 'python' for a in actions)
            or (values or {}).get('kind') == 'python')
        if python and ModelData.get_id('res', 'group_admin') not in (
                User.get_groups()):
            raise AccessError(gettext('kraya_crm.msg_automation_python_admin'))

    def do(self, records):
        """Do the action on the records (a list of the rule's model); the
        lines it has to say in the run's log."""
        return getattr(self, f'_do_{self.kind}')(records) or []

    def field_value(self):
        "The value to set, converted from its text to the field's type."
        Model = Pool().get(self.rule.applies_to)
        field = Model._fields.get(self.field.name)
        text = (self.value or '').strip()
        if not text:
            return None
        try:
            if field._type == 'many2one':
                Target = Pool().get(field.model_name)
                found = (Target.search([('id', '=', int(text))])
                    if text.isdigit()
                    else Target.search([('rec_name', '=', text)], limit=1))
                if not found:
                    raise ValueError(text)
                return found[0].id
            if field._type == 'boolean':
                return text.lower() in {'1', 'true', 'yes'}
            if field._type == 'integer':
                return int(text)
            if field._type == 'numeric':
                return Decimal(text.replace(',', '').replace('₹', ''))
            if field._type == 'date':
                return dt.date.fromisoformat(text)
            if field._type in {'datetime', 'timestamp'}:
                return dt.datetime.fromisoformat(text)
            if field._type == 'selection':
                keys = {k for k, _ in Model.fields_get(
                        [field.name])[field.name]['selection']}
                if text not in keys:
                    raise ValueError(text)
            return text
        except (ValueError, InvalidOperation) as exception:
            raise AutomationError(gettext(
                    'kraya_crm.msg_automation_value', value=text,
                    field=self.field.string,
                    rule=self.rule.rec_name)) from exception

    def _do_set_field(self, records):
        Model = Pool().get(self.rule.applies_to)
        Model.write(records, {self.field.name: self.field_value()})

    def _do_move_stage(self, deals):
        Deal = Pool().get('crm.deal')
        # Through write, as the board and the desk: the stage's rules and
        # history apply.
        Deal.write([d for d in deals if d.stage != self.stage],
            {'stage': self.stage.id})

    def _do_assign(self, records):
        Model = Pool().get(self.rule.applies_to)
        if self.user:
            Model.write(records, {'owner': self.user.id})
        elif self.rule.applies_to == 'crm.lead':
            Model.assign(records, reassign=True)

    def _targets(self, records, sequence=None):
        """[(lead, deal)] of the records, for the sequence: its deal when it
        follows deals, else the lead alone (a thank-you to a won deal's
        customer is not about the deal, which is closed)."""
        by_deal = sequence and sequence.applies_to == 'deal'
        return [(lead_of(r), deal_of(r) if by_deal else None)
            for r in records if lead_of(r)]

    def _do_enrol(self, records):
        Enrollment = Pool().get('crm.enrollment')
        Enrollment.enrol(self.follow_up,
            self._targets(records, self.follow_up))

    def _do_stop_sequences(self, records):
        Enrollment = Pool().get('crm.enrollment')
        domain = [('lead', 'in', [l.id for l, _ in self._targets(records)])]
        if self.follow_up:
            domain.append(('sequence', '=', self.follow_up.id))
        Enrollment.end(Enrollment.running(domain), 'stopped', 'automation')

    def _do_create_task(self, records):
        pool = Pool()
        Task = pool.get('crm.task')
        calendar = pool.get('crm.business_calendar').get_default()
        due = calendar.add_working(utcnow(),
            dt.timedelta(hours=self.due_in_hours or 0))
        Task.save([Task(name=self.task_name, kind=self.task_kind,
                    lead=lead_of(r), deal=deal_of(r), owner=r.owner,
                    due=due, state='open',
                    notes=render(self.text, lead_of(r), deal_of(r))
                    if self.text and lead_of(r) else self.text)
                for r in records])

    def _do_notify(self, records):
        Notification = Pool().get('res.notification')
        Notification.save([Notification(user=self.user or r.owner,
                    label=self.rule.name,
                    description=(render(self.text, lead_of(r), deal_of(r))
                        if lead_of(r) else self.text),
                    icon='tryton-notification', model=r.__name__,
                    records=json.dumps([r.id]))
                for r in records if self.user or r.owner])

    def _do_send_whatsapp(self, records):
        self._send(records, 'whatsapp')

    def _do_send_email(self, records):
        self._send(records, 'email')

    def _send(self, records, channel):
        """Queue a message to each record's lead through the outbox, as a
        sequence step would: only to whom consent allows, and to no one
        twice for one run."""
        Message = Pool().get('crm.message')
        now = utcnow()
        messages, seen = [], set()
        for record in records:
            lead, deal = lead_of(record), deal_of(record)
            if not lead or lead.id in seen:
                continue
            seen.add(lead.id)
            message = Message(lead=lead, deal=deal, direction='outbound',
                channel=channel, attempts=0, send_after=now, at=now)
            address = (lead.whatsapp_number if channel == 'whatsapp'
                else lead.email)
            if not lead.may_contact(channel) or not address:
                message.status = 'skipped'
                message.kind = 'text' if channel == 'whatsapp' else 'email'
                message.body = self.rule.name
                message.error_message = gettext(
                    'kraya_crm.msg_automation_not_sent', channel=channel)
            elif channel == 'whatsapp':
                message.status, message.kind = 'queued', 'template'
                message.address = address
                message.template = self.template
                message.template_name = self.template.name
                message.template_language = self.template.language
                message.template_parameters = json.dumps([
                        render(line.strip(), lead, deal)
                        for line in (self.text or '').splitlines()
                        if line.strip()])
            else:
                message.status, message.kind = 'queued', 'email'
                message.address = address
                message.subject = render(self.subject, lead, deal)
                message.body = render(self.text, lead, deal)
            messages.append(message)
        Message.save(messages)
        if any(m.status == 'queued' for m in messages):
            Message.wake_outbox()

    def _do_add_tag(self, records):
        Model = Pool().get(self.rule.applies_to)
        Model.write(records, {'tags': [('add', [self.tag.id])]})

    def _do_post_webhook(self, records):
        """The records, as events of kind 'automation', to this one
        webhook: signed, retried and logged as every delivery."""
        pool = Pool()
        Event = pool.get('crm.event')
        Delivery = pool.get('crm.webhook.delivery')
        events = Event.create([{
                    'kind': 'automation',
                    'record': str(r),
                    'about': r.event_about(),
                    'company': self.rule.company.id,
                    'data': json.dumps({**r.event_data(),
                            'rule': self.rule.name},
                        default=str, sort_keys=True),
                    } for r in records])
        Delivery.create([{
                    'webhook': self.webhook.id,
                    'event': e.id,
                    'about': e.about,
                    'next_attempt_at': utcnow(),
                    } for e in events])
        Delivery.wake()


    def _do_python(self, records):
        """The snippet, run restricted in a child process on the records'
        plain values; what it asks for is done here, as set field and
        enrol would do it."""
        pool = Pool()
        Model = pool.get(self.rule.applies_to)
        Sequence = pool.get('crm.sequence')
        Enrollment = pool.get('crm.enrollment')
        readable = [n for n, f in Model._fields.items()
            if f._type in PLAIN_TYPES and not isinstance(f, fields.Function)]
        values = Model.read([r.id for r in records], readable)
        try:
            results = python_action.run(self.code, values)
        except python_action.SnippetError as error:
            raise AutomationError(gettext('kraya_crm.msg_automation_python',
                    rule=self.rule.rec_name, error=error)) from error
        # read() answers in no set order (PostgreSQL): pair by id.
        asked_of = {row['id']: asked for row, asked in zip(values, results)}
        lines = []
        for record in records:
            asked = asked_of[record.id]
            if asked['set']:
                Model.write([record], self._snippet_values(Model, asked['set']))
            for name in asked['enqueue']:
                sequences = Sequence.search([('name', '=', name)], limit=1)
                if not sequences:
                    raise AutomationError(gettext(
                            'kraya_crm.msg_automation_no_sequence',
                            sequence=name, rule=self.rule.rec_name))
                Enrollment.enrol(sequences[0],
                    self._targets([record], sequences[0]))
            lines.extend(f"{record.rec_name}: {line}"
                for line in asked['log'])
        return lines[:50]

    def _snippet_values(self, Model, asked):
        "The values a snippet set, checked and typed for Model.write."
        values = {}
        for name, value in asked.items():
            field = Model._fields.get(name)
            if (not field or field._type not in PLAIN_TYPES
                    or isinstance(field, fields.Function) or name in {'id', 'create_date',
                        'write_date', 'create_uid', 'write_uid'}):
                raise AutomationError(gettext(
                        'kraya_crm.msg_automation_python_field',
                        field=name, rule=self.rule.rec_name))
            if field._type == 'numeric' and value is not None:
                value = Decimal(str(value))
            values[name] = value
        return values


class Run(CoveredIndexes, ModelSQL, ModelView):
    "A rule acting on one record: what it did, or why it did not."
    __name__ = 'crm.automation.run'
    __string__ = "Automation Run"
    rule = fields.Many2One('crm.automation.rule', "Rule", required=True,
        readonly=True, ondelete='CASCADE')
    record = fields.Reference("Record", selection=MODELS, readonly=True)
    record_id = fields.Integer("Record ID", readonly=True,
        help="The record's id, for the idle trigger's look-up by index.")
    lead = fields.Many2One('crm.lead', "Lead", readonly=True,
        ondelete='CASCADE')
    deal = fields.Many2One('crm.deal', "Deal", readonly=True,
        ondelete='CASCADE')
    trigger = fields.Selection([(None, "")] + TRIGGERS, "Trigger",
        readonly=True)
    state = fields.Selection([
            ('done', "Done"),
            ('failed', "Failed"),
            ('stopped', "Stopped"),
            ], "Outcome", required=True, readonly=True)
    actions = fields.Text("Actions Done", readonly=True)
    error = fields.Text("Error", readonly=True,
        states={'invisible': ~Bool(Eval('error'))})
    chain = fields.Char("Fired By", readonly=True,
        help="The rules whose actions fired this one, first to last.")
    duration_ms = fields.Integer("Duration (ms)", readonly=True)
    at = fields.Timestamp("At", required=True, readonly=True)
    company = fields.Many2One('company.company', "Company", readonly=True)

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_indexes.update({
                Index(t, (t.lead, Index.Equality())),
                Index(t, (t.deal, Index.Equality())),
                Index(t, (t.rule, Index.Equality()), (t.record_id,
                        Index.Equality()), (t.at, Index.Range())),
                })
        cls._order = [('at', 'DESC'), ('id', 'DESC')]

    def get_rec_name(self, name):
        return f'{self.rule.rec_name} ({self.state})'

    @classmethod
    def log(cls, rule, records, state, chain, actions=(), error=None,
            trigger=None, started=None):
        "One run per record."
        Rule = Pool().get('crm.automation.rule')
        duration = (int((time.monotonic() - started) * 1000 / len(records))
            if started and records else None)
        fired_by = " → ".join(r.rec_name for r in Rule.browse(chain)) or None
        now = utcnow()
        return cls.create([{
                    'rule': rule.id,
                    'record': str(r),
                    'record_id': r.id,
                    'lead': lead.id if (lead := lead_of(r)) else None,
                    'deal': deal.id if (deal := deal_of(r)) else None,
                    'trigger': trigger or rule.trigger,
                    'state': state,
                    'actions': "\n".join(actions) or None,
                    'error': error,
                    'chain': fired_by,
                    'duration_ms': duration,
                    'at': now,
                    'company': rule.company.id,
                    } for r in records])


class DryRunResult(ModelView):
    "What a rule would act on now"
    __name__ = 'crm.automation.dry_run.result'
    rule = fields.Many2One('crm.automation.rule', "Rule", readonly=True)
    count = fields.Integer("Records", readonly=True)
    more = fields.Boolean("More Not Shown", readonly=True)
    leads = fields.Many2Many('crm.lead', None, None, "Leads", readonly=True,
        states=only_for('applies_to', 'crm.lead', required=False))
    deals = fields.Many2Many('crm.deal', None, None, "Deals", readonly=True,
        states=only_for('applies_to', 'crm.deal', required=False))
    tasks = fields.Many2Many('crm.task', None, None, "Tasks", readonly=True,
        states=only_for('applies_to', 'crm.task', required=False))
    applies_to = fields.Selection(MODELS, "Applies To", readonly=True)


class DryRun(Wizard):
    "Show which records a rule would act on now, acting on none."
    __name__ = 'crm.automation.dry_run'
    start_state = 'result'
    result = StateView('crm.automation.dry_run.result',
        'kraya_crm.automation_dry_run_result_view_form', [
            Button("Close", 'end', 'tryton-close', default=True),
            ])

    def default_result(self, fields):
        rule = self.record
        records = rule.would_act_on()
        shown = [r.id for r in records[:DRY_RUN_SHOWN]]
        kind = {'crm.lead': 'leads', 'crm.deal': 'deals',
            'crm.task': 'tasks'}[rule.applies_to]
        return {
            'rule': rule.id,
            'applies_to': rule.applies_to,
            'count': len(records),
            'more': len(records) > DRY_RUN_SHOWN,
            kind: shown,
            }


class Trigger:
    """A model whose changes fire rules: created, a field changed (with the
    value before), and the model's own moments."""
    __slots__ = ()

    @classmethod
    def on_write(cls, records, values):
        """The values before the write, of the fields a 'changed' rule
        watches, for the rules to compare with the values after."""
        pool = Pool()
        Rule = pool.get('crm.automation.rule')
        callbacks = super().on_write(records, values)
        rules = Rule.listening(cls.__name__, 'changed')
        watched = {r.trigger_field.name for r in rules} & set(values)
        if not watched:
            return callbacks
        before = {name: {r.id: getattr(r, name) for r in records}
            for name in watched}

        def fire():
            Rule.fire('changed', cls.browse([r.id for r in records]), before)
        return callbacks + [fire]

    @classmethod
    def on_modification(cls, mode, records, field_names=None):
        Rule = Pool().get('crm.automation.rule')
        super().on_modification(mode, records, field_names=field_names)
        if mode == 'create':
            Rule.fire('created', records)


class Lead(Trigger, metaclass=PoolMeta):
    __name__ = 'crm.lead'
    automation_runs = fields.One2Many('crm.automation.run', 'lead',
        "Automation", readonly=True)

    @classmethod
    def _chase(cls, leads, now):
        "The leads whose first response is now late fire their rules."
        Rule = Pool().get('crm.automation.rule')
        breached = [l for l in leads if not l.first_response_at
            and l.sla_due_at and now >= l.sla_due_at
            and l.sla_stage in {None, 'reminded'}]
        alerted = super()._chase(leads, now)
        Rule.fire('sla_breached', breached)
        return alerted


class Deal(Trigger, metaclass=PoolMeta):
    __name__ = 'crm.deal'
    automation_runs = fields.One2Many('crm.automation.run', 'deal',
        "Automation", readonly=True)


class Task(Trigger, metaclass=PoolMeta):
    __name__ = 'crm.task'


class StageHistory(metaclass=PoolMeta):
    __name__ = 'crm.deal.stage_history'

    @classmethod
    def on_modification(cls, mode, moves, field_names=None):
        Rule = Pool().get('crm.automation.rule')
        super().on_modification(mode, moves, field_names=field_names)
        if mode == 'create':
            Rule.fire('stage_entered', [m.deal for m in moves])


class Message(metaclass=PoolMeta):
    __name__ = 'crm.message'

    @classmethod
    def on_modification(cls, mode, messages, field_names=None):
        Rule = Pool().get('crm.automation.rule')
        super().on_modification(mode, messages, field_names=field_names)
        if mode == 'create':
            trigger = 'message_received'
            messages = cls.from_leads(messages)
        elif mode == 'write' and 'status' in (field_names or ()):
            trigger = 'message_failed'
            messages = [m for m in messages if m.direction == 'outbound'
                and m.status == 'failed']
        else:
            return
        Rule.fire(trigger, list({m.lead for m in messages if m.lead}))
        Rule.fire(trigger, list({m.deal for m in messages if m.deal}))


class Cron(metaclass=PoolMeta):
    __name__ = 'ir.cron'

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.method.selection.append(
            ('crm.automation.rule|run_timed', "Run timed automation rules"))
