"""Speed to lead: every new lead has a first-response target (hot leads 1
working hour, the others 24, in crm.configuration) counted on the business
calendar's clock from its capture, so a lead who writes at 23:20 is due
an hour after the next opening.

The target is sla_due_at; sla_next_at is when the chase looks at the lead
next: the owner's reminder before the target, the owner's escalation at
it, the team manager's after a further while. A cron takes the due ones
through the partial index on sla_next_at (the cost grows with the due
leads, not with all of them). The first human answer (a message or a
logged call: conversation.py) stops the clock and stores the working
time it took in first_response_seconds."""
import datetime as dt
import json
import statistics
from collections import defaultdict
from email.message import EmailMessage
from email.utils import format_datetime

from sql import Literal, Null
from sql.aggregate import Count

import trytond.config as config
from trytond.i18n import gettext
from trytond.model import Index, ModelSQL, ModelView, fields
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Eval
from trytond.transaction import Transaction, without_check_access

from .message import utcnow

SLA_STATES = [
    (None, ""),
    ('on_time', "On time"),
    ('at_risk', "At risk"),
    ('breached', "Breached"),
    ('met', "Met"),
    ]
SLA_STAGES = [
    (None, ""),
    ('reminded', "Owner reminded"),
    ('owner', "Escalated to the owner"),
    ('manager', "Escalated to the manager"),
    ]
SLA_TARGETS = [
    ('hot', "Hot lead"),
    ('other', "Other lead"),
    ]
ALERT_KIND = 'sla_alert'


def lead_band(lead):
    "The lead's score band; a lead not scored yet counts as cold."
    return lead.band or 'cold'


class Configuration(metaclass=PoolMeta):
    __name__ = 'crm.configuration'
    sla_hot_target = fields.TimeDelta("Hot Leads: First Response Within",
        required=True, help="Working time from capture to the first answer.")
    sla_other_target = fields.TimeDelta(
        "Other Leads: First Response Within", required=True)
    sla_reminder_before = fields.TimeDelta("Remind the Owner Before",
        help="The owner's reminder, this long before the target.")
    sla_manager_after = fields.TimeDelta("Escalate to the Manager After",
        required=True, help="Working time after the breach before the "
        "team's manager is told.")
    sla_alert_channel = fields.Selection([
            (None, "Desk notification only"),
            ('email', "Email"),
            ('whatsapp', "WhatsApp"),
            ], "Also Alert By",
        help="Besides the desk notification: to the user's email, or to "
        "their WhatsApp number with the template below.")
    sla_alert_template = fields.Char("WhatsApp Template",
        states={
            'invisible': Eval('sla_alert_channel') != 'whatsapp',
            'required': Eval('sla_alert_channel') == 'whatsapp',
            },
        help="An approved utility template with three parameters: the "
        "person's name, the lead, and how long the lead has waited.")

    @classmethod
    def default_sla_hot_target(cls):
        return dt.timedelta(hours=1)

    @classmethod
    def default_sla_other_target(cls):
        return dt.timedelta(hours=24)

    @classmethod
    def default_sla_reminder_before(cls):
        return dt.timedelta(minutes=15)

    @classmethod
    def default_sla_manager_after(cls):
        return dt.timedelta(hours=1)

    @classmethod
    def default_sla_alert_channel(cls):
        return 'email'

    @classmethod
    def default_sla_alert_template(cls):
        return 'lead_waiting'

    def sla_target_of(self, lead):
        "('hot' or 'other', the working time the lead's answer is due in)."
        if lead_band(lead) == 'hot':
            return 'hot', self.sla_hot_target
        return 'other', self.sla_other_target


class Lead(metaclass=PoolMeta):
    __name__ = 'crm.lead'
    sla_target = fields.Selection([(None, "")] + SLA_TARGETS,
        "First-Response Target", readonly=True)
    sla_started_at = fields.Timestamp("Clock Started At", readonly=True,
        help="When the lead came: its first-response clock runs from the "
        "next opening after it.")
    sla_due_at = fields.Timestamp("First Response Due", readonly=True)
    sla_next_at = fields.Timestamp("Next Chase At", readonly=True)
    sla_stage = fields.Selection(SLA_STAGES, "Chased", readonly=True,
        sort=False)
    sla_state = fields.Function(fields.Selection(SLA_STATES,
            "First Response", sort=False), 'get_sla_state',
        searcher='search_sla_state')
    first_response_seconds = fields.Integer("First Response (Working s)",
        readonly=True, help="Working seconds from capture to the first "
        "answer.")
    first_response_time = fields.Function(fields.TimeDelta(
            "First Response Time"), 'get_first_response_time')

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_indexes.update({
                # The chase's only way in: what is due, oldest first.
                Index(t, (t.sla_next_at, Index.Range()),
                    where=t.sla_next_at != Null),
                Index(t, (t.sla_due_at, Index.Range()),
                    where=t.first_response_at == Null),
                # The report's period.
                Index(t, (t.sla_started_at, Index.Range())),
                })

    def get_first_response_time(self, name):
        if self.first_response_seconds is not None:
            return dt.timedelta(seconds=self.first_response_seconds)

    @classmethod
    def get_sla_state(cls, leads, name):
        Configuration = Pool().get('crm.configuration')
        warn = Configuration(1).sla_reminder_before or dt.timedelta()
        now = utcnow()
        result = {}
        for lead in leads:
            due, answered = lead.sla_due_at, lead.first_response_at
            if not due:
                state = None
            elif answered:
                state = 'met' if answered <= due else 'breached'
            elif now >= due:
                state = 'breached'
            elif now >= due - warn:
                state = 'at_risk'
            else:
                state = 'on_time'
            result[lead.id] = state
        return result

    @classmethod
    def search_sla_state(cls, name, clause):
        "In SQL, on the columns, with the time of the search."
        Configuration = Pool().get('crm.configuration')
        _, operator, value = clause
        warn = Configuration(1).sla_reminder_before or dt.timedelta()
        now = utcnow()
        t = cls.__table__()
        due, answered = t.sla_due_at, t.first_response_at
        waiting = (due != Null) & (answered == Null)
        conditions = {
            'met': (due != Null) & (answered != Null) & (answered <= due),
            'breached': ((due != Null) & (answered != Null)
                & (answered > due)) | (waiting & (due <= now)),
            'at_risk': waiting & (due > now) & (due <= now + warn),
            'on_time': waiting & (due > now + warn),
            None: due == Null,
            }
        values = value if isinstance(value, (list, tuple)) else [value]
        where = Literal(False)
        for state in values:
            where |= conditions.get(state, Literal(False))
        if operator in {'!=', 'not in'}:
            where = ~where
        elif operator not in {'=', 'in'}:
            return [('id', '=', -1)]
        return [('id', 'in', t.select(t.id, where=where))]

    @classmethod
    def on_modification(cls, mode, leads, field_names=None):
        super().on_modification(mode, leads, field_names=field_names)
        if mode == 'create':
            cls.start_sla([l for l in leads if not l.first_response_at])
        elif mode == 'write' and field_names and 'band' in field_names:
            # Turned hot (or cooled): its target moves, its start does not.
            cls.start_sla([l for l in leads
                    if l.sla_started_at and not l.first_response_at])

    @classmethod
    def start_sla(cls, leads, now=None):
        """Set the first-response target of the leads from when their
        clock started (now for a new lead): a write per distinct target."""
        pool = Pool()
        Configuration = pool.get('crm.configuration')
        Calendar = pool.get('crm.business_calendar')
        if not leads:
            return
        config_ = Configuration(1)
        calendar = Calendar.get_default()
        now = now or utcnow()
        before = config_.sla_reminder_before or dt.timedelta()
        groups = {}
        for lead in leads:
            start = lead.sla_started_at or now
            target, delta = config_.sla_target_of(lead)
            groups.setdefault((start, target, delta), []).append(lead)
        to_write = []
        for (start, target, delta), group in groups.items():
            due = calendar.add_working(start, delta)
            remind = due - before
            # No reminder before the clock has even started.
            next_at = remind if before and remind > calendar.next_opening(
                start) else due
            to_write.extend((group, {
                        'sla_target': target, 'sla_started_at': start,
                        'sla_due_at': due, 'sla_next_at': next_at,
                        'sla_stage': None if next_at < due else 'reminded',
                        }))
        with without_check_access():
            cls.write(*to_write)

    @classmethod
    def record_first_responses(cls, answers):
        super().record_first_responses(answers)
        cls.measure_first_responses([m.lead for m in answers])

    @classmethod
    def measure_first_responses(cls, leads):
        "The answer stops the clock: store the working time it took."
        Calendar = Pool().get('crm.business_calendar')
        if not leads:
            # A follow-up tick's messages: no teammate answered anyone.
            return
        calendar = Calendar.get_default()
        leads = cls.browse(list({l.id for l in leads}))
        to_write = []
        for lead in leads:
            if not (lead.first_response_at and lead.sla_started_at):
                continue
            seconds = int(calendar.working_between(
                    lead.sla_started_at, lead.first_response_at
                    ).total_seconds())
            to_write.extend(([lead], {
                        'first_response_seconds': seconds,
                        'sla_next_at': None}))
        if to_write:
            with without_check_access():
                cls.write(*to_write)

    @classmethod
    def sla_due_query(cls, now, limit):
        "The ids of the leads the chase is due on, through its index."
        t = cls.__table__()
        return t.select(t.id, where=t.sla_next_at <= now,
            order_by=[t.sla_next_at.asc], limit=limit)

    @classmethod
    def chase_first_responses(cls, batch_size=200):
        """The cron: remind owners before the target, escalate to them at
        the breach and to the team manager after it."""
        pool = Pool()
        Message = pool.get('crm.message')
        cursor = Transaction().connection.cursor()
        now = utcnow()
        alerted = False
        with without_check_access():
            while True:
                cursor.execute(*cls.sla_due_query(now, batch_size))
                leads = cls.browse([i for i, in cursor])
                if not leads:
                    break
                alerted |= cls._chase(leads, now)
                if len(leads) < batch_size:
                    break
        if alerted:
            Message.wake_outbox()

    @classmethod
    def _chase(cls, leads, now):
        "One step of the chase for each lead; whether an alert was queued."
        pool = Pool()
        Configuration = pool.get('crm.configuration')
        Calendar = pool.get('crm.business_calendar')
        calendar = Calendar.get_default()
        config_ = Configuration(1)
        alerts, to_write = [], []
        for lead in leads:
            if lead.first_response_at or not lead.sla_due_at:
                to_write.extend(([lead], {'sla_next_at': None}))
                continue
            if now < lead.sla_due_at:
                stage, next_at = 'reminded', lead.sla_due_at
                people = [lead.owner]
            elif lead.sla_stage in {None, 'reminded'}:
                stage = 'owner'
                next_at = calendar.add_working(
                    lead.sla_due_at, config_.sla_manager_after)
                people = [lead.owner or (lead.team and lead.team.manager)]
            else:
                stage, next_at = 'manager', None
                people = [lead.team and lead.team.manager]
            alerts.extend((lead, stage, p) for p in people if p)
            to_write.extend(([lead], {
                        'sla_stage': stage, 'sla_next_at': next_at}))
        if to_write:
            cls.write(*to_write)
        return cls._alert(alerts, config_, calendar, now)

    @classmethod
    def _alert(cls, alerts, config_, calendar, now):
        """A desk notification to each person, and an email or a WhatsApp
        template when set; these are on the lead's timeline as internal
        messages. Returns whether one was queued for the outbox."""
        pool = Pool()
        Notification = pool.get('res.notification')
        Message = pool.get('crm.message')
        notifications, messages = [], []
        for lead, stage, user in alerts:
            waited = calendar.working_between(lead.sla_started_at, now)
            params = {
                'lead': lead.rec_name, 'owner': (
                    lead.owner.rec_name if lead.owner else "nobody"),
                'waited': format_duration(waited),
                'due': format_local(lead.sla_due_at, calendar),
                }
            label = gettext(f'kraya_crm.msg_sla_{stage}_label', **params)
            text = gettext(f'kraya_crm.msg_sla_{stage}_text', **params)
            notifications.append(Notification(user=user, label=label,
                    description=text, icon='tryton-notification',
                    model=cls.__name__, records=json.dumps([lead.id])))
            if stage == 'reminded':
                continue
            message = Message(lead=lead, direction='internal',
                kind=ALERT_KIND, status='queued', at=now, send_after=now,
                subject=label, body=text)
            if config_.sla_alert_channel == 'email' and user.email:
                message.channel, message.address = 'email', user.email
            elif (config_.sla_alert_channel == 'whatsapp'
                    and user.crm_whatsapp):
                message.channel = 'whatsapp'
                message.address = user.crm_whatsapp
                message.template_name = config_.sla_alert_template
                message.template_language = 'en'
                message.template_parameters = json.dumps(
                    [user.rec_name, lead.rec_name, params['waited']])
            else:
                continue
            messages.append(message)
        Notification.save(notifications)
        Message.save(messages)
        return bool(messages)


def format_duration(delta):
    "2 h 05 min, as a person says it."
    minutes = int(delta.total_seconds() // 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"


def format_local(at, calendar):
    return calendar.clock.local(at).strftime('%d %b %H:%M')


class Message(metaclass=PoolMeta):
    __name__ = 'crm.message'

    def _deliver_email(self):
        if self.kind != ALERT_KIND:
            return super()._deliver_email()
        from . import mail
        # To a teammate: no lead consent, no unsubscribe link.
        email = EmailMessage()
        email['From'] = config.get('email', 'from')
        email['To'] = self.address
        email['Subject'] = self.subject or ''
        email['Date'] = format_datetime(dt.datetime.now(dt.timezone.utc))
        email['Message-ID'] = self.provider_id or mail.new_message_id()
        email.set_content((self.body or '') + '\n')
        return self._outcome_values(mail.deliver(email), utcnow(), {})

    def _deliver_whatsapp(self):
        if self.kind != ALERT_KIND:
            return super()._deliver_whatsapp()
        from .outbox import callback_data, whatsapp_client
        result = whatsapp_client().send_template(self.address.lstrip('+'),
            self.template_name, self.template_language or 'en',
            json.loads(self.template_parameters or '[]'),
            callback_data=callback_data(self.id, self.attempts))
        return self._outcome_values(result, utcnow(), {'kind': self.kind})


class FirstResponseContext(ModelView):
    "First-Response Report Period"
    __name__ = 'crm.report.first_response.context'
    __string__ = "First-Response Report Period"
    from_date = fields.Date("From", required=True)
    to_date = fields.Date("To", required=True)

    @classmethod
    def default_from_date(cls):
        return dt.date.today() - dt.timedelta(days=30)

    @classmethod
    def default_to_date(cls):
        return dt.date.today()


class FirstResponseReport(ModelSQL, ModelView):
    """First response per rep (context group_by 'rep') or per source
    ('source') over the leads that came in the period: the median working
    time to the first answer and the share answered within target."""
    __name__ = 'crm.report.first_response'
    __string__ = "First Response"
    name = fields.Char("Name")
    leads = fields.Integer("Leads")
    answered = fields.Function(fields.Integer("Answered"), 'get_figures')
    waiting = fields.Function(fields.Integer("Not Answered"), 'get_figures')
    median_time = fields.Function(fields.TimeDelta("Median First Response"),
        'get_figures')
    within_target = fields.Function(fields.Float("Within Target %",
            digits=(3, 1)), 'get_figures')

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._order = [('leads', 'DESC'), ('id', 'ASC')]

    @classmethod
    def _period(cls):
        context = Transaction().context
        to_date = context.get('to_date') or dt.date.today()
        from_date = context.get('from_date') or (
            to_date - dt.timedelta(days=30))
        return (dt.datetime.combine(from_date, dt.time()),
            dt.datetime.combine(to_date + dt.timedelta(days=1), dt.time()))

    @classmethod
    def _key_of(cls, lead_table):
        if Transaction().context.get('group_by') == 'source':
            return lead_table.source
        return lead_table.owner

    @classmethod
    def table_query(cls):
        pool = Pool()
        Lead = pool.get('crm.lead')
        User = pool.get('res.user')
        Source = pool.get('crm.source')
        lead = Lead.__table__()
        start, end = cls._period()
        key = cls._key_of(lead)
        named = (Source if Transaction().context.get('group_by') == 'source'
            else User).__table__()
        counts = lead.select(key.as_('key'), Count(lead.id).as_('leads'),
            where=(lead.sla_started_at >= start) & (lead.sla_started_at < end)
            & (key != Null), group_by=[key])
        return counts.join(named, condition=counts.key == named.id).select(
            counts.key.as_('id'), Literal(0).as_('create_uid'),
            Literal(None).as_('create_date'),
            Literal(None).as_('write_uid'), Literal(None).as_('write_date'),
            named.name.as_('name'), counts.leads.as_('leads'))

    @classmethod
    def get_figures(cls, rows, names):
        """All figures from one query over the period's leads: the median
        in Python (SQLite has none), over a bounded period."""
        Lead = Pool().get('crm.lead')
        lead = Lead.__table__()
        start, end = cls._period()
        key = cls._key_of(lead)
        cursor = Transaction().connection.cursor()
        ids = [r.id for r in rows]
        cursor.execute(*lead.select(key, lead.first_response_seconds,
                lead.first_response_at, lead.sla_due_at,
                where=(lead.sla_started_at >= start)
                & (lead.sla_started_at < end) & key.in_(ids or [-1])))
        figures = first_response_figures(cursor)
        result = {n: {} for n in names}
        for row in rows:
            for name in names:
                result[name][row.id] = figures[row.id][name]
        return result


def first_response_figures(rows):
    """{key: {'answered', 'waiting', 'median_time', 'within_target'}} from
    rows of (key, first_response_seconds, first_response_at, sla_due_at):
    the median in Python (SQLite has none), so the rows are one period's."""
    seconds, within, waiting = {}, {}, {}
    for key, taken, answered, due in rows:
        if answered is None:
            waiting[key] = waiting.get(key, 0) + 1
            continue
        seconds.setdefault(key, []).append(taken or 0)
        if due and answered <= due:
            within[key] = within.get(key, 0) + 1
    figures = defaultdict(lambda: {'answered': 0, 'waiting': 0,
            'median_time': None, 'within_target': None})
    for key in seconds.keys() | waiting.keys():
        taken = seconds.get(key, [])
        figures[key] = {
            'answered': len(taken),
            'waiting': waiting.get(key, 0),
            'median_time': dt.timedelta(
                seconds=statistics.median(taken)) if taken else None,
            'within_target': round(100 * within.get(key, 0)
                / len(taken), 1) if taken else None,
            }
    return figures


class Cron(metaclass=PoolMeta):
    __name__ = 'ir.cron'

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.method.selection.append(
            ('crm.lead|chase_first_responses',
                "Chase leads waiting for a first response"))
