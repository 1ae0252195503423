"""What the WhatsApp Cloud API webhook (routes.py) receives: Meta posts the
messages leads send us and the statuses of the messages we sent.

A delivery is answered in milliseconds: the signature is checked, the
body parsed and checked, and the body is stored in the inbox with a queued
task; the worker then writes the messages and statuses of every pending
delivery in one batch. Meta retries and duplicates deliveries, so every
message is stored once by its wamid. A body we cannot use is answered 400
and kept as a dead letter; nothing is answered 500. A site without an app
secret of its own refuses everything (403); a site without a company
answers 503, so that Meta delivers again once it has one, and keeps the
body as a dead letter meanwhile."""
import datetime as dt
import hashlib
import hmac
import logging

from sql import Null
from sql.functions import CurrentTimestamp
from sql.operators import Exists

from trytond import backend
from trytond.i18n import gettext
from trytond.model import Index, Model, ModelSQL, ModelView, fields
from trytond.pool import Pool, PoolMeta
from trytond.transaction import Transaction

from .batch import run_in_batches
from .capture import capture_company
from .consent import is_stop_promotions, is_stop_request
from .http import loads_bounded, setting, storable_text
from .message import utcnow

logger = logging.getLogger(__name__)
ENDPOINT = 'whatsapp'
QUEUE_NAME = 'crm_whatsapp'
OPT_OUT_ACK = (
    "You will not get any more WhatsApp messages from us. "
    "Message us any time if you need us again.")

# What a message of each type carries, for the timeline.
MEDIA_TYPES = {'image', 'document', 'audio', 'video', 'sticker'}

# Inbox.accept's SQL by backend (see Inbox._accept_sql).
_accept_statements = {}


class WebhookError(ValueError):
    "The body is JSON but not a WhatsApp Business Account delivery."


def signature_valid(body, header, secret):
    "X-Hub-Signature-256 is 'sha256=' + hex HMAC-SHA256 of the raw body."
    if not header or not header.startswith('sha256=') or not secret:
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header[len('sha256='):].strip())


def from_timestamp(value):
    try:
        return dt.datetime.fromtimestamp(int(value), dt.timezone.utc).replace(
            tzinfo=None)
    except (TypeError, ValueError, OverflowError):
        return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


# A delivery is read by these: a part of the wrong type (a list where Meta
# sends text, a number where it sends a list) reads as absent or refuses
# the delivery, never crashes the process reading it.
def _text(value):
    "A text or number as text; None for anything else."
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


def _dict(value):
    return value if isinstance(value, dict) else {}


def _list(value, name):
    "value[name] as a list, [] when absent; WebhookError when not a list."
    items = value.get(name)
    if items is None:
        return []
    if not isinstance(items, list):
        raise WebhookError(f"{name} is not a list")
    return items


def _first_error(item):
    errors = item.get('errors')
    return _dict(errors[0]) if isinstance(errors, list) and errors else {}


def message_content(message):
    """(kind, body, attachment) of a Cloud API message, whatever its type;
    an unknown type is kept with its name, not dropped."""
    kind = _text(message.get('type')) or 'unknown'
    content = _dict(message.get(kind))
    get = lambda name: _text(content.get(name))  # noqa: E731
    if kind == 'text':
        return kind, get('body'), None
    if kind == 'button':
        return kind, get('text') or get('payload'), None
    if kind == 'interactive':
        reply = _dict(content.get(get('type') or ''))
        return kind, _text(reply.get('title')) or _text(reply.get('id')), None
    if kind in MEDIA_TYPES:
        described = ' '.join(filter(None, [
                    get('mime_type'), get('filename'),
                    f"id {get('id')}" if get('id') else None]))
        return kind, get('caption'), f"{kind}: {described}".strip()
    if kind == 'location':
        place = ', '.join(filter(None, [get('name'), get('address')]))
        where = f"{get('latitude')},{get('longitude')}"
        return kind, place or None, f"location: {where}"
    if kind == 'reaction':
        return kind, get('emoji'), None
    title = _text(_first_error(message).get('title'))
    return kind, None, f"{kind}: {title}" if title else kind


def media_of(message):
    "{id, mime_type, filename} of a message's file, or None."
    kind = _text(message.get('type'))
    content = _dict(message.get(kind)) if kind in MEDIA_TYPES else {}
    if not _text(content.get('id')):
        return None
    return {'id': _text(content['id']),
        'mime_type': _text(content.get('mime_type')),
        'filename': _text(content.get('filename'))}


class Delivery:
    "The messages and statuses of one webhook body, read and checked."

    def __init__(self):
        # dicts: wamid, wa_id, name, at, kind, body, attachment, media,
        # quoted (the wamid it replies to)
        self.messages = []
        # tuples: wamid, status, at, error code, error, callback data
        self.statuses = []
        # dicts: wa_id, value (stop or resume), detail, at
        self.preferences = []

    @classmethod
    def from_payload(cls, payload):
        if not isinstance(payload, dict) \
                or payload.get('object') != 'whatsapp_business_account' \
                or not isinstance(payload.get('entry'), list):
            raise WebhookError("not a whatsapp_business_account delivery")
        delivery = cls()
        for entry in payload['entry']:
            changes = entry.get('changes') if isinstance(entry, dict) else None
            if not isinstance(changes, list):
                raise WebhookError("entry without changes")
            for change in changes:
                value = change.get('value') if isinstance(change, dict) else None
                if not isinstance(value, dict):
                    raise WebhookError("change without value")
                delivery._read_value(value)
        return delivery

    @classmethod
    def combine(cls, deliveries):
        "One delivery holding the messages and statuses of several."
        combined = cls()
        for delivery in deliveries:
            combined.messages.extend(delivery.messages)
            combined.statuses.extend(delivery.statuses)
            combined.preferences.extend(delivery.preferences)
        return combined

    def _read_value(self, value):
        names = {}
        for contact in _list(value, 'contacts'):
            contact = _dict(contact)
            if _text(contact.get('wa_id')):
                names[_text(contact['wa_id'])] = _text(
                    _dict(contact.get('profile')).get('name'))
        for message in _list(value, 'messages'):
            message = _dict(message)
            wamid, sender = _text(message.get('id')), _text(
                message.get('from'))
            if not wamid or not sender:
                raise WebhookError("message without id or sender")
            kind, body, attachment = message_content(message)
            self.messages.append({
                    'wamid': wamid,
                    'wa_id': sender,
                    'name': names.get(sender),
                    'at': from_timestamp(message.get('timestamp')),
                    'kind': kind,
                    'body': body,
                    'attachment': attachment,
                    'media': media_of(message),
                    'quoted': _text(_dict(message.get('context')).get('id')),
                    })
        for preference in _list(value, 'user_preferences'):
            preference = _dict(preference)
            if not _text(preference.get('wa_id')):
                raise WebhookError("user preference without wa_id")
            choice = _text(preference.get('value'))
            if preference.get('category') != 'marketing_messages' \
                    or choice not in {'stop', 'resume'}:
                continue  # a preference we do not act on
            self.preferences.append({
                    'wa_id': _text(preference['wa_id']),
                    'value': choice,
                    'detail': _text(preference.get('detail')),
                    'at': from_timestamp(preference.get('timestamp')),
                    })
        for status in _list(value, 'statuses'):
            status = _dict(status)
            if not _text(status.get('id')):
                raise WebhookError("status without id")
            error = _first_error(status)
            detail = _text(_dict(error.get('error_data')).get('details'))
            self.statuses.append((
                    _text(status['id']), _text(status.get('status')),
                    from_timestamp(status.get('timestamp')),
                    _text(error.get('code')),
                    ': '.join(filter(None, [_text(error.get('title')),
                                detail])) or None,
                    # Ours: the outbox's message id and attempt.
                    _text(status.get('biz_opaque_callback_data'))))


def read_delivery(body):
    "The Delivery of a raw webhook body. Raises WebhookError."
    try:
        payload = loads_bounded(body)
    except ValueError as exception:
        raise WebhookError(f"invalid JSON: {exception}") from exception
    return Delivery.from_payload(payload)


class WhatsAppWebhook(Model):
    "What a WhatsApp webhook delivery does to leads and messages."
    __name__ = 'crm.whatsapp.webhook'
    __string__ = "WhatsApp Webhook"

    @classmethod
    def parse(cls, body):
        "The Delivery of a raw body; WebhookError when it is not one."
        return read_delivery(body)

    @classmethod
    def process(cls, delivery):
        """Write the delivery: new messages on their leads' timelines (a
        stored wamid is skipped), statuses on our sent messages."""
        pool = Pool()
        Message = pool.get('crm.message')
        transaction = Transaction()
        if transaction.context.get('company') is None:
            with transaction.set_context(company=capture_company()):
                return cls.process(delivery)
        Message.apply_statuses('whatsapp', delivery.statuses)
        if delivery.preferences:
            cls._apply_preferences(delivery.preferences)
        known = Message.by_provider_id(
            'whatsapp', {m['wamid'] for m in delivery.messages})
        fresh, seen = [], set()
        for message in delivery.messages:
            if message['wamid'] not in known and message['wamid'] not in seen:
                seen.add(message['wamid'])
                fresh.append(message)
        if fresh:
            cls._receive(fresh)
        return len(fresh)

    @classmethod
    def _receive(cls, messages):
        pool = Pool()
        Lead = pool.get('crm.lead')
        Message = pool.get('crm.message')
        captured = Lead.capture([{
                    'name': m['name'],
                    'phone': '+' + m['wa_id'].lstrip('+'),
                    'whatsapp': '+' + m['wa_id'].lstrip('+'),
                    } for m in messages], source='whatsapp')
        # A person erased on their request is dropped whole: not even the
        # message is kept (capture stored nothing of them).
        kept = [(m, c) for m, c in zip(messages, captured) if c[0]]
        if len(kept) < len(messages):
            logger.info("WhatsApp: %d messages of suppressed people dropped",
                len(messages) - len(kept))
        if not kept:
            return
        messages = [m for m, _ in kept]
        captured = [c for _, c in kept]
        leads = [lead for lead, _ in captured]
        quoted = Message.by_provider_id('whatsapp',
            {m['quoted'] for m in messages if m['quoted']})
        now = utcnow()
        received = [Message(
                    lead=lead, deal=lead.open_deal, direction='inbound',
                    channel='whatsapp', status='received', at=m['at'],
                    provider_id=m['wamid'], address='+' + m['wa_id'],
                    kind=m['kind'], body=m['body'], attachment=m['attachment'],
                    reply_to=quoted.get(m['quoted']), **cls._media_values(
                        m['media'], now))
                for m, lead in zip(messages, leads)]
        Message.save(received)
        # Media ids expire: fetched by the worker as soon as this commits.
        Message.queue_media_fetch([m for m in received if m.media_id])
        stops = [m['kind'] in {'text', 'button'} and is_stop_request(m['body'])
            for m in messages]
        # STOP is not a reply to answer: it ends WhatsApp, not the talk.
        Lead.record_inbound([(lead, m['at'], not created and not stop)
                for m, (lead, created), stop in zip(messages, captured, stops)])
        unique = list({l.id: l for l in leads}.values())
        Lead.opt_in(unique, 'whatsapp', 'inbound_chat')
        stopping = list({lead.id: lead
                for lead, stop in zip(leads, stops) if stop}.values())
        if stopping:
            cls._opt_out(stopping)
        no_promotions = list({lead.id: lead for lead, m in zip(leads, messages)
                if m['kind'] == 'button'
                and is_stop_promotions(m['body'])}.values())
        if no_promotions:
            Lead.opt_out(Lead.browse(no_promotions), 'whatsapp_marketing',
                gettext('kraya_crm.msg_consent_stop_promotions'))

    @staticmethod
    def _media_values(media, now):
        "The values of a received file, to be downloaded."
        if not media:
            return {}
        from .media import retry_wait
        return {'media_id': media['id'], 'media_mime_type': media['mime_type'],
            'media_filename': media['filename'], 'media_state': 'pending',
            # The cron's sweep takes it if the worker's task is lost.
            'media_retry_at': now + retry_wait(1)}

    @classmethod
    def _apply_preferences(cls, preferences):
        """A lead stopped or resumed marketing messages in WhatsApp: the
        last word of each counts. Unknown numbers are no leads of ours."""
        Lead = Pool().get('crm.lead')
        last = {}
        for preference in sorted(preferences, key=lambda p: p['at']):
            last['+' + preference['wa_id'].lstrip('+')] = preference
        found = Lead.find_by_identity({('phone', n) for n in last})
        for number, preference in last.items():
            lead = found.get(('phone', number))
            if lead is None:
                continue
            detail = preference['detail'] or preference['value']
            if preference['value'] == 'stop':
                Lead.opt_out([lead], 'whatsapp_marketing', gettext(
                        'kraya_crm.msg_consent_marketing_stopped',
                        detail=detail))
            else:
                Lead.opt_back_in([lead], 'whatsapp_marketing',
                    'whatsapp_preferences', gettext(
                        'kraya_crm.msg_consent_marketing_resumed',
                        detail=detail))

    @classmethod
    def _opt_out(cls, leads):
        "Opt out, and queue one acknowledgement for those newly opted out."
        pool = Pool()
        Lead = pool.get('crm.lead')
        Message = pool.get('crm.message')
        newly = Lead.opt_out(Lead.browse(leads), 'whatsapp', "Sent STOP")
        Message.save([Message(
                    lead=lead, direction='outbound', channel='whatsapp',
                    status='queued', kind='opt_out_ack', body=OPT_OUT_ACK,
                    address=lead.whatsapp_number) for lead in newly])
        if newly:
            Message.wake_outbox()


class Inbox(ModelSQL, ModelView):
    """Deliveries accepted by the webhook and not yet written: the request
    only stores the body, the worker does the work in batches."""
    __name__ = 'crm.whatsapp.inbox'
    __string__ = "WhatsApp Inbox"
    received_at = fields.Timestamp("Received At", required=True)
    body = fields.Text("Body", required=True)
    processed_at = fields.Timestamp("Processed At")

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_indexes.add(
            Index(t, (t.id, Index.Range()), where=t.processed_at == Null))

    @classmethod
    def accept(cls, body):
        """Store a checked delivery and make sure a task will process it:
        one INSERT, and a queued task only when none is waiting already
        (a waiting task takes every pending row; the cron sweeps the rare
        row that arrives while a batch is being read). Where the INSERT
        can return it (PostgreSQL), it says whether a task is waiting."""
        transaction = Transaction()
        insert, params, waiting = cls._accept_sql(transaction.database)
        cursor = transaction.connection.cursor()
        if (backend.name == 'sqlite'
                and not transaction.connection.in_transaction):
            # trytond's NORMAL loses the last commits on a power cut, and
            # a 200 tells Meta not to send this body again. (The request
            # has written nothing before; SQLite refuses the change inside
            # a transaction, as in a module test.)
            cursor.execute('PRAGMA synchronous = FULL')
        now = utcnow()
        cursor.execute(
            insert, (now, body.decode(), now, transaction.user) + params)
        if waiting is None:
            row_id, queued = cursor.fetchone()
        else:
            row_id = cursor.lastrowid
            cursor.execute(*waiting)
            queued = cursor.fetchone()
        if not queued:
            with transaction.set_context(queue_name=QUEUE_NAME):
                cls.__queue__.process_pending(cls.browse([row_id]))

    @classmethod
    def _accept_sql(cls, database):
        """(INSERT, its parameters after the row's, the waiting-task query
        or None when the INSERT returns it), built once per backend:
        building them with python-sql costs more than running them."""
        key = (type(database), database.has_returning())
        if key not in _accept_statements:
            Queue = Pool().get('ir.queue')
            table, queue = cls.__table__(), Queue.__table__()
            # A task put off until later (trytond reschedules one the
            # database failed) does not count: the delivery would wait
            # for it.
            waiting = queue.select(queue.id, where=(
                    queue.name == QUEUE_NAME) & (queue.dequeued_at == Null)
                & ((queue.scheduled_at == Null)
                    | (queue.scheduled_at <= CurrentTimestamp())),
                limit=1)
            insert = table.insert(
                [table.received_at, table.body, table.create_date,
                    table.create_uid], [[None] * 4])
            if database.has_returning():
                insert.returning = [table.id, Exists(waiting)]
                query, params = tuple(insert)
                _accept_statements[key] = (query, params[4:], None)
            else:
                _accept_statements[key] = (str(insert), (), tuple(waiting))
        return _accept_statements[key]

    @classmethod
    def process_pending(cls, _=None, batch_size=None):
        """Write every pending delivery in batches, oldest first (the queue
        and the cron call it; a task with nothing pending is a no-op). A
        delivery that cannot be written becomes a dead letter and the rest
        of its batch is written all the same (batch.py)."""
        run_in_batches(cls._take_pending, cls._write_deliveries,
            cls._keep_as_dead_letter,
            batch_size or setting('whatsapp_batch_size', 500))

    @classmethod
    def _take_pending(cls, limit, ids=None):
        "Lock and return pending rows another worker has not taken."
        transaction = Transaction()
        database = transaction.database
        table = cls.__table__()
        where = table.processed_at == Null
        if ids is not None:
            where &= table.id.in_(ids)
        query = table.select(table.id, where=where,
            order_by=[table.id.asc], limit=limit)
        if database.has_select_for():
            query.for_ = database.get_select_for_skip_locked()('UPDATE')
        cursor = transaction.connection.cursor()
        cursor.execute(*query)
        return cls.browse([i for i, in cursor])

    @classmethod
    def _write_deliveries(cls, rows):
        "Write the messages and statuses of the rows and mark them processed."
        WhatsApp = Pool().get('crm.whatsapp.webhook')
        WhatsApp.process(Delivery.combine(
                [WhatsApp.parse(row.body.encode()) for row in rows]))
        cls.write(rows, {'processed_at': utcnow()})

    @classmethod
    def _keep_as_dead_letter(cls, row, exception):
        DeadLetter = Pool().get('crm.dead_letter')
        logger.error("WhatsApp delivery %s failed: %s", row.id, exception)
        DeadLetter.keep(ENDPOINT, f"processing failed: {exception}", row.body)
        cls.write([row], {'processed_at': utcnow()})


class Cron(metaclass=PoolMeta):
    __name__ = 'ir.cron'

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.method.selection.append(
            ('crm.whatsapp.inbox|process_pending',
                "Write pending WhatsApp deliveries"))
