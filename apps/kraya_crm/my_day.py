"""My day: what a rep or a field agent has to do today, on the phone
(static/my_day/): their tasks due today or overdue and their hot leads
nobody has answered yet, each with the number to call, WhatsApp, and a
one-tap outcome that logs the call (the lead's first response) and
finishes the task. routes.py checks the session, the CSRF token and the
limits, then calls crm.my_day in a transaction of the signed-in user.

As in the inbox, what the user may see and change is the record rules'
business: tasks and leads are searched with access checked; the work is
then done as the system."""
import datetime as dt

from trytond.i18n import gettext
from trytond.model import Model
from trytond.pool import Pool
from trytond.transaction import Transaction, check_access, without_check_access

from .conversation import CALL_OUTCOMES, LoggedCall
from .exceptions import InboxRefusal
from .inbox import desk_url, iso, parse_iso
from .message import utcnow
from .reach import whatsapp_link
from .sequence import local_timezone
from .task import KINDS, NextTask, outcomes_of

# Until lead scoring gives crm.lead a band, "hot" is a score of 80 and
# more (the seeds: "call 80+ score leads within 1 hour").
OPEN_LEAD_STATUSES = ['new', 'contacted', 'qualified']
MAX_TASKS = 200
MAX_LEADS = 50
MAX_NOTE = 2000


def hot_lead_domain(Lead):
    "Hot leads: those the scoring puts in the hot band."
    return [('band', '=', 'hot')]


def end_of_today():
    "The end of today in India, naive UTC: what is due before is today's."
    zone = local_timezone()
    now = dt.datetime.now(zone)
    midnight = dt.datetime.combine(now.date() + dt.timedelta(days=1),
        dt.time(0), tzinfo=zone)
    return midnight.astimezone(dt.timezone.utc).replace(tzinfo=None)


class MyDay(Model):
    "What the My day page reads and does."
    __name__ = 'crm.my_day'
    __string__ = "My Day"

    @classmethod
    def day(cls):
        "The user's tasks due by tonight (overdue first) and hot leads waiting."
        pool = Pool()
        Task = pool.get('crm.task')
        Lead = pool.get('crm.lead')
        ModelAccess = pool.get('ir.model.access')
        FieldAccess = pool.get('ir.model.field.access')
        Rule = pool.get('ir.rule')
        user = Transaction().user
        with check_access():
            tasks = Task.search([
                    ('owner', '=', user),
                    ('state', '=', 'open'),
                    ('due', '<', end_of_today()),
                    ], order=[('due', 'ASC'), ('id', 'ASC')],
                limit=MAX_TASKS)
            ModelAccess.check('crm.lead', 'read')
            lead_rules = Rule.domain_get('crm.lead', mode='read')
            # A field agent may not read the score, yet is told which of
            # their leads are hot: the search is the system's, the record
            # rules still apply.
            show_score = FieldAccess.check('crm.lead', ['score'],
                raise_exception=False)
        leads = Lead.search([
                ('owner', '=', user),
                ('status', 'in', OPEN_LEAD_STATUSES),
                ('first_response_at', '=', None),
                lead_rules,
                ] + hot_lead_domain(Lead),
            order=[('create_date', 'ASC'), ('id', 'ASC')],
            limit=MAX_LEADS)
        conversations = cls._conversations(
            [t.lead for t in tasks if t.lead] + leads)
        now = utcnow()
        return {
            'tasks': [cls.task_json(t, conversations, now) for t in tasks],
            'hot_leads': [dict(cls.lead_json(l, conversations, now),
                    score=l.score if show_score else None)
                for l in leads],
            'kinds': [{'value': v, 'label': l} for v, l in KINDS],
            'call_outcomes': [{'value': v, 'label': l}
                for v, l in CALL_OUTCOMES],
            'now': iso(now),
            }

    @classmethod
    def _conversations(cls, leads):
        "The leads' conversations by lead id (reading the day makes none)."
        Conversation = Pool().get('crm.conversation')
        if not leads:
            return {}
        # Whoever may read the lead may open its conversation.
        with without_check_access():
            return {c.lead.id: c for c in Conversation.search([
                        ('lead', 'in', list({l.id for l in leads})),
                        ])}

    @classmethod
    def conversation_of(cls, lead_id):
        "The id of the lead's conversation, made if missing, if it is theirs."
        pool = Pool()
        Lead = pool.get('crm.lead')
        Conversation = pool.get('crm.conversation')
        with check_access():
            leads = Lead.search([('id', '=', lead_id)])
        if not leads:
            raise InboxRefusal('not_found',
                gettext('kraya_crm.msg_my_day_not_found'))
        with without_check_access():
            return Conversation.of_leads(leads)[lead_id].id

    @classmethod
    def lead_json(cls, lead, conversations, now):
        database = Transaction().database.name
        conversation = conversations.get(lead.id)
        number = lead.whatsapp_number
        waiting = now - lead.create_date if lead.create_date else None
        return {
            'id': lead.id, 'name': lead.name,
            'company_name': lead.company_name, 'city': lead.city,
            'phone': lead.phone, 'whatsapp': number,
            'tel_url': f'tel:{lead.phone or number}'
            if lead.phone or number else None,
            'wa_url': whatsapp_link(number),
            'desk_url': desk_url(lead),
            # A lead nobody wrote to yet has no conversation: the link
            # makes it (routes.my_day_inbox), as the lead's desk button does.
            'inbox_url': f'/{database}/crm/inbox?c={conversation.id}'
            if conversation else f'/{database}/crm/my-day/inbox/{lead.id}',
            'created_at': iso(lead.create_date),
            'waiting_minutes': int(waiting.total_seconds() // 60)
            if waiting else None,
            'first_response_at': iso(lead.first_response_at),
            }

    @classmethod
    def task_json(cls, task, conversations, now):
        return {
            'id': task.id, 'name': task.name,
            'kind': task.kind, 'kind_label': dict(KINDS)[task.kind],
            'due': iso(task.due), 'due_text': task.due_text,
            'overdue': task.overdue,
            'state': task.state, 'notes': task.notes,
            'outcome': task.outcome,
            'outcomes': [{'value': v, 'label': l}
                for v, l in outcomes_of(task.kind) if v],
            'previous': {'id': task.previous.id, 'name': task.previous.name,
                'outcome': task.previous.outcome}
            if task.previous else None,
            'lead': cls.lead_json(task.lead, conversations, now)
            if task.lead else None,
            'deal': {'id': task.deal.id, 'title': task.deal.title,
                'desk_url': desk_url(task.deal)} if task.deal else None,
            'desk_url': desk_url(task),
            }

    # --- Changing ---

    @classmethod
    def _writable(cls, model_name, record_id):
        """The record if the user may change it (the model's access and
        its write rules), else a refusal that it is not theirs."""
        pool = Pool()
        Model_ = pool.get(model_name)
        ModelAccess = pool.get('ir.model.access')
        Rule = pool.get('ir.rule')
        with check_access():
            found = ModelAccess.check(model_name, 'write',
                raise_exception=False) and Model_.search([
                    ('id', '=', record_id),
                    Rule.domain_get(model_name, mode='write'),
                    ])
        if not found:
            raise InboxRefusal('not_found',
                gettext('kraya_crm.msg_my_day_not_found'))
        return found[0]

    @classmethod
    def log_task_outcome(cls, task_id, values):
        """Finish a task with an outcome (a call or WhatsApp task logs the
        call on its lead), and plan values['next'] when given."""
        Task = Pool().get('crm.task')
        task = cls._writable('crm.task', task_id)
        if task.state != 'open':
            raise InboxRefusal('not_open',
                gettext('kraya_crm.msg_my_day_not_found'))
        outcome = values.get('outcome')
        if outcome not in {v for v, _ in outcomes_of(task.kind) if v}:
            raise InboxRefusal('bad_outcome', gettext(
                    'kraya_crm.msg_task_bad_outcome', task=task.name,
                    kind=dict(KINDS)[task.kind]))
        next_task = cls._next_task(values.get('next'))
        with without_check_access():
            planned = Task.log_outcome([task], outcome, cls._note(values),
                next_task)
        now = utcnow()
        task = Task(task.id)
        leads = [t.lead for t in [task] + planned if t.lead]
        conversations = cls._conversations(leads)
        return {
            'task': cls.task_json(task, conversations, now),
            'next_task': cls.task_json(planned[0], conversations, now)
            if planned else None,
            }

    @classmethod
    def plan_next(cls, task_id, values):
        "The task after this one (asked once its outcome is logged)."
        Task = Pool().get('crm.task')
        task = cls._writable('crm.task', task_id)
        next_task = cls._next_task(values)
        if next_task is None:
            raise InboxRefusal('bad_next',
                gettext('kraya_crm.msg_my_day_bad_next'))
        with without_check_access():
            planned, = Task.plan_next([task], next_task)
        return {'next_task': cls.task_json(planned,
                cls._conversations([planned.lead] if planned.lead else []),
                utcnow())}

    @classmethod
    def log_lead_call(cls, lead_id, values):
        "A call to a hot lead, logged with one tap: its first response."
        pool = Pool()
        Lead = pool.get('crm.lead')
        Message = pool.get('crm.message')
        lead = cls._writable('crm.lead', lead_id)
        outcome = values.get('outcome')
        if outcome not in dict(CALL_OUTCOMES):
            raise InboxRefusal('bad_outcome',
                gettext('kraya_crm.msg_inbox_bad_call_outcome'))
        Message.log_calls([LoggedCall(lead, outcome, note=cls._note(values))])
        lead = Lead(lead.id)
        return {'lead': cls.lead_json(lead, cls._conversations([lead]),
                utcnow())}

    @staticmethod
    def _note(values):
        note = values.get('note')
        if not isinstance(note, str):
            return None
        return note.strip()[:MAX_NOTE] or None

    @staticmethod
    def _next_task(value):
        if not value:
            return None
        if (not isinstance(value, dict)
                or value.get('kind') not in dict(KINDS)
                or not value.get('due')):
            raise InboxRefusal('bad_next',
                gettext('kraya_crm.msg_my_day_bad_next'))
        name = value.get('name')
        name = name.strip()[:200] if isinstance(name, str) else None
        return NextTask(value['kind'], parse_iso(value['due']),
            name or None)
