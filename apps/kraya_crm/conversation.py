"""Conversations: the team inbox's view of a lead. One per lead, kept up to
date by every message on the lead's timeline (its deals' included): when
the lead last wrote, whether they wait for us, how many of their messages
nobody has opened, and whether the team is done with it or snoozed it.

Human answers (a message a teammate sent, an email, a logged call) are
also what makes a lead's first response: the speed-to-lead SLA builds on
lead.first_response_at."""
import datetime as dt
from dataclasses import dataclass

from sql import Literal, Null
from sql.aggregate import Max

from trytond import backend
from trytond.i18n import gettext
from trytond.model import Index, ModelSQL, ModelView, Unique, fields
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Eval
from trytond.tools import grouped_slice
from trytond.transaction import Transaction, without_check_access

from .bulk import BulkWrite, browse, plain_values
from .message import utcnow

WHATSAPP_WINDOW = dt.timedelta(hours=24)
# Channels that do not talk to the lead: they never make a conversation
# "waiting" or "answered", and are no last message.
INTERNAL_CHANNELS = {'note', 'event'}
CALL_OUTCOMES = [
    ('connected', "Connected"),
    ('no_answer', "No answer"),
    ('busy', "Busy"),
    ('wrong_number', "Wrong number"),
    ('callback', "Asked to call back"),
    ]


@dataclass
class LoggedCall:
    "A call a teammate made or took, as they log it on the lead."
    lead: object
    outcome: str  # one of CALL_OUTCOMES
    duration: dt.timedelta = None
    note: str = None


# What a conversation reads of its new messages.
TIMELINE_FIELDS = ['lead', 'at', 'channel', 'direction', 'author']


def is_human_answer(message):
    """A teammate answered the lead: a message they sent (not a follow-up
    step), or a call they logged."""
    if message.channel == 'call':
        return True
    return (message.direction == 'outbound' and bool(message.author)
        and message.channel in {'whatsapp', 'email'})


# BulkWrite: a tick of the follow-up engine touches a conversation a lead.
class Conversation(BulkWrite, ModelSQL, ModelView):
    "A lead's conversation with the team, as the inbox lists it."
    __name__ = 'crm.conversation'
    __string__ = "Conversation"

    lead = fields.Many2One('crm.lead', "Lead", required=True,
        ondelete='CASCADE', readonly=True)
    state = fields.Selection([
            ('open', "Open"),
            ('snoozed', "Snoozed"),
            ('done', "Done"),
            ], "State", required=True, readonly=True, sort=False)
    snoozed_until = fields.Timestamp("Snoozed Until", readonly=True,
        states={'invisible': Eval('state') != 'snoozed'})
    unread = fields.Integer("Unread", readonly=True,
        help="Messages from the lead nobody has opened yet.")
    waiting = fields.Boolean("Waiting for Us", readonly=True,
        help="The lead wrote last and no one has answered.")
    last_message = fields.Many2One('crm.message', "Last Message",
        readonly=True, ondelete='SET NULL')
    last_message_at = fields.Timestamp("Last Message At", readonly=True)
    last_inbound_at = fields.Timestamp("Last From Lead", readonly=True)
    last_answer_at = fields.Timestamp("Last Answered", readonly=True)
    changed_at = fields.Timestamp("Changed At", readonly=True,
        help="The last change the inbox shows live (a message, a status, "
        "an assignment).")

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.__access__.add('lead')
        t = cls.__table__()
        cls._sql_constraints += [
            ('lead_unique', Unique(t, t.lead),
                'kraya_crm.msg_conversation_lead_unique'),
            ]
        cls._sql_indexes.update({
                # The inbox's order: newest message from the lead first.
                Index(t,
                    (t.last_inbound_at, Index.Range(order='DESC NULLS LAST')),
                    (t.id, Index.Range(order='DESC'))),
                # What changed since the page last asked (live updates).
                Index(t, (t.changed_at, Index.Range())),
                Index(t, (t.snoozed_until, Index.Range()),
                    where=t.state == 'snoozed'),
                })
        cls._order = [
            ('last_inbound_at', 'DESC NULLS LAST'), ('id', 'DESC')]

    @classmethod
    def __register__(cls, module):
        table_h = cls.__table_handler__(module)
        created = not table_h.table_exist(cls._table)
        super().__register__(module)
        if created:
            cls._fill_from_messages()

    @classmethod
    def _fill_from_messages(cls):
        "A site updated to the inbox gets a conversation per lead with messages."
        pool = Pool()
        Message = pool.get('crm.message')
        table, message = cls.__table__(), Message.__table__()
        cursor = Transaction().connection.cursor()
        now = utcnow()
        inbound = message.direction == 'inbound'
        cursor.execute(*table.insert(
                [table.lead, table.state, table.unread, table.waiting,
                    table.last_message_at, table.last_inbound_at,
                    table.changed_at, table.create_uid, table.create_date],
                message.select(message.lead, Literal('open'), Literal(0),
                    Literal(False), Max(message.at),
                    Max(message.at, filter_=inbound), Literal(now),
                    Literal(0), Literal(now),
                    group_by=[message.lead])))
        cursor.execute(*table.update([table.waiting], [True],
                where=table.last_inbound_at == table.last_message_at))

    @classmethod
    def default_state(cls):
        return 'open'

    @classmethod
    def default_unread(cls):
        return 0

    @classmethod
    def default_waiting(cls):
        return False

    @classmethod
    def default_changed_at(cls):
        return utcnow()

    def get_rec_name(self, name):
        return self.lead.rec_name

    @classmethod
    def search_rec_name(cls, name, clause):
        return [('lead.rec_name',) + tuple(clause[1:])]

    @property
    def window_closes_at(self):
        "When WhatsApp's 24-hour window for free text closes, if it is open."
        last = self.lead.last_inbound_at
        if last and utcnow() - last < WHATSAPP_WINDOW:
            return last + WHATSAPP_WINDOW

    @classmethod
    def of_leads(cls, leads):
        "The conversations of these leads, by lead id, made when missing."
        found = cls._existing([l.id for l in leads])
        missing = [l.id for l in {l.id: l for l in leads}.values()
            if l.id not in found]
        if missing:
            # One insert for all of them.
            found.update(zip(missing, cls.browse(cls.create_in_bulk(
                            [{'lead': i} for i in missing]))))
        return found

    @classmethod
    def _existing(cls, lead_ids):
        """The conversations these leads have already, by lead id: a query
        by the index on lead (a lead has one), whoever asks."""
        table = cls.__table__()
        cursor = Transaction().connection.cursor()
        found = {}
        for sub_ids in grouped_slice(list(set(lead_ids)),
                backend.MAX_QUERY_PARAMS):
            cursor.execute(*table.select(table.lead, table.id,
                    where=fields.SQL_OPERATORS['in'](
                        table.lead, list(sub_ids))))
            found.update(cursor)
        return dict(zip(found, browse(cls, list(found.values()))))

    @classmethod
    def note_messages(cls, messages):
        """Bring the conversations of new timeline messages up to date: a
        message from the lead adds to unread, makes it waiting and brings
        a done or snoozed conversation back; a human answer ends waiting.
        A lead's first message starts its conversation. The messages are
        their plain values (TIMELINE_FIELDS, a Many2One as its id)."""
        with without_check_access():
            conversations = cls._existing([m.lead for m in messages])
            known = dict(zip(conversations, plain_values(
                        list(conversations.values()), ['last_message_at',
                            'unread', 'last_inbound_at', 'last_answer_at'])))
        now = utcnow()
        changes = {}

        def before(lead_id, name):
            "The conversation's value before these messages."
            values = known.get(lead_id)
            return getattr(values, name) if values else None

        for message in sorted(messages, key=lambda m: (m.at, m.id)):
            lead_id = message.lead
            values = changes.setdefault(lead_id, {'changed_at': now})
            # Internal ones (notes, events, alerts to staff) do not talk
            # to the lead.
            if (message.channel in INTERNAL_CHANNELS
                    or message.direction == 'internal'):
                continue
            current = values.get('last_message_at',
                before(lead_id, 'last_message_at'))
            if not current or message.at >= current:
                values['last_message_at'] = message.at
                values['last_message'] = message.id
            if message.direction == 'inbound':
                values['unread'] = values.get(
                    'unread', before(lead_id, 'unread') or 0) + 1
                values['last_inbound_at'] = max(filter(None, [
                            values.get('last_inbound_at',
                                before(lead_id, 'last_inbound_at')),
                            message.at]))
                values['state'] = 'open'
                values['snoozed_until'] = None
            elif is_human_answer(message):
                values['last_answer_at'] = max(filter(None, [
                            values.get('last_answer_at',
                                before(lead_id, 'last_answer_at')),
                            message.at]))
        for lead_id, values in changes.items():
            inbound = values.get('last_inbound_at',
                before(lead_id, 'last_inbound_at'))
            answered = values.get('last_answer_at',
                before(lead_id, 'last_answer_at'))
            values['waiting'] = bool(inbound
                and (not answered or inbound > answered))
        # Each its own last message: one prepared insert of the new ones,
        # one prepared update of the others (bulk.py).
        new = [dict(values, lead=lead_id)
            for lead_id, values in changes.items()
            if lead_id not in conversations]
        fills = {conversations[lead_id].id: values
            for lead_id, values in changes.items()
            if lead_id in conversations}
        with without_check_access():
            if new:
                cls.create_in_bulk(new)
            if fills:
                cls.fill_in_bulk(fills)

    @classmethod
    def touch(cls, leads):
        "Something the inbox shows changed (a status, an assignment)."
        table = cls.__table__()
        ids = list({l.id for l in leads})
        if not ids:
            return
        cursor = Transaction().connection.cursor()
        for start in range(0, len(ids), 1000):
            cursor.execute(*table.update([table.changed_at], [utcnow()],
                    where=table.lead.in_(ids[start:start + 1000])))

    @classmethod
    def mark_read(cls, conversations):
        "Someone opened them: nothing unread, and WhatsApp shows blue ticks."
        Message = Pool().get('crm.message')
        unread = [c for c in conversations if c.unread]
        if not unread:
            return
        cls.write(unread, {'unread': 0, 'changed_at': utcnow()})
        # Marking a lead's latest message read marks the earlier ones too.
        latest = []
        for conversation in unread:
            latest.extend(Message.search([
                        ('lead', '=', conversation.lead.id),
                        ('direction', '=', 'inbound'),
                        ('channel', '=', 'whatsapp'),
                        ], order=[('at', 'DESC'), ('id', 'DESC')], limit=1))
        if latest:
            Message.mark_read_on_whatsapp(latest)

    @classmethod
    def mark_done(cls, conversations):
        cls.write(conversations, {
                'state': 'done', 'snoozed_until': None, 'unread': 0,
                'changed_at': utcnow()})
        cls._log_event(conversations, 'done',
            gettext('kraya_crm.msg_conversation_done'))

    @classmethod
    def reopen(cls, conversations):
        cls.write(conversations, {
                'state': 'open', 'snoozed_until': None,
                'changed_at': utcnow()})
        cls._log_event(conversations, 'reopened',
            gettext('kraya_crm.msg_conversation_reopened'))

    @classmethod
    def snooze(cls, conversations, until):
        "Out of the inbox until then, or until the lead writes again."
        cls.write(conversations, {
                'state': 'snoozed', 'snoozed_until': until,
                'changed_at': utcnow()})
        cls._log_event(conversations, 'snoozed',
            gettext('kraya_crm.msg_conversation_snoozed'))

    @classmethod
    def wake_snoozed(cls):
        "Snoozes that are over (the cron, every minute)."
        conversations = cls.search([
                ('state', '=', 'snoozed'),
                ('snoozed_until', '<=', utcnow()),
                ])
        if conversations:
            cls.write(conversations, {
                    'state': 'open', 'snoozed_until': None,
                    'changed_at': utcnow()})

    @classmethod
    def _log_event(cls, conversations, kind, text):
        "Who did what to the conversation, on its thread."
        Message = Pool().get('crm.message')
        user = Transaction().user or None
        Message.save([Message(lead=c.lead, direction='internal',
                    channel='event', kind=kind, body=text, author=user,
                    status='logged') for c in conversations])


class Message(metaclass=PoolMeta):
    __name__ = 'crm.message'
    author = fields.Many2One('res.user', "By", readonly=True,
        ondelete='SET NULL',
        help="The teammate who sent, logged or wrote it; empty for the "
        "lead's messages and automated follow-ups.")
    call_outcome = fields.Selection([(None, "")] + CALL_OUTCOMES,
        "Call Outcome", readonly=True,
        states={'invisible': Eval('channel') != 'call'})
    call_duration = fields.TimeDelta("Call Duration", readonly=True,
        states={'invisible': Eval('channel') != 'call'})
    mentions = fields.Many2Many('crm.message-res.user', 'message', 'user',
        "Mentions", readonly=True,
        states={'invisible': Eval('channel') != 'note'})

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.direction.selection.append(('internal', "Internal"))
        cls.channel.selection += [
            ('call', "Phone Call"),
            ('note', "Internal Note"),
            ('event', "Activity"),
            ]
        cls.status.selection.append(('logged', "Logged"))

    @classmethod
    def log_calls(cls, calls):
        """Log calls ([LoggedCall]) by the user on their leads' timelines:
        each is an answer to the lead, its first response if the first."""
        author = Transaction().user or None
        messages = [cls(lead=c.lead, deal=c.lead.open_deal,
                direction='outbound', channel='call', kind='call',
                status='logged', author=author,
                address=c.lead.phone or c.lead.whatsapp_number,
                call_outcome=c.outcome,
                call_duration=c.duration or dt.timedelta(0),
                body=c.note or None) for c in calls]
        with without_check_access():
            cls.save(messages)
        return messages

    @classmethod
    def on_modification(cls, mode, messages, field_names=None):
        pool = Pool()
        Conversation = pool.get('crm.conversation')
        Lead = pool.get('crm.lead')
        super().on_modification(mode, messages, field_names=field_names)
        if mode == 'create':
            plain = plain_values(messages, TIMELINE_FIELDS)
            Conversation.note_messages(plain)
            Lead.record_first_responses([m for m, v in zip(messages, plain)
                    if is_human_answer(v)])
        elif mode == 'write':
            # A delivery status or a download: the open thread shows it.
            Conversation.touch([m.lead for m in messages])


class MessageMention(ModelSQL):
    "A teammate @mentioned in an internal note."
    __name__ = 'crm.message-res.user'
    __string__ = "Mention"
    message = fields.Many2One('crm.message', "Message", required=True,
        ondelete='CASCADE')
    user = fields.Many2One('res.user', "User", required=True,
        ondelete='CASCADE')

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.__access__.add('message')
        t = cls.__table__()
        cls._sql_indexes.update({
                Index(t, (t.user, Index.Range()), (t.message, Index.Range())),
                Index(t, (t.message, Index.Range())),
                })


class Lead(metaclass=PoolMeta):
    __name__ = 'crm.lead'
    first_response_at = fields.Timestamp("First Response At", readonly=True,
        help="When a teammate first answered the lead (a message, an email "
        "or a logged call).")
    first_response_by = fields.Many2One('res.user', "First Response By",
        readonly=True, ondelete='SET NULL')

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_indexes.add(Index(t, (t.first_response_at, Index.Range()),
                where=t.first_response_at == Null))
        cls._buttons.update({
                'open_inbox': {
                    'icon': 'tryton-forward',
                    'depends': [],
                    },
                })

    @classmethod
    @ModelView.button_action('kraya_crm.act_inbox')
    def open_inbox(cls, leads):
        "Open the lead's conversation in the team inbox, to write first."
        Conversation = Pool().get('crm.conversation')
        if not leads:
            return
        lead = leads[0]
        # Whoever may open the lead may see its conversation.
        with without_check_access():
            conversation = Conversation.of_leads([lead])[lead.id]
        database = Transaction().database.name
        return {'url': f'/{database}/crm/inbox?c={conversation.id}'}

    @classmethod
    def record_first_responses(cls, answers):
        "The first human answer to each lead is its first response."
        first = {}
        for message in sorted(answers, key=lambda m: (m.at, m.id)):
            if not message.lead.first_response_at:
                first.setdefault(message.lead.id, message)
        if not first:
            return
        to_write = []
        for lead in cls.browse(list(first)):
            message = first[lead.id]
            to_write.extend(([lead], {
                        'first_response_at': message.at,
                        'first_response_by': message.author
                        and message.author.id,
                        }))
        with without_check_access():
            cls.write(*to_write)

    @classmethod
    def on_modification(cls, mode, leads, field_names=None):
        super().on_modification(mode, leads, field_names=field_names)
        if mode == 'write' and field_names and 'owner' in field_names:
            cls._log_assignments(leads)

    @classmethod
    def _log_assignments(cls, leads):
        "An assignment is on the thread, with who made it."
        pool = Pool()
        Message = pool.get('crm.message')
        Conversation = pool.get('crm.conversation')
        user = Transaction().user or None
        with without_check_access():
            conversations = Conversation.search([
                    ('lead', 'in', [l.id for l in leads])])
            leads = [c.lead for c in conversations]
            Message.save([Message(lead=lead, direction='internal',
                        channel='event', kind='assignment', author=user,
                        status='logged', body=cls._assignment_text(lead))
                    for lead in leads])

    @classmethod
    def _assignment_text(cls, lead):
        "What the thread says of the lead's new owner."
        if lead.owner:
            return gettext('kraya_crm.msg_conversation_assigned',
                owner=lead.owner.rec_name)
        return gettext('kraya_crm.msg_conversation_unassigned')


class Cron(metaclass=PoolMeta):
    __name__ = 'ir.cron'

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.method.selection.append(
            ('crm.conversation|wake_snoozed', "Wake snoozed conversations"))

