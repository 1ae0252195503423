"""Follow-up sequences: the steps (a WhatsApp message, an email, a task for
the owner, a notification) a lead or deal goes through, with the delays
between them and the hours in which they may go out. An admin builds them
in the desk; enrollment.py runs them and outbox.py sends their messages."""
import datetime as dt
import json
from zoneinfo import ZoneInfo

from sql import Null
from sql.aggregate import Count

from trytond.i18n import gettext
from trytond.model import (
    DeactivableMixin, ModelSQL, ModelView, fields, sequence_ordered)
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Bool, Eval
from trytond.transaction import Transaction

from .exceptions import SequenceValidationError
from .http import setting
from .media import check_upload
from .template import unknown_variables

WEEKDAYS = [
    ('0', "Monday"), ('1', "Tuesday"), ('2', "Wednesday"), ('3', "Thursday"),
    ('4', "Friday"), ('5', "Saturday"), ('6', "Sunday"),
    ]
DELAY_UNITS = {'minutes': 60, 'hours': 3600, 'days': 86400}
STEP_CHANNELS = [
    ('whatsapp_text', "WhatsApp text"),
    ('whatsapp_template', "WhatsApp template"),
    ('email', "Email"),
    ('task', "Task for the owner"),
    ('notify', "Notify the owner"),
    ]
# The channel of consent a step's messages need.
CONSENT_OF = {
    'whatsapp_text': 'whatsapp', 'whatsapp_template': 'whatsapp',
    'email': 'email',
    }


def local_timezone():
    return ZoneInfo(setting('timezone', 'Asia/Kolkata', str))


class Sequence(DeactivableMixin, ModelSQL, ModelView):
    "Follow-up steps a lead or deal goes through until they reply."
    __name__ = 'crm.sequence'
    __string__ = "Follow-up Sequence"
    name = fields.Char("Name", required=True, translate=True)
    applies_to = fields.Selection([
            ('lead', "Leads"),
            ('deal', "Deals"),
            ], "Applies To", required=True,
        help="Deal sequences message the deal's lead and stop when the "
        "deal moves on.")
    steps = fields.One2Many('crm.sequence.step', 'sequence', "Steps")
    on_reply = fields.Selection([
            ('stop', "Stop"),
            ('pause', "Pause until the lead goes silent"),
            ], "When the Lead Replies", required=True,
        help="Either way the owner gets a task to answer.")
    stop_on_stage_change = fields.Boolean("Stop When the Stage Changes",
        states={'invisible': Eval('applies_to') != 'deal'})
    stop_on_closed = fields.Boolean("Stop When Won or Lost")
    stop_on_opt_out = fields.Boolean("Stop When the Lead Opts Out",
        help="Otherwise only the steps on the channel the lead left are "
        "skipped.")
    business_days = fields.MultiSelection(WEEKDAYS, "Business Days",
        sort=False)
    business_hours_start = fields.Time("From", required=True)
    business_hours_end = fields.Time("To", required=True)
    quiet_hours_start = fields.Time("Quiet From",
        help="Nothing is sent from this time (Asia/Kolkata)...")
    quiet_hours_end = fields.Time("Quiet To", help="...until this time.")
    silence_hours = fields.Integer("Silent After (hours)",
        domain=['OR', ('silence_hours', '=', None),
            ('silence_hours', '>', 0)],
        help="A lead who has not written for this long after our last "
        "message is silent: a paused sequence resumes, and the "
        "re-engagement sequence starts after the last step.")
    reengage_sequence = fields.Many2One('crm.sequence', "Re-engage With",
        domain=[('id', '!=', Eval('id', -1))],
        help="The sequence a lead who stayed silent after the last step "
        "is enrolled in.")
    enrollments = fields.One2Many(
        'crm.enrollment', 'sequence', "Enrollments", readonly=True)
    figure_enrolled = fields.Function(
        fields.Integer("Enrolled"), 'get_figures')
    figure_active = fields.Function(fields.Integer("Active"), 'get_figures')
    figure_sent = fields.Function(fields.Integer("Sent"), 'get_figures')
    figure_delivered = fields.Function(
        fields.Integer("Delivered"), 'get_figures')
    figure_read = fields.Function(fields.Integer("Read"), 'get_figures')
    figure_replied = fields.Function(fields.Integer("Replied"), 'get_figures')
    figure_reply_rate = fields.Function(
        fields.Float("Reply Rate %", digits=(3, 1)), 'get_figures')
    figure_opted_out = fields.Function(
        fields.Integer("Opted Out"), 'get_figures')

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._order = [('name', 'ASC'), ('id', 'ASC')]

    @classmethod
    def default_applies_to(cls):
        return 'lead'

    @classmethod
    def default_on_reply(cls):
        return 'stop'

    @classmethod
    def default_stop_on_closed(cls):
        return True

    @classmethod
    def default_stop_on_opt_out(cls):
        return False

    @classmethod
    def default_business_days(cls):
        return ['0', '1', '2', '3', '4', '5']

    @classmethod
    def default_business_hours_start(cls):
        return dt.time(9, 0)

    @classmethod
    def default_business_hours_end(cls):
        # TRAI allows promotional calls and messages until 21:00.
        return dt.time(20, 0)

    @classmethod
    def get_figures(cls, sequences, names):
        """Enrolled, sent, delivered, read, replied and opted out, each one
        grouped query over the sequences' enrollments and messages."""
        pool = Pool()
        Enrollment = pool.get('crm.enrollment')
        Message = pool.get('crm.message')
        enrollment = Enrollment.__table__()
        message = Message.__table__()
        cursor = Transaction().connection.cursor()
        ids = [s.id for s in sequences]
        result = {n: {i: 0 for i in ids} for n in names}
        counts = {
            'figure_enrolled': Count(enrollment.id),
            'figure_active': Count(enrollment.id,
                filter_=enrollment.state.in_(['active', 'paused'])),
            'figure_replied': Count(enrollment.id,
                filter_=enrollment.replied_at != Null),
            'figure_opted_out': Count(enrollment.id,
                filter_=enrollment.stop_reason == 'opted_out'),
            }
        cursor.execute(*enrollment.select(enrollment.sequence,
                *counts.values(),
                where=enrollment.sequence.in_(ids),
                group_by=[enrollment.sequence]))
        by_sequence = {row[0]: dict(zip(counts, row[1:])) for row in cursor}
        reached = {
            'figure_sent': ['sent', 'delivered', 'read'],
            'figure_delivered': ['delivered', 'read'],
            'figure_read': ['read'],
            }
        cursor.execute(*message.join(enrollment,
                condition=message.enrollment == enrollment.id
                ).select(enrollment.sequence,
                *(Count(message.id, filter_=message.status.in_(statuses))
                    for statuses in reached.values()),
                where=enrollment.sequence.in_(ids)
                & (message.direction == 'outbound'),
                group_by=[enrollment.sequence]))
        for row in cursor:
            by_sequence.setdefault(row[0], {}).update(zip(reached, row[1:]))
        for sequence_id, figures in by_sequence.items():
            for name in names:
                if name == 'figure_reply_rate':
                    enrolled = figures.get('figure_enrolled') or 0
                    result[name][sequence_id] = round(
                        100 * (figures.get('figure_replied') or 0)
                        / enrolled, 1) if enrolled else 0
                else:
                    result[name][sequence_id] = figures.get(name) or 0
        return result

    def is_open(self, at):
        "Whether messages may go out at this UTC time."
        local = at.replace(tzinfo=dt.timezone.utc).astimezone(
            local_timezone())
        if str(local.weekday()) not in (self.business_days or []):
            return False
        moment = local.time()
        if not (self.business_hours_start <= moment
                < self.business_hours_end):
            return False
        if self.quiet_hours_start and self.quiet_hours_end:
            start, end = self.quiet_hours_start, self.quiet_hours_end
            quiet = (start <= moment < end) if start < end else (
                moment >= start or moment < end)
            if quiet:
                return False
        return True

    def next_open(self, at):
        """The first UTC time from `at` when messages may go out: `at`
        itself, or the next opening (a business day's start or the end of
        the quiet hours, in local time)."""
        if self.is_open(at):
            return at
        zone = local_timezone()
        local = at.replace(tzinfo=dt.timezone.utc).astimezone(zone)
        openings = [t for t in [self.business_hours_start,
                self.quiet_hours_end] if t]
        for days in range(8):
            day = local.date() + dt.timedelta(days=days)
            for moment in sorted(openings):
                candidate = dt.datetime.combine(day, moment, zone)
                if candidate <= local:
                    continue
                utc = candidate.astimezone(dt.timezone.utc).replace(
                    tzinfo=None)
                if self.is_open(utc):
                    return utc
        # No opening in a week (the quiet hours cover the business hours):
        # look again tomorrow, never now, or the tick would spin on it.
        return at + dt.timedelta(days=1)

    @classmethod
    def validate(cls, sequences):
        super().validate(sequences)
        for sequence in sequences:
            if (sequence.business_hours_start >= sequence.business_hours_end
                    or not sequence.business_days):
                raise SequenceValidationError(gettext(
                        'kraya_crm.msg_sequence_business_hours',
                        sequence=sequence.rec_name))


class Step(sequence_ordered('position', "Position"), ModelSQL, ModelView):
    "One follow-up: what goes out, on which channel, after how long."
    __name__ = 'crm.sequence.step'
    __string__ = "Follow-up Step"
    sequence = fields.Many2One(
        'crm.sequence', "Sequence", required=True, ondelete='CASCADE')
    name = fields.Char("Name", required=True,
        help="What this step is for, e.g. \"Welcome\" or \"Site visit nudge\".")
    delay = fields.Integer("Wait", required=True,
        domain=[('delay', '>=', 0)])
    delay_unit = fields.Selection([
            ('minutes', "Minutes"),
            ('hours', "Hours"),
            ('days', "Days"),
            ], "Unit", required=True, sort=False)
    delay_from = fields.Selection([
            ('previous', "After the previous step"),
            ('enrolment', "After enrolment"),
            ], "Counted", required=True)
    channel = fields.Selection(STEP_CHANNELS, "Channel", required=True)
    subject = fields.Char("Subject",
        states={
            'invisible': Eval('channel') != 'email',
            'required': Eval('channel') == 'email',
            })
    body = fields.Text("Message",
        states={
            'required': Eval('channel').in_(
                ['whatsapp_text', 'email', 'task', 'notify']),
            'invisible': Eval('channel') == 'whatsapp_template',
            },
        help="Variables: {lead.name}, {lead.first_name}, {lead.city}, "
        "{owner.name}, {deal.title}, {deal.value}, {company.name}...")
    template = fields.Many2One('crm.whatsapp.template', "WhatsApp Template",
        domain=[('status', '=', 'APPROVED')], ondelete='RESTRICT',
        states={
            'invisible': ~Eval('channel').in_(
                ['whatsapp_text', 'whatsapp_template']),
            },
        help="An approved template of the catalogue (Configuration > "
        "WhatsApp Templates). For a text step, what is sent instead "
        "outside the 24-hour window.")
    template_name = fields.Char("Template Name",
        states={
            'invisible': ~Eval('channel').in_(
                ['whatsapp_text', 'whatsapp_template']),
            'required': Eval('channel') == 'whatsapp_template',
            'readonly': Bool(Eval('template')),
            },
        help="The template's name at Meta: filled from the template picked "
        "above.")
    template_language = fields.Char("Template Language",
        states={
            'invisible': ~Eval('channel').in_(
                ['whatsapp_text', 'whatsapp_template']),
            'readonly': Bool(Eval('template')),
            })
    template_parameters = fields.Text("Template Parameters",
        states={
            'invisible': ~Eval('channel').in_(
                ['whatsapp_text', 'whatsapp_template']),
            },
        help="The template's {{1}}, {{2}}... one per line, e.g. "
        "{lead.first_name}.")
    file = fields.Binary("File", filename='file_name', file_id='file_id',
        states={
            'invisible': ~Eval('channel').in_(
                ['whatsapp_text', 'whatsapp_template']),
            },
        help="An image (JPEG, PNG up to 5 MB) or document (PDF, Word, "
        "Excel... up to 100 MB) sent with the step: as the template's "
        "header when it has an image or document one, else right after "
        "the message.")
    file_name = fields.Char("File Name",
        states={'invisible': ~Eval('file')})
    file_id = fields.Char("File ID", readonly=True)
    file_attachment = fields.Many2One('ir.attachment', "Sent File",
        readonly=True, ondelete='SET NULL',
        help="The copy of the file the step's messages send.")
    condition = fields.Char("Only For Leads Matching",
        help="A domain on the lead, e.g. [[\"city\", \"=\", \"Mumbai\"]]. "
        "Leads not matching skip the step.")

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.__access__.add('sequence')

    @classmethod
    def default_delay(cls):
        return 1

    @classmethod
    def default_delay_unit(cls):
        return 'days'

    @classmethod
    def default_delay_from(cls):
        return 'previous'

    @classmethod
    def default_channel(cls):
        return 'whatsapp_text'

    @classmethod
    def default_template_language(cls):
        return 'en'

    @fields.depends('template')
    def on_change_template(self):
        if self.template:
            self.template_name = self.template.name
            self.template_language = self.template.language

    @classmethod
    def preprocess_values(cls, mode, values):
        values = super().preprocess_values(mode, values)
        if mode == 'write' and {'file', 'file_name'} & values.keys():
            # Messages queued from now on send the new file.
            values['file_attachment'] = None
        if values.get('template'):
            Template = Pool().get('crm.whatsapp.template')
            template = Template(values['template'])
            values['template_name'] = template.name
            values['template_language'] = template.language
        return values

    @classmethod
    def file_attachments(cls, steps):
        """{step id: the attachment its messages send}, made once per file
        (the lead's messages all point at it, not at copies)."""
        Attachment = Pool().get('ir.attachment')
        steps = [s for s in {s.id: s for s in steps}.values() if s.file]
        missing = [s for s in steps if not s.file_attachment]
        if missing:
            made = Attachment.create([{
                        'name': s.file_name or s.name, 'type': 'data',
                        'data': s.file, 'resource': str(s)}
                    for s in missing])
            for step, attachment in zip(missing, made):
                cls.write([step], {'file_attachment': attachment.id})
        return {s.id: s.file_attachment for s in cls.browse(steps)}

    @property
    def file_kind(self):
        "image or document, as the step's file is sent."
        return check_upload(self.file_name or self.name, None,
            len(self.file)) if self.file else None

    @property
    def delay_seconds(self):
        return self.delay * DELAY_UNITS[self.delay_unit]

    @property
    def parameter_lines(self):
        return [l.strip() for l in (self.template_parameters or '').split(
                '\n') if l.strip()]

    @property
    def lead_domain(self):
        return json.loads(self.condition) if self.condition else []

    @classmethod
    def validate(cls, steps):
        pool = Pool()
        Lead = pool.get('crm.lead')
        super().validate(steps)
        for step in steps:
            for text in [step.subject, step.body, step.template_parameters]:
                unknown = unknown_variables(text)
                if unknown:
                    raise SequenceValidationError(gettext(
                            'kraya_crm.msg_step_unknown_variable',
                            step=step.name, variables=', '.join(unknown)))
            if step.file:
                if step.channel not in {'whatsapp_text', 'whatsapp_template'}:
                    raise SequenceValidationError(gettext(
                            'kraya_crm.msg_step_file_needs_whatsapp',
                            step=step.name))
                if step.file_kind not in {'image', 'document'}:
                    raise SequenceValidationError(gettext(
                            'kraya_crm.msg_step_file_kind', step=step.name,
                            filename=step.file_name))
            if step.condition:
                try:
                    domain = json.loads(step.condition)
                    Lead.search([('id', '=', -1), domain])
                except Exception as exception:
                    raise SequenceValidationError(gettext(
                            'kraya_crm.msg_step_invalid_condition',
                            step=step.name, error=exception)) from exception


class Source(metaclass=PoolMeta):
    __name__ = 'crm.source'
    follow_up_sequence = fields.Many2One('crm.sequence', "Follow-up Sequence",
        domain=[('applies_to', '=', 'lead')], ondelete='SET NULL',
        help="New leads of this source are enrolled in it.")


class Stage(metaclass=PoolMeta):
    __name__ = 'crm.stage'
    follow_up_sequence = fields.Many2One('crm.sequence', "Follow-up Sequence",
        domain=[('applies_to', '=', 'deal')], ondelete='SET NULL',
        help="Deals entering this stage are enrolled in it.")
