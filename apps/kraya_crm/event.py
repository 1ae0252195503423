"""What happened in the CRM, kept once for whoever listens: a lead came
in or changed, a deal changed stage or was won or lost, a lead wrote to
us, a task was done.

An event is a row written in the transaction that made the change, so it
exists exactly when the change was committed, and its id orders it. The
listeners (outgoing webhooks, webhook.py) extend `Event.wanted` with the
events they want and `Event.notify` with what they do about new ones; an
event no one wants is not written at all, so a site without listeners
pays one small query per change."""
import json
from decimal import Decimal

from trytond.model import Index, ModelSQL, ModelView, fields
from trytond.pool import Pool, PoolMeta
from trytond.transaction import Transaction, without_check_access

EVENTS = [
    ('lead.created', "Lead Created"),
    ('lead.updated', "Lead Updated"),
    ('deal.stage_changed', "Deal Stage Changed"),
    ('deal.won', "Deal Won"),
    ('deal.lost', "Deal Lost"),
    ('message.received', "Message Received"),
    ('task.done', "Task Done"),
    ]
# What an event can be: a subscribed one, or a record an automation rule
# POSTs to the webhook it names (automation.py).
KINDS = EVENTS + [('automation', "Automation Rule")]
# The lead's fields a receiver is told changed. The rest are written by
# the system as the lead is worked (timestamps of the SLA, the score's
# decay): a lead.updated for those alone would be noise.
LEAD_FIELDS = {'name', 'company_name', 'phone', 'whatsapp', 'email', 'city',
    'subdivision', 'source', 'campaign', 'status', 'owner', 'team',
    'next_follow_up', 'notes', 'active'}


def json_value(value):
    "A field's value as JSON carries it: money as a string, ids for records."
    if isinstance(value, Decimal):
        return str(value)
    if hasattr(value, 'isoformat'):
        return value.isoformat()
    if isinstance(value, ModelSQL):
        return value.id
    return value


class Event(ModelSQL, ModelView):
    "Something that happened to a lead, a deal, a message or a task."
    __name__ = 'crm.event'
    __string__ = "CRM Event"
    kind = fields.Selection(KINDS, "Event", required=True, readonly=True)
    record = fields.Reference("Record", selection=[
            ('crm.lead', "Lead"),
            ('crm.deal', "Deal"),
            ('crm.message', "Message"),
            ('crm.task', "Task"),
            ], required=True, readonly=True)
    about = fields.Char("About", required=True, readonly=True,
        help="The lead or deal the event is about: the events of one are "
        "delivered in the order they happened.")
    data = fields.Text("Data", readonly=True,
        help="The record as it was when the event happened, in JSON.")
    company = fields.Many2One(
        'company.company', "Company", readonly=True, ondelete='CASCADE')

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_indexes.add(Index(t, (t.about, Index.Equality())))
        cls._order = [('id', 'DESC')]

    def get_rec_name(self, name):
        return f'{self.kind} {self.record.rec_name if self.record else ""}'

    @classmethod
    def wanted(cls):
        """The kinds of the events some listener wants; extended by them.
        Asked at each change, not cached: a webhook added in the desk
        (one process) must count at once for a lead the worker (another)
        captures, and the listeners' tables are a few rows."""
        return set()

    @classmethod
    def happened(cls, kind, records, extra=None, wanted=None):
        """Record the event `kind` for each record (with its extra data,
        {record: dict}), if anyone listens (`wanted`: the kinds, when the
        caller asked already); the events written."""
        if not records or kind not in (
                cls.wanted() if wanted is None else wanted):
            return []
        extra = extra or {}
        with without_check_access():
            events = cls.create([{
                        'kind': kind,
                        'record': str(record),
                        'about': record.event_about(),
                        'company': record.event_company(),
                        'data': json.dumps(
                            {**record.event_data(), **extra.get(record, {})},
                            default=json_value, sort_keys=True),
                        } for record in records])
            cls.notify(events)
        return events

    @classmethod
    def notify(cls, events):
        "New events were written; listeners extend this to act on them."

    def payload(self):
        "The event as a receiver gets it."
        return {
            'id': f'evt_{self.id}',
            'event': self.kind,
            'occurred_at': self.create_date.isoformat() + 'Z',
            'about': self.about,
            'data': json.loads(self.data),
            }


class EventSource:
    "A model whose changes are events: what a receiver learns of a record."
    __slots__ = ()

    def event_about(self):
        return str(self)

    def event_company(self):
        company = getattr(self, 'company', None)
        return company.id if company else None

    def event_data(self):
        return {'id': self.id}


def user_name(user):
    return user.rec_name if user else None


class Lead(EventSource, metaclass=PoolMeta):
    __name__ = 'crm.lead'

    def event_data(self):
        return {
            'id': self.id,
            'name': self.name,
            'company_name': self.company_name,
            'phone': self.phone,
            'whatsapp': self.whatsapp,
            'email': self.email,
            'city': self.city,
            'status': self.status,
            'score': self.score,
            'source': self.source.name if self.source else None,
            'campaign': self.campaign,
            'owner': user_name(self.owner),
            'created_at': self.create_date,
            }

    @classmethod
    def _erase_related(cls, leads, keys, pepper_value):
        """An erased person's events go, with the deliveries still on
        their way: they hold the name, number and messages (privacy.py)."""
        Event = Pool().get('crm.event')
        done = super()._erase_related(leads, keys, pepper_value)
        Event.delete(Event.search([('about', 'in',
                        [str(l) for l in leads]
                        + [str(d) for l in leads for d in l.deals])]))
        return done

    @classmethod
    def on_modification(cls, mode, leads, field_names=None):
        Event = Pool().get('crm.event')
        super().on_modification(mode, leads, field_names=field_names)
        if mode == 'create':
            Event.happened('lead.created', leads)
        elif mode == 'write':
            changed = sorted(set(field_names or ()) & LEAD_FIELDS)
            if changed:
                Event.happened('lead.updated', leads,
                    {lead: {'changed': changed} for lead in leads})


class Deal(EventSource, metaclass=PoolMeta):
    __name__ = 'crm.deal'

    def event_data(self):
        return {
            'id': self.id,
            'title': self.title,
            'lead': self.lead.id if self.lead else None,
            'customer': self.party.rec_name if self.party else None,
            'stage': self.stage.name,
            'stage_kind': self.stage.kind,
            'value': (self.currency.round(self.value)
                if self.value is not None else None),
            'currency': self.currency.code,
            'expected_close': self.expected_close,
            'owner': user_name(self.owner),
            'lost_reason': self.lost_reason,
            }


class StageHistory(metaclass=PoolMeta):
    __name__ = 'crm.deal.stage_history'

    @classmethod
    def on_modification(cls, mode, moves, field_names=None):
        Event = Pool().get('crm.event')
        super().on_modification(mode, moves, field_names=field_names)
        if mode != 'create':
            return
        # One question for the three kinds a move may be.
        wanted = Event.wanted()
        for kind, chosen in [
                ('deal.stage_changed', [m for m in moves if m.from_stage]),
                ('deal.won', [m for m in moves if m.to_stage.kind == 'won']),
                ('deal.lost', [m for m in moves
                        if m.to_stage.kind == 'lost']),
                ]:
            Event.happened(kind, [m.deal for m in chosen], {
                    m.deal: {
                        'from_stage': (m.from_stage.name
                            if m.from_stage else None),
                        'to_stage': m.to_stage.name,
                        'changed_by': user_name(m.changed_by),
                        } for m in chosen}, wanted=wanted)


class Message(EventSource, metaclass=PoolMeta):
    __name__ = 'crm.message'

    def event_about(self):
        return str(self.lead) if self.lead else str(self)

    def event_company(self):
        return self.lead.event_company() if self.lead else None

    def event_data(self):
        return {
            'id': self.id,
            'lead': self.lead.id if self.lead else None,
            'channel': self.channel,
            'kind': self.kind,
            'from': self.address,
            'subject': self.subject,
            'text': self.body,
            'at': self.at,
            }

    @classmethod
    def on_modification(cls, mode, messages, field_names=None):
        Event = Pool().get('crm.event')
        super().on_modification(mode, messages, field_names=field_names)
        if mode == 'create':
            Event.happened('message.received', cls.from_leads(messages))


class Task(EventSource, metaclass=PoolMeta):
    __name__ = 'crm.task'

    def event_about(self):
        return str(self.deal or self.lead or self)

    def event_company(self):
        owner = self.lead or self.deal
        return owner.event_company() if owner else (
            Transaction().context.get('company'))

    def event_data(self):
        return {
            'id': self.id,
            'name': self.name,
            'kind': self.kind,
            'lead': self.lead.id if self.lead else None,
            'deal': self.deal.id if self.deal else None,
            'owner': user_name(self.owner),
            'due': self.due,
            'outcome': self.outcome,
            'done_at': self.done_at,
            }

    @classmethod
    def on_modification(cls, mode, tasks, field_names=None):
        Event = Pool().get('crm.event')
        super().on_modification(mode, tasks, field_names=field_names)
        if mode == 'write' and 'state' in (field_names or ()):
            Event.happened('task.done', [t for t in tasks
                    if t.state == 'done'])
