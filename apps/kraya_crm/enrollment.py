"""A lead (or deal) going through a follow-up sequence, and the engine that
moves it on: every minute the cron takes the enrollments whose
`next_run_at` has come, through the index on that column (the cost grows
with the due ones, not with all enrolled), runs their next step and queues
its message in the outbox. A reply stops or pauses them; silence restarts
them."""
import datetime as dt
import logging

from sql import Null

from trytond import backend
from trytond.model import Index, ModelSQL, ModelView, Workflow, fields
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Eval
from trytond.tools import grouped_slice
from trytond.transaction import Transaction, without_check_access
from trytond.wizard import Button, StateTransition, StateView, Wizard

from .batch import run_in_batches
from .bulk import BulkWrite, browse
from .engine import DueFollowUp
from .indexes import CoveredIndexes
from .message import utcnow
from .sequence import CONSENT_OF

STOP_REASONS = [
    (None, ""),
    ('completed', "All steps done"),
    ('replied', "Lead replied"),
    ('stage_changed', "Stage changed"),
    ('closed', "Deal won or lost"),
    ('opted_out', "Lead opted out"),
    ('reengaged', "Silent: re-engagement started"),
    ('manual', "Stopped by hand"),
    ('automation', "Stopped by an automation rule"),
    ('inactive', "Lead merged or archived"),
    ('sequence_inactive', "Sequence switched off"),
    ('failed', "A step failed"),
    ]
logger = logging.getLogger(__name__)
DEFAULT_SILENCE_HOURS = 48
# Enrollments moved on in one transaction: each batch pays once for its
# transaction (on SQLite a new connection, whose page cache starts cold,
# and a commit that copies the log back into the database) and for its
# hooks' queries and checks. On SQLite a tick of 5,000 due took 0.80 s in
# batches of 2,000 and 0.72 s in one (medians of eight runs). A batch
# holds SQLite's write lock for about half a second.
BATCH_SIZE = 5000
REPLIED_TASK = "Lead replied: answer them"


# BulkWrite: the engine moves a batch of enrollments on in one update.
class Enrollment(BulkWrite, Workflow, CoveredIndexes, ModelSQL, ModelView):
    "A lead or deal going through a follow-up sequence."
    __name__ = 'crm.enrollment'
    __string__ = "Enrollment"
    sequence = fields.Many2One('crm.sequence', "Sequence", required=True,
        ondelete='CASCADE', readonly=True)
    lead = fields.Many2One('crm.lead', "Lead", required=True,
        ondelete='CASCADE', readonly=True)
    deal = fields.Many2One('crm.deal', "Deal", ondelete='CASCADE',
        readonly=True)
    owner = fields.Function(
        fields.Many2One('res.user', "Owner"), 'get_owner')
    state = fields.Selection([
            ('active', "Active"),
            ('paused', "Paused"),
            ('completed', "Completed"),
            ('stopped', "Stopped"),
            ], "State", required=True, readonly=True, sort=False)
    stop_reason = fields.Selection(STOP_REASONS, "Why It Ended",
        readonly=True, sort=False)
    next_step = fields.Many2One('crm.sequence.step', "Next Step",
        readonly=True, ondelete='SET NULL',
        domain=[('sequence', '=', Eval('sequence', -1))])
    next_run_at = fields.Timestamp("Next Run At", readonly=True,
        help="When the engine looks at it next: the next step, the "
        "resumption of a paused sequence or the check for silence.")
    enrolled_at = fields.Timestamp("Enrolled At", required=True,
        readonly=True)
    last_step_at = fields.Timestamp("Last Step At", readonly=True)
    replied_at = fields.Timestamp("Replied At", readonly=True)
    messages = fields.One2Many('crm.message', 'enrollment', "Messages",
        readonly=True)

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.__access__.add('lead')
        t = cls.__table__()
        cls._sql_indexes.update({
                # The cron's only way in: what is due, oldest first. Ended
                # enrollments have no next_run_at and are not in it.
                Index(t, (t.next_run_at, Index.Range()),
                    where=t.next_run_at != Null),
                Index(t, (t.lead, Index.Range()), (t.state, Index.Equality(
                            cardinality='low'))),
                Index(t, (t.sequence, Index.Range())),
                })
        cls._order = [('enrolled_at', 'DESC'), ('id', 'DESC')]
        cls._transitions |= {
            ('active', 'paused'), ('paused', 'active'),
            ('active', 'stopped'), ('paused', 'stopped'),
            }
        cls._buttons.update({
                'pause': {
                    'invisible': Eval('state') != 'active',
                    'depends': ['state'],
                    'icon': 'tryton-pause',
                    },
                'resume': {
                    'invisible': Eval('state') != 'paused',
                    'depends': ['state'],
                    'icon': 'tryton-launch',
                    },
                'stop': {
                    'invisible': ~Eval('state').in_(['active', 'paused']),
                    'depends': ['state'],
                    'icon': 'tryton-cancel',
                    },
                })

    @classmethod
    def default_state(cls):
        return 'active'

    @classmethod
    def default_enrolled_at(cls):
        return utcnow()

    def get_owner(self, name):
        owner = (self.deal or self.lead).owner
        return owner.id if owner else None

    def get_rec_name(self, name):
        return f'{self.lead.rec_name} · {self.sequence.rec_name}'

    @classmethod
    @ModelView.button
    @Workflow.transition('paused')
    def pause(cls, enrollments):
        # Paused by hand: it waits until someone resumes it.
        cls.write(enrollments, {'next_run_at': None})

    @classmethod
    @ModelView.button
    @Workflow.transition('active')
    def resume(cls, enrollments):
        cls.write(enrollments, {'next_run_at': utcnow()})

    @classmethod
    @ModelView.button
    def stop(cls, enrollments):
        cls.end(enrollments, 'stopped', 'manual')

    @classmethod
    def end(cls, enrollments, state, reason):
        """Stop or complete enrollments. A stopped one cancels what it had
        queued and not sent yet; a completed one lets it go out."""
        Message = Pool().get('crm.message')
        enrollments = [e for e in enrollments
            if e.state in {'active', 'paused'}]
        if not enrollments:
            return
        # A tick may end thousands at once: one update (bulk.py).
        cls.fill_in_bulk({e.id: {'state': state, 'stop_reason': reason,
                    'next_run_at': None} for e in enrollments})
        if state == 'stopped':
            Message.cancel_queued(enrollments, dict(STOP_REASONS)[reason])

    @classmethod
    def running(cls, domain):
        "The active or paused enrollments matching domain."
        return cls.search([('state', 'in', ['active', 'paused']), domain])

    @classmethod
    def enrol(cls, sequence, targets):
        """Enrol [(lead, deal or None)] in the sequence, skipping those
        already going through it. Returns the new enrollments."""
        if not targets or not sequence.active:
            return []
        running = {(e.lead.id, e.deal.id if e.deal else None)
            for e in cls.running([
                    ('sequence', '=', sequence.id),
                    ('lead', 'in', list({l.id for l, _ in targets})),
                    ])}
        now = utcnow()
        first = sequence.steps[0] if sequence.steps else None
        to_create, seen = [], set()
        for lead, deal in targets:
            key = (lead.id, deal.id if deal else None)
            if key in running or key in seen:
                continue
            seen.add(key)
            to_create.append(cls(sequence=sequence, lead=lead, deal=deal,
                    state='active', enrolled_at=now, next_step=first,
                    next_run_at=now + dt.timedelta(
                        seconds=first.delay_seconds if first else 0)))
        # The engine writes enrollments whoever triggered them (a webhook,
        # a rep moving a deal): the record rules apply to reading them.
        with without_check_access():
            cls.save(to_create)
        return to_create

    @classmethod
    def due_query(cls, now, limit, ids=None):
        """The query of the ids of the enrollments due at `now`, oldest
        first, through the index on next_run_at; on PostgreSQL it skips
        the rows another cron holds; with `ids`, only those among them.
        The engine, its test of the plan and the benchmark all run this."""
        database = Transaction().database
        table = cls.__table__()
        where = table.next_run_at <= now
        if ids is not None:
            where &= table.id.in_(ids)
        query = table.select(table.id, where=where,
            order_by=[table.next_run_at.asc], limit=limit)
        if database.has_select_for():
            query.for_ = database.get_select_for_skip_locked()('UPDATE')
        return query

    @classmethod
    def due(cls, now, limit, ids=None):
        "The enrollments due at `now`, oldest first (see due_query)."
        cursor = Transaction().connection.cursor()
        cursor.execute(*cls.due_query(now, limit, ids))
        return browse(cls, [i for i, in cursor])

    @classmethod
    def run_due(cls, batch_size=BATCH_SIZE):
        """The cron job: run every due enrollment, a batch per transaction,
        then wake the outbox for what is due to be sent. A follow-up whose
        step fails is stopped with the error on the lead's timeline; the
        others of its batch go on (batch.py)."""
        Message = Pool().get('crm.message')
        now = utcnow()
        run_in_batches(
            lambda limit, ids=None: cls.due(now, limit, ids),
            lambda enrollments: cls.advance(enrollments, now),
            cls._stop_failed, batch_size)
        Message.wake_outbox()

    @classmethod
    def _stop_failed(cls, enrollment, exception):
        "Stop a follow-up whose step failed, saying why on the timeline."
        Message = Pool().get('crm.message')
        logger.error("follow-up %s failed: %s", enrollment.id, exception)
        follow_up, = DueFollowUp.read([enrollment], utcnow())
        if follow_up.step:
            with without_check_access():
                Message.save([Message(**follow_up.skipped_values(
                                follow_up.step, 'msg_step_failed',
                                error=str(exception)[:200]))])
        cls.end([enrollment], 'stopped', 'failed')

    @classmethod
    def advance(cls, enrollments, now):
        """Run the next step of each due enrollment and schedule the one
        after it, on the plain values of the batch (engine.py). Returns the
        number of messages queued."""
        pool = Pool()
        Lead = pool.get('crm.lead')
        Message = pool.get('crm.message')
        Task = pool.get('crm.task')
        Notification = pool.get('res.notification')
        Step = pool.get('crm.sequence.step')
        follow_ups = DueFollowUp.read(enrollments, now)
        matching = cls._matching_conditions(follow_ups)
        files = Step.file_attachments(
            [f.step.record for f in follow_ups if f.step])
        contactable = cls._contactable(follow_ups)
        # The values of the messages: created at once (Message.queue).
        messages, tasks, notifications = [], [], []
        ending, moving = {}, {}
        to_reengage = []
        for follow_up in follow_ups:
            sequence = follow_up.sequence
            reason = follow_up.reason_to_end()
            if reason:
                ending.setdefault(('stopped', reason), []).append(
                    follow_up.id)
                continue
            step = follow_up.step
            if step is None:
                # The last step is behind us: did the lead stay silent?
                if follow_up.is_silent():
                    to_reengage.append(follow_up)
                    ending.setdefault(('completed', 'reengaged'), []).append(
                        follow_up.id)
                else:
                    ending.setdefault(('completed', 'completed'), []).append(
                        follow_up.id)
                continue
            if not sequence.is_open:
                moving.setdefault((('next_run_at', sequence.opens_at),),
                    []).append(follow_up.id)
                continue
            if step.condition and follow_up.lead.id not in matching[step.id]:
                messages.append(follow_up.skipped_values(
                        step, 'msg_step_skipped_condition'))
            elif step.channel == 'task':
                tasks.append(follow_up.task(step))
            elif step.channel == 'notify':
                notification = follow_up.notification(step)
                if notification:
                    notifications.append(notification)
            else:
                messages.extend(follow_up.messages(step, now,
                        files.get(step.id),
                        follow_up.lead.id in contactable[step.channel]))
            moving.setdefault(follow_up.after(now), []).append(follow_up.id)
        # The engine's own values (the next step of the same sequence):
        # one prepared update for all of them (bulk.py).
        fills = {i: dict(values)
            for values, moved in moving.items() for i in moved}
        with without_check_access():
            if fills:
                cls.fill_in_bulk(fills)
            Message.queue(messages)
            Task.save(tasks)
            Notification.save(notifications)
        for (state, reason), ended in ending.items():
            cls.end(browse(cls, ended), state, reason)
        by_sequence = {}
        for follow_up in to_reengage:
            by_sequence.setdefault(follow_up.sequence.reengage_sequence,
                []).append((follow_up.lead.record, follow_up.deal))
        for sequence, targets in by_sequence.items():
            cls.enrol(sequence, targets)
        leads = {f.lead.id: f.lead for f in follow_ups}
        queued = [m for m in messages if m['status'] == 'queued']
        Lead.mark_contacted([leads[m['lead']] for m in queued])
        return len(queued)

    @classmethod
    def _matching_conditions(cls, follow_ups):
        "{step id: ids of the leads matching its condition}, a query a step."
        Lead = Pool().get('crm.lead')
        leads_by_step = {}
        for follow_up in follow_ups:
            step = follow_up.step
            if step and step.condition:
                leads_by_step.setdefault(step.id, (step, set()))[1].add(
                    follow_up.lead.id)
        return {step_id: {l.id for l in Lead.search([
                        ('id', 'in', list(ids)), step.record.lead_domain])}
            for step_id, (step, ids) in leads_by_step.items()}

    @classmethod
    def _contactable(cls, follow_ups):
        """{step channel: ids of the leads we may message on it}, a query
        per channel of consent the next steps need."""
        Lead = Pool().get('crm.lead')
        leads_by_channel = {}
        for follow_up in follow_ups:
            step = follow_up.step
            if step and step.channel in CONSENT_OF:
                leads_by_channel.setdefault(CONSENT_OF[step.channel],
                    []).append(follow_up.lead)
        may = {consent: Lead.contactable(leads, consent)
            for consent, leads in leads_by_channel.items()}
        return {channel: may.get(consent, set())
            for channel, consent in CONSENT_OF.items()}

    @classmethod
    def leads_replied(cls, replies):
        """Stop or pause the running enrollments of leads who wrote back
        ({lead id: when}), and give each owner a task to answer."""
        pool = Pool()
        Task = pool.get('crm.task')
        if not replies:
            return
        enrollments = cls.running([('lead', 'in', list(replies))])
        if not enrollments:
            return
        stopping = []
        for enrollment in enrollments:
            at = replies[enrollment.lead.id]
            enrollment.replied_at = at
            if enrollment.state == 'paused' and not enrollment.next_run_at:
                # Paused by hand: it waits for whoever paused it.
                continue
            if enrollment.sequence.on_reply == 'pause':
                silence = enrollment.sequence.silence_hours \
                    or DEFAULT_SILENCE_HOURS
                enrollment.state = 'paused'
                enrollment.next_run_at = at + dt.timedelta(hours=silence)
            else:
                stopping.append(enrollment)
        with without_check_access():
            cls.save(enrollments)
            cls.end(stopping, 'stopped', 'replied')
            leads = {e.lead.id: e for e in enrollments}
            waiting = {t.lead.id for t in Task.search([
                        ('lead', 'in', list(leads)), ('state', '=', 'open'),
                        ('name', '=', REPLIED_TASK)])}
            Task.save([Task(name=REPLIED_TASK, lead=e.lead, deal=e.deal,
                        owner=e.owner, due=utcnow(), state='open')
                    for lead_id, e in leads.items()
                    if lead_id not in waiting])


class Lead(metaclass=PoolMeta):
    __name__ = 'crm.lead'
    enrollments = fields.One2Many(
        'crm.enrollment', 'lead', "Follow-ups", readonly=True)
    not_on_whatsapp = fields.Boolean("Not on WhatsApp", readonly=True,
        help="WhatsApp said this number has no account: nothing is sent "
        "there until the number changes.")

    @classmethod
    def default_not_on_whatsapp(cls):
        return False

    @classmethod
    def preprocess_values(cls, mode, values):
        values = super().preprocess_values(mode, values)
        if mode == 'write' and ({'phone', 'whatsapp'} & values.keys()):
            # A new number deserves a new try.
            values.setdefault('not_on_whatsapp', False)
        return values

    @classmethod
    def on_modification(cls, mode, leads, field_names=None):
        super().on_modification(mode, leads, field_names=field_names)
        if mode == 'create':
            cls.enrol_by_source(leads)

    @classmethod
    def enrol_by_source(cls, leads):
        "Enrol new leads in the follow-up sequence of their source."
        pool = Pool()
        Enrollment = pool.get('crm.enrollment')
        Sequence = pool.get('crm.sequence')
        Source = pool.get('crm.source')
        # One query for the leads whose source enrols, rather than loading
        # each lead and its source: an import creates thousands of leads.
        table, source = cls.__table__(), Source.__table__()
        cursor = Transaction().connection.cursor()
        sequence_of = {}
        for sub_ids in grouped_slice(
                [l.id for l in leads], backend.MAX_QUERY_PARAMS):
            cursor.execute(*table.join(source,
                    condition=table.source == source.id).select(
                    table.id, source.follow_up_sequence,
                    where=fields.SQL_OPERATORS['in'](table.id, sub_ids)
                    & (source.follow_up_sequence != Null)))
            sequence_of.update(cursor)
        by_sequence = {}
        for lead in leads:
            if lead.id in sequence_of:
                by_sequence.setdefault(
                    sequence_of[lead.id], []).append((lead, None))
        for sequence_id, targets in by_sequence.items():
            Enrollment.enrol(Sequence(sequence_id), targets)

    @classmethod
    def record_inbound(cls, events):
        super().record_inbound(events)
        Enrollment = Pool().get('crm.enrollment')
        replies = {}
        for lead, at, is_reply in events:
            if is_reply:
                replies[lead.id] = max(at, replies.get(lead.id, at))
        Enrollment.leads_replied(replies)

    @classmethod
    def opt_out(cls, leads, channel, reason):
        newly = super().opt_out(leads, channel, reason)
        Enrollment = Pool().get('crm.enrollment')
        # A lead who only stopped promotions still talks to us.
        if newly and channel != 'whatsapp_marketing':
            Enrollment.end([e for e in Enrollment.running([
                            ('lead', 'in', [l.id for l in newly])])
                    if e.sequence.stop_on_opt_out], 'stopped', 'opted_out')
        return newly

    @classmethod
    def mark_contacted(cls, leads):
        "New leads we sent a follow-up to are now contacted."
        leads = [l for l in {l.id: l for l in leads}.values()
            if l.status == 'new']
        if leads:
            # A tick marks thousands: one prepared update (bulk.py).
            with without_check_access():
                cls.fill_in_bulk({l.id: {'status': 'contacted'}
                        for l in leads})


class Deal(metaclass=PoolMeta):
    __name__ = 'crm.deal'
    enrollments = fields.One2Many(
        'crm.enrollment', 'deal', "Follow-ups", readonly=True)

    @classmethod
    def _record_stage_changes(cls, moves):
        """A deal leaving a stage stops the sequences that end with it; a
        deal entering a stage is enrolled in the stage's sequence."""
        pool = Pool()
        Enrollment = pool.get('crm.enrollment')
        super()._record_stage_changes(moves)
        deals = [deal for deal, _, _ in moves]
        if not deals:
            return
        moved = {deal.id: deal for deal, from_stage, _ in moves if from_stage}
        if moved:
            leads = {d.lead.id: d for d in moved.values() if d.lead}
            ending = {}
            for enrollment in Enrollment.running(['OR',
                        ('deal', 'in', list(moved)),
                        [('deal', '=', None), ('lead', 'in', list(leads))],
                        ]):
                sequence = enrollment.sequence
                deal = moved.get(enrollment.deal.id) if enrollment.deal \
                    else leads[enrollment.lead.id]
                if sequence.stop_on_closed and deal.stage.kind != 'open':
                    ending.setdefault('closed', []).append(enrollment)
                elif enrollment.deal and sequence.stop_on_stage_change:
                    ending.setdefault('stage_changed', []).append(enrollment)
            for reason, enrollments in ending.items():
                Enrollment.end(enrollments, 'stopped', reason)
        by_sequence = {}
        for deal in deals:
            sequence = deal.stage.follow_up_sequence
            if sequence and deal.lead:
                by_sequence.setdefault(sequence, []).append(
                    (deal.lead, deal))
        for sequence, targets in by_sequence.items():
            Enrollment.enrol(sequence, targets)


class EnrolStart(ModelView):
    "Enrol in a follow-up sequence"
    __name__ = 'crm.enrollment.enrol.start'
    __string__ = "Enrol in a Sequence"
    applies_to = fields.Selection([
            ('lead', "Leads"),
            ('deal', "Deals"),
            ], "Applies To", readonly=True)
    sequence = fields.Many2One('crm.sequence', "Sequence", required=True,
        domain=[('applies_to', '=', Eval('applies_to'))])
    count = fields.Integer("Records", readonly=True)


class Enrol(Wizard):
    "Enrol the selected leads or deals in a follow-up sequence."
    __name__ = 'crm.enrollment.enrol'
    start = StateView('crm.enrollment.enrol.start',
        'kraya_crm.enrollment_enrol_start_view_form', [
            Button("Cancel", 'end', 'tryton-cancel'),
            Button("Enrol", 'enrol', 'tryton-ok', default=True),
            ])
    enrol = StateTransition()

    def default_start(self, fields):
        return {
            'applies_to': 'deal' if self.model.__name__ == 'crm.deal'
            else 'lead',
            'count': len(self.records),
            }

    def transition_enrol(self):
        Enrollment = Pool().get('crm.enrollment')
        if self.model.__name__ == 'crm.deal':
            targets = [(d.lead, d) for d in self.records if d.lead]
        else:
            targets = [(lead, None) for lead in self.records]
        Enrollment.enrol(self.start.sequence, targets)
        return 'end'
