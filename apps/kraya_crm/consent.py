"""Consent per lead and channel (DPDP Act 2023, WhatsApp opt-in rules):
when and how a lead opted in, when and why they opted out. Senders ask
Lead.may_contact before every message."""
from trytond.backend import MAX_QUERY_PARAMS
from trytond.model import Index, ModelSQL, ModelView, Unique, fields
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Eval
from trytond.tools import grouped_slice
from trytond.transaction import Transaction

from .message import utcnow

CONSENT_CHANNELS = [
    ('whatsapp', "WhatsApp"),
    # Marketing templates only: a lead who stops them still gets replies
    # and utility templates (Meta's "Stop promotions", user_preferences).
    ('whatsapp_marketing', "WhatsApp marketing"),
    ('email', "Email"),
    ('sms', "SMS"),
    ('call', "Phone Call"),
    ]
OPT_IN_HOW = [
    (None, ""),
    ('form', "Form checkbox"),
    ('inbound_chat', "Messaged us first"),
    ('import', "Import, with a stated basis"),
    ('manual', "Recorded by staff"),
    ('whatsapp_preferences', "Resumed in WhatsApp"),
    ]
# Words that end WhatsApp messages for good, in the languages our leads use.
STOP_WORDS = {'stop', 'unsubscribe', 'stop all', 'बंद', 'बन्द', 'रोको'}
# The quick-reply button Meta adds to marketing templates.
STOP_PROMOTIONS = 'stop promotions'


def allowed(channel, state):
    "Whether a lead whose consent on the channel is `state` may be messaged."
    if state is None:
        return channel != 'whatsapp'
    return state == 'opted_in'


def is_stop_request(text):
    return (text or '').strip().strip('.!').lower() in STOP_WORDS


def is_stop_promotions(text):
    return (text or '').strip().lower() == STOP_PROMOTIONS


class Consent(ModelSQL, ModelView):
    "Whether a lead may be messaged on a channel, and the proof."
    __name__ = 'crm.lead.consent'
    __string__ = "Consent"
    lead = fields.Many2One(
        'crm.lead', "Lead", required=True, ondelete='CASCADE')
    channel = fields.Selection(CONSENT_CHANNELS, "Channel", required=True)
    state = fields.Selection([
            ('opted_in', "Opted in"),
            ('opted_out', "Opted out"),
            ], "State", required=True)
    opted_in_at = fields.Timestamp("Opted In At")
    opted_in_how = fields.Selection(OPT_IN_HOW, "How")
    opted_in_basis = fields.Char("Basis",
        help="The words the lead agreed to, or why an import may contact them.")
    opted_out_at = fields.Timestamp("Opted Out At",
        states={'invisible': Eval('state') != 'opted_out'})
    opted_out_reason = fields.Char("Why",
        states={'invisible': Eval('state') != 'opted_out'})

    @classmethod
    def __setup__(cls):
        super().__setup__()
        # Whoever may see the lead may see this.
        cls.__access__.add('lead')
        t = cls.__table__()
        cls._sql_constraints += [
            ('lead_channel_unique', Unique(t, t.lead, t.channel),
                'kraya_crm.msg_consent_lead_channel_unique'),
            ]
        cls._sql_indexes.add(Index(t, (t.lead, Index.Range())))


class Lead(metaclass=PoolMeta):
    __name__ = 'crm.lead'
    consents = fields.One2Many('crm.lead.consent', 'lead', "Consent")

    def consent(self, channel):
        for consent in self.consents:
            if consent.channel == channel:
                return consent

    def may_contact(self, channel):
        """Whether we may message the lead on the channel. WhatsApp needs an
        opt-in; every channel stops at an opt-out."""
        consent = self.consent(channel)
        return allowed(channel, consent.state if consent else None)

    @classmethod
    def contactable(cls, leads, channel):
        """The ids of the leads we may message on the channel (as
        may_contact says), in one query for all of them."""
        Consent = Pool().get('crm.lead.consent')
        consent = Consent.__table__()
        cursor = Transaction().connection.cursor()
        ids = list({l.id for l in leads})
        states = {}
        for sub_ids in grouped_slice(ids, MAX_QUERY_PARAMS):
            cursor.execute(*consent.select(consent.lead, consent.state,
                    where=fields.SQL_OPERATORS['in'](consent.lead, sub_ids)
                    & (consent.channel == channel)))
            states.update(cursor)
        return {i for i in ids if allowed(channel, states.get(i))}

    @classmethod
    def opt_in(cls, leads, channel, how, basis=None):
        "Record an opt-in, unless the lead opted out (that stands)."
        Consent = Pool().get('crm.lead.consent')
        now = utcnow()
        to_save = []
        for lead in leads:
            consent = lead.consent(channel)
            if consent and consent.state == 'opted_out':
                continue
            if consent is None:
                consent = Consent(lead=lead, channel=channel,
                    state='opted_in', opted_in_at=None)
            if not consent.opted_in_at:
                consent.opted_in_at = now
                consent.opted_in_how = how
                consent.opted_in_basis = basis
                to_save.append(consent)
        Consent.save(to_save)

    @classmethod
    def opt_back_in(cls, leads, channel, how, basis=None):
        """The lead asked for the channel again (resumed marketing
        messages): an opt-out of theirs ends."""
        Consent = Pool().get('crm.lead.consent')
        to_save = []
        for lead in leads:
            consent = lead.consent(channel)
            if consent is None or consent.state != 'opted_out':
                continue
            consent.state = 'opted_in'
            consent.opted_in_at = utcnow()
            consent.opted_in_how = how
            consent.opted_in_basis = basis
            to_save.append(consent)
        Consent.save(to_save)
        return [c.lead for c in to_save]

    @classmethod
    def opt_out(cls, leads, channel, reason):
        """Record an opt-out and return the leads that were not opted out
        yet, so that the opt-out is acknowledged once."""
        Consent = Pool().get('crm.lead.consent')
        now = utcnow()
        to_save, newly = [], []
        for lead in leads:
            consent = lead.consent(channel) or Consent(
                lead=lead, channel=channel, state=None)
            if consent.state == 'opted_out':
                continue
            consent.state = 'opted_out'
            consent.opted_out_at = now
            consent.opted_out_reason = reason
            to_save.append(consent)
            newly.append(lead)
        Consent.save(to_save)
        return newly
