"""The follow-up engine's work on one batch of due enrollments, on plain
values.

A tick moves thousands of enrollments on. Reading a Tryton record's
attribute runs the framework's whole loading machinery (a cache refresh,
an exception, and for a Many2One a new record), and a step reads a dozen
of them for each enrollment, its lead, its step and its sequence. So the
batch reads its enrollments with their leads in one query, and each step
and sequence once, into the plain objects below; the steps' logic runs on
those, and what it makes (messages, updates) goes to the database in one
statement each (bulk.py), through Tryton's hooks."""
import datetime as dt
import json

from sql import Column

from trytond import backend
from trytond.i18n import gettext
from trytond.model import fields
from trytond.pool import Pool
from trytond.tools import grouped_slice
from trytond.transaction import Transaction, without_check_access

from .message import utcnow
from .sequence import CONSENT_OF
from .template import render

# What a step reads of an enrollment, and of its lead: whether to go on,
# the address, the variables of the templates, whether it is still new.
ENROLLMENT_FIELDS = ['lead', 'deal', 'sequence', 'next_step', 'state',
    'enrolled_at', 'last_step_at']
LEAD_FIELDS = ['active', 'name', 'company_name', 'city', 'phone', 'whatsapp',
    'email', 'campaign', 'not_on_whatsapp', 'status', 'last_inbound_at']
# What the engine reads of a step.
STEP_FIELDS = ['name', 'channel', 'condition', 'subject', 'body',
    'template_name', 'template_language', 'delay_from']


class Values:
    """A record's values read for the whole batch at once, as plain
    attributes. What was not read (a lead's owner or company, which few
    templates name) comes from the record when asked."""
    __name__ = None  # the model, for the record made when asked

    def __init__(self, values, record=None):
        self.__dict__.update(values)
        self._record = record

    @property
    def record(self):
        if self._record is None:
            self._record = Pool().get(self.__name__)(self.id)
        return self._record

    def __getattr__(self, name):
        if name.startswith('_'):
            raise AttributeError(name)
        return getattr(self.record, name)


class LeadValues(Values):
    __name__ = 'crm.lead'

    @property
    def whatsapp_number(self):
        return self.whatsapp or self.phone


class StepValues(Values):
    """A step as its enrollments read it, with what follows it in its
    sequence (worked out once a batch, not once an enrollment)."""
    __name__ = 'crm.sequence.step'

    @classmethod
    def of(cls, steps):
        "{step id: StepValues} of the steps and of those that follow them."
        Step = Pool().get('crm.sequence.step')
        steps = {s.id: s for s in steps}
        following = {}
        for step in list(steps.values()):
            later = list(step.sequence.steps)
            later = later[later.index(step) + 1:]
            following[step.id] = later[0] if later else None
            if later:
                steps.setdefault(later[0].id, later[0])
        steps = Step.browse(list(steps))
        read = {r['id']: r for r in Step.read(
                [s.id for s in steps], STEP_FIELDS)}
        result = {}
        for step in steps:
            values = read[step.id]
            template = step.template
            values.update(
                parameter_lines=step.parameter_lines,
                delay_seconds=step.delay_seconds,
                template=template,
                header_format=template.header_format if template else None)
            result[step.id] = cls(values, step)
        for step_id, after in following.items():
            result[step_id].following = result[after.id] if after else None
        return result

    @property
    def file_kind(self):
        "Read (and the file with it) only for a step that sends a file."
        if '_file_kind' not in self.__dict__:
            self._file_kind = self.record.file_kind
        return self._file_kind


class SequenceValues(Values):
    """A sequence as its enrollments read it at `now`: whether it is open
    then, and when it opens next, worked out once a batch."""
    __name__ = 'crm.sequence'

    @classmethod
    def of(cls, sequences, now):
        result = {}
        for sequence in {s.id: s for s in sequences}.values():
            opens = sequence.next_open(now) if sequence.active else now
            result[sequence.id] = cls({
                    'id': sequence.id,
                    'active': sequence.active,
                    'stop_on_closed': sequence.stop_on_closed,
                    'reengage_sequence': sequence.reengage_sequence,
                    'silence_hours': sequence.silence_hours,
                    'is_open': opens == now,
                    'opens_at': opens,
                    }, sequence)
        return result


class DueFollowUp:
    "An enrollment whose next step is due, as the engine runs it."
    __slots__ = ('id', 'lead', 'deal', 'sequence', 'step', 'state',
        'enrolled_at', 'last_step_at')

    def __init__(self, id, lead, deal, sequence, step, state, enrolled_at,
            last_step_at):
        self.id = id
        self.lead = lead
        self.deal = deal
        self.sequence = sequence
        self.step = step
        self.state = state
        self.enrolled_at = enrolled_at
        self.last_step_at = last_step_at

    @classmethod
    def read(cls, enrollments, now):
        """The due follow-ups of the enrollments: a query for them with
        their leads, one a model for their steps, sequences and deals."""
        pool = Pool()
        Deal = pool.get('crm.deal')
        Sequence = pool.get('crm.sequence')
        Step = pool.get('crm.sequence.step')
        rows, leads = cls._rows([e.id for e in enrollments])
        with without_check_access():
            deals = {d.id: d for d in Deal.browse(
                    list({r['deal'] for r in rows if r['deal']}))}
            sequences = SequenceValues.of(Sequence.browse(
                    list({r['sequence'] for r in rows})), now)
            steps = StepValues.of(Step.browse(
                    list({r['next_step'] for r in rows if r['next_step']})))
        return [cls(r['id'], leads[r['lead']], deals.get(r['deal']),
                sequences[r['sequence']], steps.get(r['next_step']),
                r['state'], r['enrolled_at'], r['last_step_at'])
            for r in rows]

    @staticmethod
    def _rows(ids):
        """The enrollments' values ({field: value}, a Many2One as its id)
        and their leads' (LeadValues by id), in one query a slice: the
        engine reads them whoever runs it, as it writes them."""
        pool = Pool()
        Enrollment = pool.get('crm.enrollment')
        Lead = pool.get('crm.lead')
        enrollment, lead = Enrollment.__table__(), Lead.__table__()
        columns = [enrollment.id] + [Column(enrollment, n)
            for n in ENROLLMENT_FIELDS] + [Column(lead, n)
            for n in LEAD_FIELDS]
        cursor = Transaction().connection.cursor()
        rows, leads = [], {}
        for sub_ids in grouped_slice(ids, backend.MAX_QUERY_PARAMS):
            cursor.execute(*enrollment.join(lead,
                    condition=enrollment.lead == lead.id).select(*columns,
                    where=fields.SQL_OPERATORS['in'](
                        enrollment.id, list(sub_ids))))
            for row in cursor:
                values = dict(zip(['id'] + ENROLLMENT_FIELDS, row))
                rows.append(values)
                if values['lead'] not in leads:
                    lead_values = dict(zip(LEAD_FIELDS,
                            row[1 + len(ENROLLMENT_FIELDS):]),
                        id=values['lead'])
                    leads[values['lead']] = LeadValues(lead_values)
        # Oldest due first, as they were taken.
        order = {i: n for n, i in enumerate(ids)}
        rows.sort(key=lambda r: order[r['id']])
        return rows, leads

    @property
    def owner(self):
        return (self.deal or self.lead.record).owner

    def reason_to_end(self):
        "Why this enrollment must end before its next step, if it must."
        sequence = self.sequence
        if not sequence.active:
            return 'sequence_inactive'
        if not self.lead.active:
            return 'inactive'
        if (sequence.stop_on_closed and self.deal
                and self.deal.stage.kind != 'open'):
            return 'closed'

    def is_silent(self):
        "Whether the lead stayed silent after our last step."
        sequence = self.sequence
        if not (sequence.reengage_sequence and sequence.silence_hours):
            return False
        last_heard = self.lead.last_inbound_at
        return not last_heard or not self.last_step_at \
            or last_heard < self.last_step_at

    def after(self, now):
        """The values that point at the step after this one and when it is
        due (a paused enrollment was silent long enough: it carries on),
        as a tuple of pairs, so that alike ones are written together."""
        following = self.step.following
        if following:
            start = now if following.delay_from == 'previous' \
                else self.enrolled_at
            next_run_at = max(now, start + dt.timedelta(
                    seconds=following.delay_seconds))
        elif self.sequence.reengage_sequence and self.sequence.silence_hours:
            next_run_at = now + dt.timedelta(
                hours=self.sequence.silence_hours)
        else:
            next_run_at = now
        # The state only when it changes: SQLite rewrites the index entries
        # of every column an UPDATE sets.
        state = (('state', 'active'),) if self.state != 'active' else ()
        return state + (('last_step_at', now),
            ('next_step', following.id if following else None),
            ('next_run_at', next_run_at))

    def base_values(self, step, channel):
        "The values of every message of the engine."
        return {'lead': self.lead.id,
            'deal': self.deal.id if self.deal else None,
            'enrollment': self.id, 'step': step.id if step else None,
            'direction': 'outbound', 'channel': channel, 'attempts': 0}

    def skipped_values(self, step, reason, **params):
        """A step that did not go out, on the timeline with the reason (a
        message of message.xml, and its params)."""
        channel = 'email' if step.channel == 'email' else 'whatsapp'
        return dict(self.base_values(step, channel), status='skipped',
            kind=step.channel, body=step.name,
            error_message=gettext(f'kraya_crm.{reason}', **params))

    def messages(self, step, now, attachment=None, may_contact=None):
        """The values of the queued messages of a WhatsApp or email step,
        or of why not: the step's file goes as its template's image or
        document header, or as a message of its own right after."""
        values = self.message_values(step, now, may_contact)
        if not attachment or values['status'] != 'queued':
            return [values]
        kind = step.file_kind
        if step.header_format == kind.upper():
            # The template's header carries it (a text step is sent as its
            # template outside the window; inside, as the file captioned).
            values['media'] = attachment.id
            return [values]
        # After the step's own message: one a recipient per batch.
        file_values = dict(self.base_values(None, 'whatsapp'),
            status='queued', send_after=now + dt.timedelta(seconds=1),
            address=values['address'], kind=kind, media=attachment.id)
        return [values, file_values]

    def message_values(self, step, now, may_contact=None):
        """The values of the queued message of a WhatsApp or email step, or
        of why not; may_contact: whether the lead's consent allows it, when
        the caller looked it up for many leads at once."""
        lead = self.lead
        consent = CONSENT_OF[step.channel]
        if may_contact is None:
            may_contact = lead.record.may_contact(consent)
        if not may_contact:
            return self.skipped_values(step, 'msg_step_skipped_no_consent')
        if consent == 'whatsapp':
            if not lead.whatsapp_number:
                return self.skipped_values(
                    step, 'msg_step_skipped_no_whatsapp')
            if lead.not_on_whatsapp:
                return self.skipped_values(step, 'msg_not_on_whatsapp')
        elif not lead.email:
            return self.skipped_values(step, 'msg_step_skipped_no_email')
        values = dict(self.base_values(step, consent), status='queued',
            send_after=now)
        if consent == 'whatsapp':
            template = step.template
            values.update(address=lead.whatsapp_number,
                kind=('template' if step.channel == 'whatsapp_template'
                    else 'text'),
                body=render(step.body, lead, self.deal) or None,
                template=template.id if template else None,
                template_name=step.template_name,
                template_language=step.template_language,
                template_parameters=json.dumps([render(p, lead, self.deal)
                        for p in step.parameter_lines]))
        else:
            values.update(address=lead.email, kind='email',
                subject=render(step.subject, lead, self.deal),
                body=render(step.body, lead, self.deal))
        return values

    def task(self, step):
        Task = Pool().get('crm.task')
        text = render(step.body, self.lead, self.deal)
        first, _, rest = text.partition('\n')
        return Task(name=first or step.name, notes=rest.strip() or None,
            lead=self.lead.record, deal=self.deal, owner=self.owner,
            due=utcnow(), state='open')

    def notification(self, step):
        Notification = Pool().get('res.notification')
        owner = self.owner
        if not owner:
            return None
        record = self.deal or self.lead.record
        return Notification(user=owner, label=step.name,
            description=render(step.body, self.lead, self.deal),
            icon='tryton-notification', model=record.__name__,
            records=json.dumps([record.id]))

