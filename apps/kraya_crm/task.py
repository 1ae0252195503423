"""Tasks: the calls, WhatsApps, meetings, site visits and emails a person
has to do for a lead or a deal, with a reminder before they are due, an
outcome when they are done and, like Odoo's "next activity", the next
task planned in the same breath.

The reminder cron selects by `remind_at`, indexed on open tasks only, and
clears it as it reminds: each reminder goes once, and a minute's run reads
only the tasks due for one. Logging the outcome of a call or WhatsApp task
on a lead logs the call on the lead's timeline, so it counts as the first
response as a call logged in the inbox does."""
import datetime as dt
import json
import logging
from dataclasses import dataclass

from sql import Null

from trytond.i18n import gettext
from trytond.model import Index, ModelSQL, ModelView, Workflow, fields
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Eval, If
from trytond.transaction import Transaction, without_check_access
from trytond.wizard import Button, StateTransition, StateView, Wizard

from .conversation import LoggedCall
from .exceptions import TaskOutcomeError
from .indexes import CoveredIndexes
from .message import utcnow
from .sequence import local_timezone

logger = logging.getLogger(__name__)

KINDS = [
    ('call', "Call"),
    ('whatsapp', "WhatsApp"),
    ('meeting', "Meeting"),
    ('site_visit', "Site Visit"),
    ('email', "Email"),
    ]
OUTCOMES = [
    ('connected', "Connected"),
    ('interested', "Interested"),
    ('not_interested', "Not interested"),
    ('callback', "Asked to call back"),
    ('no_answer', "No answer"),
    ('busy', "Busy"),
    ('wrong_number', "Wrong number"),
    ('visit_done', "Visit done"),
    ('rescheduled', "Rescheduled"),
    ('no_show', "Did not come"),
    ('sent', "Sent"),
    ('no_reply', "No reply"),
    ]
# The outcomes that make sense for each kind of task, the most frequent
# first (My day shows the first three as one-tap buttons).
KIND_OUTCOMES = {
    'call': ['connected', 'no_answer', 'busy', 'interested',
        'not_interested', 'callback', 'wrong_number'],
    'meeting': ['visit_done', 'interested', 'not_interested', 'rescheduled',
        'no_show'],
    'email': ['sent', 'interested', 'not_interested', 'no_reply'],
    }
KIND_OUTCOMES['whatsapp'] = KIND_OUTCOMES['call']
KIND_OUTCOMES['site_visit'] = KIND_OUTCOMES['meeting']
# A call or WhatsApp task's outcome as the call it logs on the lead
# (conversation.CALL_OUTCOMES): "interested" was a call that connected.
CALL_OUTCOME = {
    'connected': 'connected', 'interested': 'connected',
    'not_interested': 'connected', 'callback': 'callback',
    'no_answer': 'no_answer', 'busy': 'busy', 'wrong_number': 'wrong_number',
    }
CALLING_KINDS = {'call', 'whatsapp'}
DEFAULT_REMIND_BEFORE = dt.timedelta(minutes=15)
# The desk calendar's colours (custom.js: calendar_colors), red when late.
TASK_COLOUR, OVERDUE_COLOUR = '#0f766e', '#b91c1c'


def outcomes_of(kind):
    "The outcome selection for a kind of task (all of them without one)."
    labels = dict(OUTCOMES)
    names = KIND_OUTCOMES.get(kind) or [name for name, _ in OUTCOMES]
    return [(None, "")] + [(name, labels[name]) for name in names]


@dataclass
class NextTask:
    "The task planned when one is finished."
    kind: str
    due: dt.datetime
    name: str = None


class Task(Workflow, CoveredIndexes, ModelSQL, ModelView):
    "Something a person has to do for a lead or a deal: a call, a visit."
    __name__ = 'crm.task'
    __string__ = "Task"
    name = fields.Char("Task", required=True)
    kind = fields.Selection(KINDS, "Type", required=True, sort=False)
    lead = fields.Many2One('crm.lead', "Lead", ondelete='CASCADE')
    deal = fields.Many2One('crm.deal', "Deal", ondelete='CASCADE')
    owner = fields.Many2One('res.user', "Assigned To")
    due = fields.DateTime("Due")
    remind_before = fields.TimeDelta("Remind Before",
        help="How long before it is due the owner is reminded; empty for "
        "no reminder.")
    remind_at = fields.Timestamp("Reminder At", readonly=True,
        help="When the owner will be reminded; empty once reminded.")
    reminded_at = fields.Timestamp("Reminded At", readonly=True)
    overdue = fields.Function(fields.Boolean("Overdue"),
        'get_overdue', searcher='search_overdue')
    calendar_colour = fields.Function(fields.Char("Calendar Colour"),
        'get_calendar_colour')
    notes = fields.Text("Notes")
    outcome = fields.Selection('get_outcomes', "Outcome", readonly=True,
        sort=False)
    outcome_note = fields.Text("Outcome Note", readonly=True)
    done_at = fields.Timestamp("Done At", readonly=True)
    previous = fields.Many2One('crm.task', "Previous Task", readonly=True,
        ondelete='SET NULL',
        help="The task whose finishing planned this one.")
    next_tasks = fields.One2Many('crm.task', 'previous', "Next Tasks",
        readonly=True)
    state = fields.Selection([
            ('open', "Open"),
            ('done', "Done"),
            ('cancelled', "Cancelled"),
            ], "State", required=True, readonly=True, sort=False)

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_indexes.update({
                Index(t, (t.owner, Index.Range()), (t.due, Index.Range()),
                    where=t.state == 'open'),
                Index(t, (t.lead, Index.Range())),
                Index(t, (t.deal, Index.Range())),
                # The reminder cron's only query; remind_at is set on open
                # tasks only (_arm_reminders), so the index holds just those.
                Index(t, (t.remind_at, Index.Range()),
                    where=t.remind_at != Null),
                Index(t, (t.previous, Index.Range()),
                    where=t.previous != Null),
                })
        cls._order = [('due', 'ASC NULLS LAST'), ('id', 'ASC')]
        cls._transitions |= {
            ('open', 'done'), ('open', 'cancelled'),
            ('done', 'open'), ('cancelled', 'open'),
            }
        cls._buttons.update({
                'done': {
                    'invisible': Eval('state') != 'open',
                    'depends': ['state'],
                    'icon': 'tryton-ok',
                    },
                'cancel': {
                    'invisible': Eval('state') != 'open',
                    'depends': ['state'],
                    'icon': 'tryton-cancel',
                    },
                'reopen': {
                    'invisible': Eval('state') == 'open',
                    'depends': ['state'],
                    'icon': 'tryton-undo',
                    },
                })

    @staticmethod
    def default_state():
        return 'open'

    @staticmethod
    def default_kind():
        return 'call'

    @staticmethod
    def default_remind_before():
        return DEFAULT_REMIND_BEFORE

    @staticmethod
    def default_owner():
        return Transaction().user or None

    @fields.depends('kind')
    def get_outcomes(self):
        return outcomes_of(self.kind)

    def get_overdue(self, name):
        return bool(self.state == 'open' and self.due
            and self.due < utcnow())

    @classmethod
    def search_overdue(cls, name, clause):
        _, operator, value = clause
        overdue = [('state', '=', 'open'), ('due', '<', utcnow())]
        if (operator == '=') == bool(value):
            return overdue
        return ['OR', ('state', '!=', 'open'), ('due', '=', None),
            ('due', '>=', utcnow())]

    def get_calendar_colour(self, name):
        return OVERDUE_COLOUR if self.overdue else TASK_COLOUR

    @classmethod
    def view_attributes(cls):
        return super().view_attributes() + [
            ('/tree', 'visual', If(Eval('overdue'), 'danger', '')),
            ]

    # --- Reminders ---

    @classmethod
    def on_modification(cls, mode, tasks, field_names=None):
        super().on_modification(mode, tasks, field_names=field_names)
        if mode == 'create' or (mode == 'write'
                and {'due', 'remind_before', 'state'} & set(field_names)):
            cls._arm_reminders(tasks)

    @classmethod
    def _arm_reminders(cls, tasks):
        """An open task due later is reminded remind_before its due time,
        once; one created already late is not (it shows as overdue)."""
        now = utcnow()
        by_time = {}
        for task in tasks:
            remind_at = None
            if (task.state == 'open' and task.due and task.due > now
                    and task.remind_before is not None):
                remind_at = task.due - task.remind_before
            if remind_at != task.remind_at:
                by_time.setdefault(remind_at, []).append(task)
        to_write = []
        for remind_at, armed in by_time.items():
            to_write.extend((armed, {'remind_at': remind_at}))
        if to_write:
            with without_check_access():
                cls.write(*to_write)

    @classmethod
    def due_reminders_query(cls, now, limit=None):
        "The ids of the open tasks to remind at `now`, through remind_at's index."
        table = cls.__table__()
        return table.select(table.id,
            where=(table.remind_at <= now) & (table.state == 'open'),
            order_by=[table.remind_at.asc, table.id.asc], limit=limit)

    @classmethod
    def send_reminders(cls, now=None):
        """The reminders due (the cron, every minute): a desk notification
        to the owner and, when the settings say so, a WhatsApp message."""
        pool = Pool()
        Configuration = pool.get('crm.configuration')
        Notification = pool.get('res.notification')
        now = now or utcnow()
        cursor = Transaction().connection.cursor()
        cursor.execute(*cls.due_reminders_query(now))
        tasks = cls.browse([i for i, in cursor])
        if not tasks:
            return []
        # Cleared first: a reminder goes once, even if a send fails.
        cls.write(tasks, {'remind_at': None, 'reminded_at': now})
        Notification.save([task._reminder_notification()
                for task in tasks if task.owner])
        if Configuration(1).task_reminder_whatsapp:
            to_whatsapp = [t for t in tasks
                if t.owner and t.owner.crm_whatsapp]
            if to_whatsapp:
                cls.__queue__.send_whatsapp_reminders(to_whatsapp)
        return tasks

    @property
    def due_text(self):
        "The due time as the rep reads it: 14 Mar 16:30 (India)."
        if not self.due:
            return ''
        local = self.due.replace(tzinfo=dt.timezone.utc).astimezone(
            local_timezone())
        return local.strftime('%d %b %H:%M')

    @property
    def reminder_text(self):
        return gettext('kraya_crm.msg_task_reminder',
            kind=dict(KINDS)[self.kind], task=self.name, due=self.due_text,
            lead=self.lead.rec_name if self.lead else '')

    def _reminder_notification(self):
        Notification = Pool().get('res.notification')
        return Notification(user=self.owner,
            label=gettext('kraya_crm.msg_task_reminder_label',
                task=self.name),
            description=self.reminder_text, icon='tryton-notification',
            model=self.__name__, records=json.dumps([self.id]))

    @classmethod
    def send_whatsapp_reminders(cls, tasks):
        """The reminders as WhatsApp messages to the owners (in the queue):
        a utility template, as WhatsApp takes no free text to someone who
        has not written in the last 24 hours."""
        from .outbox import whatsapp_client
        Configuration = Pool().get('crm.configuration')
        config = Configuration(1)
        client = whatsapp_client()
        for task in tasks:
            number = task.owner and task.owner.crm_whatsapp
            if not number:
                continue
            result = client.send_template(number,
                config.task_reminder_template or 'task_reminder', 'en',
                [task.name, task.due_text,
                    task.lead.rec_name if task.lead else '-'])
            if not result.sent:
                # A missed reminder is not worth a retry after the due time.
                logger.warning("Task %s: WhatsApp reminder not sent: %s %s",
                    task.id, result.error_code, result.error_message)

    # --- Finishing ---

    @classmethod
    @ModelView.button_action('kraya_crm.wizard_task_finish')
    def done(cls, tasks):
        "Log the outcome, then plan the next task (the wizard)."

    @classmethod
    @Workflow.transition('done')
    def mark_done(cls, tasks):
        cls.write(tasks, {'done_at': utcnow(), 'remind_at': None})

    @classmethod
    @ModelView.button
    @Workflow.transition('cancelled')
    def cancel(cls, tasks):
        pass

    @classmethod
    @ModelView.button
    @Workflow.transition('open')
    def reopen(cls, tasks):
        cls.write(tasks, {'done_at': None})

    @classmethod
    def log_outcome(cls, tasks, outcome, note=None, next_task=None,
            duration=None):
        """Finish open tasks with their outcome: a call or WhatsApp task on
        a lead logs the call (its first response if it is the first), and
        next_task (a NextTask) plans the following one on the same lead or
        deal. Returns the tasks planned."""
        pool = Pool()
        Message = pool.get('crm.message')
        for task in tasks:
            if outcome not in KIND_OUTCOMES[task.kind]:
                raise TaskOutcomeError(gettext(
                        'kraya_crm.msg_task_bad_outcome',
                        task=task.rec_name, kind=dict(KINDS)[task.kind]))
        cls.write(tasks, {'outcome': outcome, 'outcome_note': note or None})
        Message.log_calls([LoggedCall(task.lead, CALL_OUTCOME[outcome],
                    duration, note)
                for task in tasks
                if task.kind in CALLING_KINDS and task.lead])
        cls.mark_done(tasks)
        if next_task is None:
            return []
        return cls.plan_next(tasks, next_task)

    @classmethod
    def plan_next(cls, tasks, next_task):
        "The task after each of tasks, chained to it."
        planned = [cls(name=next_task.name or dict(KINDS)[next_task.kind],
                kind=next_task.kind, due=next_task.due, lead=task.lead,
                deal=task.deal, owner=task.owner, previous=task)
            for task in tasks]
        cls.save(planned)
        return planned


class FinishStart(ModelView):
    "Finish a task: its outcome and the next one."
    __name__ = 'crm.task.finish.start'
    kind = fields.Selection(KINDS, "Type", readonly=True)
    outcome = fields.Selection('get_outcomes', "Outcome", required=True,
        sort=False)
    note = fields.Text("Note")
    plan_next = fields.Boolean("Plan the Next Task")
    next_kind = fields.Selection(KINDS, "Next Type", sort=False,
        states={
            'invisible': ~Eval('plan_next'),
            'required': Eval('plan_next', False),
            })
    next_due = fields.DateTime("Next Due",
        states={
            'invisible': ~Eval('plan_next'),
            'required': Eval('plan_next', False),
            })
    next_name = fields.Char("Next Task",
        states={'invisible': ~Eval('plan_next')},
        help="Empty: named after its type.")

    @fields.depends('kind')
    def get_outcomes(self):
        return outcomes_of(self.kind)


class Finish(Wizard):
    "Finish a task"
    __name__ = 'crm.task.finish'
    start = StateView('crm.task.finish.start',
        'kraya_crm.task_finish_start_view_form', [
            Button("Cancel", 'end', 'tryton-cancel'),
            Button("Done", 'finish', 'tryton-ok', default=True),
            ])
    finish = StateTransition()

    def default_start(self, fields):
        kinds = {t.kind for t in self.records}
        kind = kinds.pop() if len(kinds) == 1 else None
        tomorrow = utcnow() + dt.timedelta(days=1)
        return {
            'kind': kind,
            'next_kind': kind or 'call',
            'next_due': tomorrow.replace(second=0, microsecond=0),
            }

    def transition_finish(self):
        Task = Pool().get('crm.task')
        start = self.start
        tasks = [t for t in self.records if t.state == 'open']
        next_task = NextTask(start.next_kind, start.next_due,
            start.next_name) if start.plan_next else None
        Task.log_outcome(tasks, start.outcome, start.note, next_task)
        return 'end'


class Configuration(metaclass=PoolMeta):
    __name__ = 'crm.configuration'
    task_reminder_whatsapp = fields.Boolean("Remind on WhatsApp Too",
        help="Send task reminders to the owner's WhatsApp number (on the "
        "user) as well as to the desk.")
    task_reminder_template = fields.Char("Reminder Template",
        states={'invisible': ~Eval('task_reminder_whatsapp')},
        help="The approved WhatsApp utility template of the reminders, with "
        "three parameters: the task, when it is due and the lead.")

    @classmethod
    def default_task_reminder_whatsapp(cls):
        return False

    @classmethod
    def default_task_reminder_template(cls):
        return 'task_reminder'


class Cron(metaclass=PoolMeta):
    __name__ = 'ir.cron'

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.method.selection.append(
            ('crm.task|send_reminders', "Send task reminders"))
