"""Messages to and from a lead: the timeline of a lead or deal and, for
outbound ones, the outbox. One row per message, whatever its channel."""
import datetime as dt

from trytond.model import Index, ModelSQL, ModelView, Unique, fields
from trytond.pyson import Eval

from .bulk import BulkWrite, column_values
from .indexes import CoveredIndexes

# Provider statuses only move forward: a late "delivered" never undoes "read".
STATUS_RANK = {'queued': 0, 'sending': 1, 'sent': 2, 'delivered': 3, 'read': 4}
PROVIDER_STATUSES = {'sent', 'delivered', 'read', 'failed'}
CHANNELS = [
    ('whatsapp', "WhatsApp"),
    ('email', "Email"),
    ('web', "Web Form"),
    ]


def utcnow():
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


# BulkWrite: the follow-up engine queues a batch's messages in one insert.
class Message(BulkWrite, CoveredIndexes, ModelSQL, ModelView):
    "A message on a lead's timeline: received from them or sent to them."
    __name__ = 'crm.message'
    __string__ = "Message"
    _rec_name = 'summary'

    lead = fields.Many2One(
        'crm.lead', "Lead", required=True, ondelete='CASCADE')
    deal = fields.Many2One('crm.deal', "Deal", ondelete='SET NULL',
        domain=[('lead', '=', Eval('lead', -1))])
    direction = fields.Selection([
            ('inbound', "Received"),
            ('outbound', "Sent"),
            ], "Direction", required=True, readonly=True)
    channel = fields.Selection(CHANNELS, "Channel", required=True,
        readonly=True)
    kind = fields.Char("Kind", readonly=True,
        help="text, template, image, document, audio, location, button...")
    subject = fields.Char("Subject", readonly=True,
        help="The subject of an email.")
    body = fields.Text("Message", readonly=True)
    attachment = fields.Char("Attachment", readonly=True,
        help="What came with it: a file's type and name, or a location.")
    summary = fields.Function(
        fields.Char("Summary"), 'get_summary', searcher='search_summary')
    provider_id = fields.Char("Provider ID", readonly=True,
        help="The id the provider gives the message (a WhatsApp wamid).")
    address = fields.Char("Number or Address", readonly=True)
    status = fields.Selection([
            ('received', "Received"),
            ('queued', "Queued"),
            ('sending', "Sending"),
            ('sent', "Sent"),
            ('delivered', "Delivered"),
            ('read', "Read"),
            ('failed', "Failed"),
            ], "Status", required=True, readonly=True, sort=False)
    at = fields.Timestamp("At", required=True, readonly=True,
        help="When it was received, or queued to be sent.")
    sent_at = fields.Timestamp("Sent At", readonly=True)
    delivered_at = fields.Timestamp("Delivered At", readonly=True)
    read_at = fields.Timestamp("Read At", readonly=True)
    failed_at = fields.Timestamp("Failed At", readonly=True)
    error_code = fields.Char("Error Code", readonly=True)
    error_message = fields.Text("Error", readonly=True)

    @classmethod
    def __setup__(cls):
        super().__setup__()
        # Whoever may see the lead may see this.
        cls.__access__.add('lead')
        t = cls.__table__()
        cls._sql_constraints += [
            ('provider_id_unique', Unique(t, t.channel, t.provider_id),
                'kraya_crm.msg_message_provider_id_unique'),
            ]
        # The deal's messages: Tryton's index on deal (indexes.py).
        cls._sql_indexes.add(
            Index(t, (t.lead, Index.Range()), (t.at, Index.Range())))
        cls._order = [('at', 'DESC'), ('id', 'DESC')]

    @staticmethod
    def default_at():
        return utcnow()

    def get_summary(self, name):
        text = (self.body or self.attachment or self.kind or '').strip()
        first = text.splitlines()[0] if text else ''
        return first[:80]

    def moves_forward_to(self, status):
        "Whether a provider status is news for this message."
        if self.status == 'failed':
            return False
        if status == 'failed':
            # Meta reports failures after "sent" but never after delivery.
            return self.status not in {'delivered', 'read'}
        return STATUS_RANK[status] > STATUS_RANK[self.status]

    @classmethod
    def search_summary(cls, name, clause):
        _, operator, value = clause
        if operator.startswith('!') or operator.startswith('not '):
            bool_op = 'AND'
        else:
            bool_op = 'OR'
        return [bool_op,
            ('body', operator, value),
            ('attachment', operator, value),
            ]

    @classmethod
    def queue(cls, vlist):
        """Create messages from values their maker checked (the follow-up
        engine's), in one insert: the hooks of a create still run
        (bulk.py)."""
        if vlist:
            cls.create_in_bulk(vlist)

    @classmethod
    def from_leads(cls, messages):
        """The messages among these that leads sent us: the hooks of a
        create ask it of the thousand messages of a follow-up tick."""
        return [m for m, direction in zip(messages,
                column_values(messages, 'direction'))
            if direction == 'inbound']

    @classmethod
    def by_provider_id(cls, channel, provider_ids):
        "The messages with these provider ids, by id."
        if not provider_ids:
            return {}
        return {m.provider_id: m for m in cls.search([
                    ('channel', '=', channel),
                    ('provider_id', 'in', list(provider_ids)),
                    ])}

    @classmethod
    def apply_statuses(cls, channel, updates):
        """Apply provider status updates [(provider_id, status, at, code,
        error)], never moving a message backwards. Returns the number
        applied; unknown ids are ignored (the send may not be ours)."""
        messages = cls.by_provider_id(channel, {u[0] for u in updates})
        changed = {}
        for provider_id, status, at, code, error in updates:
            message = messages.get(provider_id)
            if (not message or message.direction != 'outbound'
                    or status not in PROVIDER_STATUSES
                    or not message.moves_forward_to(status)):
                continue
            message.status = status
            setattr(message, f'{status}_at', at)
            if status == 'failed':
                message.error_code = code
                message.error_message = error
            changed[message.id] = message
        cls.save(list(changed.values()))
        return len(changed)
