"""The outbox: every message we send is a crm.message row that goes
queued → sending → sent (→ delivered → read) or failed, sent by the worker.

A worker killed at any instant loses nothing and never sends twice
unrecorded (docs/decisions.md, "The outbox"):
- a message is claimed (queued → sending, attempts + 1) and that is
  committed before the provider is called, so two workers never take the
  same one (SKIP LOCKED on PostgreSQL, the single writer on SQLite);
- the provider gets our id and the attempt with the send (WhatsApp's
  biz_opaque_callback_data, the email's Message-ID), so a status webhook
  ties a send to its row even when the worker died before writing the
  answer;
- a message left in "sending" past its lease is claimed again and sent
  once more as attempt n + 1, unless a webhook showed it went out."""
import datetime as dt
import json
import logging
import mimetypes
import time
from dataclasses import dataclass

from sql import Null

from trytond import backend
from trytond.i18n import gettext
from trytond.model import Index, Unique, fields
from trytond.pool import Pool, PoolMeta
from trytond.rpc import RPC
from trytond.transaction import Transaction

from .bulk import plain_values
from .exceptions import ButtonsError
from .http import setting
from .message import utcnow

logger = logging.getLogger(__name__)
QUEUE_NAME = 'crm_outbox'
READ_QUEUE_NAME = 'crm_whatsapp_read'
# WhatsApp's reply buttons: at most three, titles of 1 to 20 characters.
MAX_BUTTONS, MAX_BUTTON_TITLE = 3, 20
# Meta's per-user marketing cap (131049) lifts in a day; one more try.
MARKETING_LIMIT = '131049'
WINDOW = dt.timedelta(hours=24)
# At most one message per recipient in a batch: WhatsApp refuses a second
# one to the same user within about six seconds (131056).
PAIR_INTERVAL = dt.timedelta(seconds=6)
# How far ahead an outbox task with nothing left to send queues the task
# for the next message, rather than leaving it to the cron's next wake-up.
SOON = 10
CALLBACK_PREFIX = 'kraya:'
DEFAULT_UPLOAD_RETRY = 60

_whatsapp_client = None


@dataclass
class SendResult:
    "What a provider answered to one send, so what the outbox does next."
    # 'sent', 'retry' (after retry_after seconds), 'reengage' (WhatsApp's
    # 24-hour window closed), 'invalid_number' or 'failed'.
    outcome: str
    provider_id: str = None  # the WhatsApp wamid, the email's Message-ID
    error_code: str = None
    error_message: str = None
    retry_after: float = None

    @property
    def sent(self):
        return self.outcome == 'sent'


def whatsapp_client():
    "One client per process, so its token bucket paces every send."
    global _whatsapp_client
    from .whatsapp_client import WhatsAppClient
    if _whatsapp_client is None:
        _whatsapp_client = WhatsAppClient.from_config()
    return _whatsapp_client


def check_buttons(titles):
    """The reply-button titles WhatsApp takes, as a list; ButtonsError
    says what is wrong before anything is queued."""
    if not isinstance(titles, (list, tuple)) or not titles or not all(
            isinstance(t, str) and t.strip() for t in titles) \
            or len(set(titles)) != len(titles):
        raise ButtonsError(gettext('kraya_crm.msg_buttons_not_a_list'))
    if len(titles) > MAX_BUTTONS:
        raise ButtonsError(gettext('kraya_crm.msg_buttons_too_many',
                count=len(titles)))
    for title in titles:
        if len(title) > MAX_BUTTON_TITLE:
            raise ButtonsError(gettext('kraya_crm.msg_buttons_title_too_long',
                    title=title, length=len(title)))
    return list(titles)


def callback_data(message_id, attempt):
    return f'{CALLBACK_PREFIX}{message_id}:{attempt}'


def parse_callback_data(value):
    "(message id, attempt) of our callback data, or None."
    if not value or not value.startswith(CALLBACK_PREFIX):
        return None
    try:
        message_id, attempt = value[len(CALLBACK_PREFIX):].split(':')
        return int(message_id), int(attempt)
    except ValueError:
        return None


def lease():
    "How long a claimed message may stay 'sending' before it is retried."
    return dt.timedelta(seconds=setting('outbox_lease_seconds', 300))


def backoff(attempts, retry_after=None):
    """How long a message waits before its next try: doubling from
    outbox_retry_seconds, at most 30 minutes, never less than asked."""
    first = setting('outbox_retry_seconds', 15)
    return dt.timedelta(seconds=max(retry_after or 0,
            min(30 * 60, first * 2 ** max(attempts - 1, 0))))


class Message(metaclass=PoolMeta):
    __name__ = 'crm.message'
    enrollment = fields.Many2One('crm.enrollment', "Enrollment",
        readonly=True, ondelete='SET NULL')
    step = fields.Many2One('crm.sequence.step', "Step", readonly=True,
        ondelete='SET NULL')
    template_name = fields.Char("Template", readonly=True)
    template_language = fields.Char("Template Language", readonly=True)
    template_parameters = fields.Text("Template Parameters", readonly=True)
    send_after = fields.Timestamp("Send After", readonly=True,
        help="When a queued message may go: now, or after a back-off.")
    sending_at = fields.Timestamp("Sending Since", readonly=True)
    attempts = fields.Integer("Attempts", readonly=True,
        help="How many times it was handed to the provider.")
    reply_to = fields.Many2One('crm.message', "Reply To", readonly=True,
        ondelete='SET NULL',
        help="The message this one answers: quoted on WhatsApp, "
        "In-Reply-To in an email.")
    buttons = fields.Text("Buttons", readonly=True,
        help="The reply buttons sent with the message (a JSON list of up "
        "to 3 titles).")

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.status.selection += [
            ('skipped', "Skipped"),
            ('cancelled', "Cancelled"),
            ]
        # The inbox and the desk mark a conversation read on the phone.
        cls.__rpc__.update({
                'mark_read_on_whatsapp': RPC(readonly=False, instantiate=0),
                })
        t = cls.__table__()
        cls._sql_constraints += [
            # A step is sent once per enrollment, whatever happens.
            ('enrollment_step_unique', Unique(t, t.enrollment, t.step),
                'kraya_crm.msg_message_enrollment_step_unique'),
            ]
        cls._sql_indexes.update({
                # Not partial (WHERE status = 'queued'): SQLite cannot
                # match such an index to the bound parameter of a query.
                Index(t, (t.status, Index.Equality()),
                    (t.send_after, Index.Range())),
                Index(t, (t.status, Index.Equality()),
                    (t.sending_at, Index.Range())),
                })

    @classmethod
    def default_attempts(cls):
        return 0

    @classmethod
    def validate(cls, messages):
        super().validate(messages)
        for message in plain_values(messages, ['direction', 'buttons']):
            if message.direction == 'outbound' and message.buttons:
                try:
                    titles = json.loads(message.buttons)
                except ValueError:
                    titles = None
                check_buttons(titles)

    @property
    def button_titles(self):
        return json.loads(self.buttons) if self.buttons else []

    @classmethod
    def mark_read_on_whatsapp(cls, messages):
        """Queue the read receipts of these inbound WhatsApp messages: the
        latest of each lead is enough, WhatsApp marks the earlier ones."""
        latest = {}
        for message in messages:
            if (message.direction != 'inbound'
                    or message.channel != 'whatsapp'
                    or not message.provider_id):
                continue
            known = latest.get(message.lead.id)
            if known is None or (message.at, message.id) > (
                    known.at, known.id):
                latest[message.lead.id] = message
        if latest:
            with Transaction().set_context(queue_name=READ_QUEUE_NAME):
                cls.__queue__.send_read_receipts(list(latest.values()))

    @classmethod
    def send_read_receipts(cls, messages, attempt=1):
        "The worker's task: post the read receipts; retry once if Meta failed."
        from .whatsapp_client import GraphError
        failed = []
        for message in messages:
            try:
                whatsapp_client().mark_read(message.provider_id)
            except GraphError as error:
                logger.info("read receipt of %s: %s", message.id, error)
                if error.retry:
                    failed.append(message)
        if failed and attempt < 3:
            with Transaction().set_context(queue_name=READ_QUEUE_NAME,
                    queue_scheduled_at=backoff(attempt + 1)):
                cls.__queue__.send_read_receipts(failed, attempt=attempt + 1)

    @classmethod
    def default_send_after(cls):
        return utcnow()

    @classmethod
    def cancel_queued(cls, enrollments, reason):
        "Cancel the messages these enrollments queued and nobody sent yet."
        messages = cls.search([
                ('enrollment', 'in', [e.id for e in enrollments]),
                ('status', '=', 'queued'),
                ])
        if messages:
            cls.write(messages, {
                    'status': 'cancelled', 'error_message': reason})

    @classmethod
    def outbox_due(cls, table, now, limit, *columns):
        """The queries of the due messages, through the outbox's partial
        indexes: those left sending past their lease by a worker that died,
        then the queued ones whose time has come; oldest first."""
        for where, order in [
                ((table.status == 'sending')
                    & (table.sending_at < now - lease()), table.sending_at),
                ((table.status == 'queued')
                    & (table.send_after <= now), table.send_after),
                ]:
            yield table.select(table.id, *columns, where=where,
                order_by=[order.asc, table.id.asc], limit=limit)

    @classmethod
    def outbox_due_one(cls, now=None):
        "The id of a due message, if there is one."
        cursor = Transaction().connection.cursor()
        for query in cls.outbox_due(cls.__table__(), now or utcnow(), 1):
            cursor.execute(*query)
            row = cursor.fetchone()
            if row:
                return row[0]

    @classmethod
    def wake_outbox(cls, delay=None):
        """Queue a task to send what is due (in `delay`, a timedelta, when
        given), unless one is waiting to run by then (it takes everything
        due). The cron calls it every minute, so a retry whose time has
        come or a send a dead worker left is picked up."""
        pool = Pool()
        Queue = pool.get('ir.queue')
        due = cls.outbox_due_one(
            utcnow() + delay if delay else None)
        if due is None:
            return
        queue = Queue.__table__()
        # ir.queue's clock, as its push stamps scheduled_at with it.
        by = dt.datetime.now() + (delay or dt.timedelta())
        cursor = Transaction().connection.cursor()
        # A task scheduled later does not count: a message due now would
        # wait for it.
        cursor.execute(*queue.select(queue.id, where=(
                    queue.name == QUEUE_NAME) & (queue.dequeued_at == Null)
                & ((queue.scheduled_at == Null)
                    | (queue.scheduled_at <= by)),
                limit=1))
        if not cursor.fetchone():
            with Transaction().set_context(queue_name=QUEUE_NAME,
                    queue_scheduled_at=delay):
                # The queue wants records: the task sends all that is due.
                cls.__queue__.send_outbox([due])

    @classmethod
    def send_outbox(cls, _=None, batch_size=50, seconds=50):
        """Send the due messages, batch after batch, for at most `seconds`
        (the worker's task; whatever message woke it, it takes all that
        is due). Each claim and each answer is its own
        transaction."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                claimed = cls._claim(batch_size)
            except backend.DatabaseOperationalError:
                # SQLite: another writer won the race; the next wake-up
                # (at the latest the cron's) takes what is left.
                logger.info("outbox busy, claim skipped", exc_info=True)
                return
            if not claimed:
                # A second message to the same person (a text, then the
                # brochure) waits out WhatsApp's pair limit in a task
                # queued for its time, rather than until the cron's next
                # wake-up a minute later. Not here: a task asleep holds one
                # of the worker's processes, which the leads writing to us
                # meanwhile wait for.
                wait = cls._next_due_within(SOON)
                if wait is not None:
                    with Transaction().new_transaction() as transaction:
                        cls.wake_outbox(dt.timedelta(seconds=wait))
                        transaction.commit()
                return
            for message_id in claimed:
                cls._send_claimed(message_id)

    @classmethod
    def _next_due_within(cls, seconds):
        """Seconds until the next queued message is due, if that is within
        `seconds`, else None (through the index on status, send_after)."""
        if seconds <= 0:
            return None
        table = cls.__table__()
        now = utcnow()
        with Transaction().new_transaction(readonly=True) as transaction:
            cursor = transaction.connection.cursor()
            cursor.execute(*table.select(table.send_after,
                    where=(table.status == 'queued')
                    & (table.send_after <= now + dt.timedelta(
                            seconds=seconds)),
                    order_by=[table.send_after.asc], limit=1))
            row = cursor.fetchone()
        if not row:
            return None
        return max(0.0, (row[0] - now).total_seconds()) + 0.05

    @classmethod
    def _claim(cls, limit):
        """Take up to `limit` due messages, one per recipient: queued ones
        whose time has come and those left sending past their lease by a
        worker that died. Committed before anything is sent."""
        from . import mail
        transaction = Transaction()
        now = utcnow()
        with transaction.new_transaction() as claim:
            database = claim.database
            table = cls.__table__()
            cursor = claim.connection.cursor()
            rows = []
            for query in cls.outbox_due(table, now, limit, table.address,
                    table.status, table.channel, table.provider_id):
                query.limit = limit - len(rows)
                if query.limit <= 0:
                    break
                if database.has_select_for():
                    query.for_ = database.get_select_for_skip_locked()(
                        'UPDATE')
                cursor.execute(*query)
                rows.extend(cursor)
            recipients, claimed, later = set(), [], []
            for message_id, address, status, channel, provider_id in rows:
                if address and address in recipients:
                    if status == 'queued':
                        later.append(message_id)
                    continue
                recipients.add(address)
                claimed.append((message_id, status))
                if channel == 'email' and not provider_id:
                    # Known before sending, so that a bounce or a reply
                    # finds the message even if the worker dies.
                    cursor.execute(*table.update([table.provider_id],
                            [mail.new_message_id()],
                            where=table.id == message_id))
            if later:
                # A second message to one person waits for WhatsApp's pair
                # limit rather than being refused by it.
                cursor.execute(*table.update([table.send_after],
                        [now + PAIR_INTERVAL], where=table.id.in_(later)))
            for status in {'queued', 'sending'}:
                ids = [i for i, s in claimed if s == status]
                if ids:
                    cursor.execute(*table.update(
                            [table.status, table.sending_at, table.attempts],
                            ['sending', now, table.attempts + 1],
                            where=table.id.in_(ids)
                            & (table.status == status)))
            # Ours are those stamped with this claim's time: a row another
            # worker claimed first kept its status and is not.
            ids = [i for i, _ in claimed]
            if ids:
                cursor.execute(*table.select(table.id,
                        where=table.id.in_(ids) & (table.sending_at == now)
                        & (table.status == 'sending'),
                        order_by=[table.id.asc]))
                ids = [i for i, in cursor]
            claim.commit()
        return ids

    @classmethod
    def _send_claimed(cls, message_id):
        "Send one claimed message and write what the provider answered."
        transaction = Transaction()
        try:
            with transaction.new_transaction() as sending:
                message = cls(message_id)
                if message.status != 'sending':
                    return
                values = message._deliver()
                cls.write([message], values)
                sending.commit()
        except Exception:
            # Left in "sending": the lease brings it back as a new attempt.
            logger.exception("sending message %s failed", message_id)

    def _deliver(self):
        "Hand the message to its provider; the values to write from it."
        if self.attempts > 1 and self._went_out():
            return {'status': 'sent', 'sent_at': self.sent_at or utcnow()}
        if self.attempts > setting('outbox_max_attempts', 8):
            # Each try died before recording an answer: stop trying.
            return {'status': 'failed', 'failed_at': utcnow(),
                'error_message': gettext('kraya_crm.msg_outbox_gave_up',
                    attempts=self.attempts - 1)}
        if self.channel == 'whatsapp':
            return self._deliver_whatsapp()
        if self.channel == 'email':
            return self._deliver_email()
        return self._skip('msg_outbox_no_sender', channel=self.channel)

    def _went_out(self):
        "A status webhook of an earlier attempt showed it was sent."
        return bool(self.provider_id) and self.channel == 'whatsapp'

    def _skip(self, message, **params):
        "Skipped, with the reason (a message of message.xml) to show."
        return {'status': 'skipped',
            'error_message': gettext(f'kraya_crm.{message}', **params)}

    def _deliver_whatsapp(self):
        from .whatsapp_client import GraphError
        pool = Pool()
        Lead = pool.get('crm.lead')
        lead = self.lead
        if self.kind != 'opt_out_ack' and not lead.may_contact('whatsapp'):
            return self._skip('msg_outbox_opted_out', channel="WhatsApp")
        if lead.not_on_whatsapp:
            return self._skip('msg_not_on_whatsapp')
        now = utcnow()
        in_window = bool(lead.last_inbound_at
            and now - lead.last_inbound_at < WINDOW)
        kind = self.kind
        if kind != 'template' and not in_window:
            if not self.template_name:
                return self._skip('msg_outbox_window_closed')
            kind = 'template'
        template = self.catalogue_template() if kind == 'template' else None
        if (template and template.is_marketing
                and not lead.may_contact('whatsapp_marketing')):
            return self._skip('msg_outbox_marketing_opted_out')
        client = whatsapp_client()
        values = {'kind': kind}
        try:
            result = self._send_whatsapp(client, kind, template)
        except GraphError as error:
            # The upload of our file failed: nothing was sent.
            result = SendResult('retry' if error.retry else 'failed',
                error_code=error.code, error_message=gettext(
                    'kraya_crm.msg_media_upload_failed',
                    error=error.message, code=error.code),
                retry_after=DEFAULT_UPLOAD_RETRY if error.retry else None)
        if self.media_id:
            values['media_id'] = self.media_id
        if template:
            values['template'] = template.id
        if result.outcome == 'reengage' and kind != 'template' \
                and self.template_name:
            # The window closed between our check and WhatsApp's.
            values.update(status='queued', kind='template', send_after=now)
        elif result.outcome == 'invalid_number':
            Lead.write([lead], {'not_on_whatsapp': True})
            values['status'] = 'failed'
        elif result.outcome == 'marketing_opt_out':
            Lead.opt_out([lead], 'whatsapp_marketing', gettext(
                    'kraya_crm.msg_consent_marketing_refused'))
            values.update(status='failed', failed_at=now)
        elif (result.outcome == 'retry'
                and result.error_code == MARKETING_LIMIT
                and self.error_code == MARKETING_LIMIT):
            values.update(status='failed', failed_at=now)
            result.error_message = gettext(
                'kraya_crm.msg_outbox_marketing_limit')
        values.update(self._outcome_values(result, now, values))
        return values

    def catalogue_template(self):
        "The catalogue entry of the template this message sends, if known."
        Template = Pool().get('crm.whatsapp.template')
        if self.template:
            return self.template
        if not self.template_name:
            return None
        found = Template.search([
                ('name', '=', self.template_name),
                ('language', '=', self.template_language or 'en'),
                ('active', 'in', [True, False]),
                ], limit=1)
        return found[0] if found else None

    def _send_whatsapp(self, client, kind, template):
        "Hand the message to WhatsApp as `kind`: the SendResult."
        data = callback_data(self.id, self.attempts)
        to = self.address.lstrip('+')
        reply_to = self.reply_to.provider_id if self.reply_to else None
        media_kind = self.media and self._media_kind()
        if kind == 'template':
            header = None
            if (media_kind and template
                    and template.header_format in {'IMAGE', 'DOCUMENT'}):
                header = {'type': template.header_format.lower(),
                    'id': self.upload_media(client),
                    'filename': self.media.name}
            return client.send_template(to, self.template_name,
                self.template_language or 'en',
                json.loads(self.template_parameters or '[]'),
                callback_data=data, header=header, reply_to=reply_to)
        if kind == 'buttons':
            return client.send_buttons(to, self.body or '',
                self.button_titles, callback_data=data, reply_to=reply_to)
        if media_kind:
            return client.send_media(to, media_kind, self.upload_media(client),
                caption=self.body, filename=self.media.name,
                callback_data=data, reply_to=reply_to)
        return client.send_text(to, self.body or '', callback_data=data,
            reply_to=reply_to)

    def _media_kind(self):
        "image, document... as our file is sent."
        from .media import kind_of
        return self.kind if self.kind in {'image', 'document', 'audio',
            'video'} else kind_of(self.media_mime_type
            or mimetypes.guess_type(self.media.name)[0]) or 'document'

    def _deliver_email(self):
        from . import mail
        lead = self.lead
        if not lead.may_contact('email'):
            return self._skip('msg_outbox_opted_out', channel="email")
        database = Transaction().database.name
        email = mail.build_email(self.address, self.subject or '',
            self.body or '', None, self.provider_id,
            mail.unsubscribe_url(database, lead.id),
            # The mailbox whose mail reaches /crm/email/inbound.
            reply_to=setting('email_reply_to', None, str),
            from_name=self.author.rec_name if self.author else None,
            answers=self._email_thread(),
            track=lambda url: mail.click_url(database, self.id, url))
        result = mail.deliver(email)
        return self._outcome_values(result, utcnow(), {})

    def _email_thread(self):
        "The Message-IDs this email answers, oldest first."
        ids, message = [], self.reply_to
        while message and len(ids) < 20:
            if message.channel == 'email' and message.provider_id:
                ids.insert(0, message.provider_id)
            message = message.reply_to
        return ids

    def _outcome_values(self, result, now, decided):
        "The values of a provider's answer, unless already decided."
        values = {
            'error_code': result.error_code,
            'error_message': result.error_message,
            }
        if 'status' in decided:
            return values
        if result.outcome == 'sent':
            values.update(status='sent', sent_at=now)
            if result.provider_id:
                values['provider_id'] = result.provider_id
        elif result.outcome == 'retry' and self.attempts < setting(
                'outbox_max_attempts', 8):
            values.update(status='queued', send_after=now + backoff(
                    self.attempts, result.retry_after))
        elif result.outcome == 'reengage':
            values.update(status='skipped')
        else:
            values.update(status='failed', failed_at=now)
        return values

    @classmethod
    def apply_statuses(cls, channel, updates):
        """Statuses carrying our callback data also name the message, so
        that a send whose answer the worker never wrote is still known."""
        callbacks = {}
        for update in updates:
            parsed = parse_callback_data(update[5] if len(update) > 5
                else None)
            if parsed:
                callbacks[update[0]] = parsed[0]
        if callbacks:
            known = cls.by_provider_id(channel, set(callbacks))
            by_id = {i: w for w, i in callbacks.items() if w not in known}
            to_write = []
            for message in cls.search([
                        ('id', 'in', list(by_id)),
                        ('provider_id', '=', None),
                        ]):
                to_write.extend(([message], {'provider_id': by_id[message.id]}))
            if to_write:
                cls.write(*to_write)
        return super().apply_statuses(
            channel, [u[:5] for u in updates])


class Cron(metaclass=PoolMeta):
    __name__ = 'ir.cron'

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.method.selection += [
            ('crm.enrollment|run_due', "Run due follow-ups"),
            ('crm.message|wake_outbox', "Send queued messages"),
            ]
