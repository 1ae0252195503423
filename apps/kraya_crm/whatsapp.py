"""The WhatsApp Cloud API webhook: Meta posts the messages leads send us
and the statuses of the messages we sent.

    GET  /<db>/crm/whatsapp/webhook   Meta's verification handshake
    POST /<db>/crm/whatsapp/webhook   signed deliveries (X-Hub-Signature-256)

A delivery is answered in milliseconds: the signature is checked, the
body parsed, and messages and statuses are written in one transaction.
Meta retries and duplicates deliveries, so every message is stored once by
its wamid. A body we cannot use is answered 400 and kept as a dead letter;
nothing is answered 500."""
import datetime as dt
import hashlib
import hmac
import json
import logging
import time

from trytond import backend
from trytond.model import Model
from trytond.pool import Pool
from trytond.protocols.wrappers import HTTPStatus, Response, with_pool
from trytond.transaction import Transaction
from trytond.wsgi import app

from .consent import is_stop_request
from .http import RateLimiter, client_ip, json_response, read_body, setting

logger = logging.getLogger(__name__)
ENDPOINT = 'whatsapp'
OPT_OUT_ACK = (
    "You will not get any more WhatsApp messages from us. "
    "Message us any time if you need us again.")

# What a message of each type carries, for the timeline.
MEDIA_TYPES = {'image', 'document', 'audio', 'video', 'sticker'}

_limiter = None


class WebhookError(ValueError):
    "The body is JSON but not a WhatsApp Business Account delivery."


def limiter():
    global _limiter
    if _limiter is None:
        _limiter = RateLimiter(
            setting('whatsapp_rate_limit', 6000), seconds=60)
    return _limiter


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


def message_content(message):
    """(kind, body, attachment) of a Cloud API message, whatever its type;
    an unknown type is kept with its name, not dropped."""
    kind = message.get('type') or 'unknown'
    content = message.get(kind)
    if not isinstance(content, dict):
        content = {}
    if kind == 'text':
        return kind, content.get('body'), None
    if kind == 'button':
        return kind, content.get('text') or content.get('payload'), None
    if kind == 'interactive':
        reply = content.get(content.get('type') or '', {}) or {}
        return kind, reply.get('title') or reply.get('id'), None
    if kind in MEDIA_TYPES:
        described = ' '.join(filter(None, [
                    content.get('mime_type'), content.get('filename'),
                    f"id {content['id']}" if content.get('id') else None]))
        return kind, content.get('caption'), f"{kind}: {described}".strip()
    if kind == 'location':
        place = ', '.join(filter(None, [
                    content.get('name'), content.get('address')]))
        where = f"{content.get('latitude')},{content.get('longitude')}"
        return kind, place or None, f"location: {where}"
    if kind == 'reaction':
        return kind, content.get('emoji'), None
    errors = message.get('errors') or []
    title = errors[0].get('title') if errors and isinstance(
        errors[0], dict) else None
    return kind, None, f"{kind}: {title}" if title else kind


class Delivery:
    "The messages and statuses of one webhook body, read and checked."

    def __init__(self):
        self.messages = []   # dicts: wamid, wa_id, name, at, kind, body, attachment
        self.statuses = []   # tuples: wamid, status, at, error code, error

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

    def _read_value(self, value):
        names = {}
        for contact in value.get('contacts') or []:
            if isinstance(contact, dict) and contact.get('wa_id'):
                names[contact['wa_id']] = (
                    contact.get('profile') or {}).get('name')
        for message in value.get('messages') or []:
            if not isinstance(message, dict) or not message.get('id') \
                    or not message.get('from'):
                raise WebhookError("message without id or sender")
            kind, body, attachment = message_content(message)
            self.messages.append({
                    'wamid': message['id'],
                    'wa_id': str(message['from']),
                    'name': names.get(message['from']),
                    'at': from_timestamp(message.get('timestamp')),
                    'kind': kind,
                    'body': body,
                    'attachment': attachment,
                    })
        for status in value.get('statuses') or []:
            if not isinstance(status, dict) or not status.get('id'):
                raise WebhookError("status without id")
            errors = status.get('errors') or [{}]
            error = errors[0] if isinstance(errors[0], dict) else {}
            detail = (error.get('error_data') or {}).get('details')
            self.statuses.append((
                    status['id'], status.get('status'),
                    from_timestamp(status.get('timestamp')),
                    str(error['code']) if error.get('code') is not None
                    else None,
                    ': '.join(filter(None, [error.get('title'), detail]))
                    or None))


class WhatsAppWebhook(Model):
    "What a WhatsApp webhook delivery does to leads and messages."
    __name__ = 'crm.whatsapp.webhook'
    __string__ = "WhatsApp Webhook"

    @classmethod
    def parse(cls, body):
        "The Delivery of a raw body; ValueError when it is not one."
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exception:
            raise WebhookError(f"invalid JSON: {exception}") from exception
        return Delivery.from_payload(payload)

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
        leads = [lead for lead, _ in captured]
        Message.save([Message(
                    lead=lead, deal=lead.open_deal, direction='inbound',
                    channel='whatsapp', status='received', at=m['at'],
                    provider_id=m['wamid'], address='+' + m['wa_id'],
                    kind=m['kind'], body=m['body'], attachment=m['attachment'])
                for m, lead in zip(messages, leads)])
        Lead.record_inbound([(lead, m['at'], not created)
                for m, (lead, created) in zip(messages, captured)])
        unique = list({l.id: l for l in leads}.values())
        Lead.opt_in(unique, 'whatsapp', 'inbound_chat')
        stopping = list({lead.id: lead for m, lead in zip(messages, leads)
                if m['kind'] in {'text', 'button'}
                and is_stop_request(m['body'])}.values())
        if stopping:
            cls._opt_out(stopping)

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


def capture_company():
    "The company a webhook's leads belong to: the site's first company."
    Company = Pool().get('company.company')
    companies = Company.search([], limit=1, order=[('id', 'ASC')])
    return companies[0].id if companies else None


def verify(request):
    "Meta's subscription handshake: echo hub.challenge for our token."
    token = setting('whatsapp_verify_token', '', str)
    args = request.args
    if (args.get('hub.mode') == 'subscribe' and token
            and hmac.compare_digest(
                args.get('hub.verify_token', '').encode(), token.encode())):
        return Response(args.get('hub.challenge', ''), status=200,
            content_type='text/plain')
    logger.warning("WhatsApp verification refused from %s", client_ip(request))
    return Response('Forbidden', status=HTTPStatus.FORBIDDEN)


def keep_dead_letter(database_name, reason, body, remote_addr):
    with Transaction().start(database_name, 0) as transaction:
        Pool().get('crm.dead_letter').keep(ENDPOINT, reason, body, remote_addr)
        transaction.commit()


@app.route('/<database_name>/crm/whatsapp/webhook', methods=['GET', 'POST'])
@with_pool
def webhook(request, pool):
    if request.method == 'GET':
        return verify(request)
    ip = client_ip(request)
    if not limiter().allow(ip):
        return json_response({'error': "too many requests"}, status=429,
            headers={'Retry-After': '60'})
    body = read_body(request, setting('whatsapp_max_bytes', 512 * 1024))
    if body is None:
        return json_response({'error': "body too large"}, status=413)
    secret = setting('whatsapp_app_secret', '', str)
    header = request.headers.get('X-Hub-Signature-256')
    if not header:
        logger.warning("WhatsApp webhook without signature from %s", ip)
        return json_response({'error': "missing signature"}, status=401)
    if not signature_valid(body, header, secret):
        logger.warning("WhatsApp webhook with a bad signature from %s", ip)
        return json_response({'error': "invalid signature"}, status=403)
    database_name = pool.database_name
    WhatsApp = pool.get('crm.whatsapp.webhook')
    try:
        delivery = WhatsApp.parse(body)
    except WebhookError as exception:
        keep_dead_letter(database_name, str(exception), body, ip)
        return json_response({'error': str(exception)}, status=400)
    try:
        received = _process(database_name, delivery)
    except backend.DatabaseOperationalError:
        # Busy or down: Meta retries non-2xx deliveries.
        logger.warning("WhatsApp webhook deferred", exc_info=True)
        return json_response({'error': "busy, retry"}, status=503)
    except Exception as exception:
        logger.exception("WhatsApp webhook failed")
        keep_dead_letter(
            database_name, f"processing failed: {exception}", body, ip)
        # Kept for replay: a retry from Meta would fail the same way.
        return json_response({'status': 'kept'}, status=200)
    return json_response({'status': 'ok', 'received': received})


def _process(database_name, delivery, tries=3):
    """Process in a transaction, retried when the database was busy or a
    worker stored the same wamid concurrently (the retry sees it known)."""
    for attempt in range(1, tries + 1):
        try:
            with Transaction().start(database_name, 0) as transaction:
                received = Pool().get('crm.whatsapp.webhook').process(
                    delivery)
                transaction.commit()
                return received
        except (backend.DatabaseIntegrityError,
                backend.DatabaseOperationalError):
            if attempt == tries:
                raise
            time.sleep(0.02 * attempt)
