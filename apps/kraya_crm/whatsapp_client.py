"""Talking to Meta's Cloud API (the Graph API): sends to /<phone number
id>/messages, uploads to /<phone number id>/media, media downloads, read
receipts and the template catalogue of the business account.

A send never raises for what the provider or the network did: it answers a
SendResult saying what to do next, 'sent' (with the wamid), 'retry' (later,
after retry_after seconds), 'reengage' (the 24-hour window is closed: send
a template), 'invalid_number', 'marketing_opt_out' (the lead stopped
marketing messages) or 'failed'. Sends of one business number share a
pace (a token bucket in this process; on PostgreSQL one kept in the
database for every worker), so a burst waits instead of being refused by
Meta's throughput limit. The other calls raise GraphError, which says
whether trying again may help."""
import http.client
import json
import logging
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass

from .http import setting
from .outbox import SendResult

logger = logging.getLogger(__name__)

# Graph error code -> (outcome, seconds to wait before trying again).
ERRORS = {
    1: ('retry', 30),  # API unknown: possibly a server error
    2: ('retry', 30),  # API service: temporary downtime or overload
    4: ('retry', 60),  # the app's call rate limit
    80007: ('retry', 60),  # the business account's rate limit
    130429: ('retry', 1),  # the number's throughput (messages a second)
    131000: ('retry', 30),  # something went wrong at Meta
    131048: ('retry', 3600),  # spam rate limit: sending quality is low
    131056: ('retry', 6),  # pair rate: about one message per 6 s a person
    # Meta's cap of marketing messages a user gets: it lifts in a day or
    # so. The outbox tries once more after it, never again.
    131049: ('retry', 24 * 3600),
    131047: ('reengage', None),  # over 24 h since the lead's last message
    131050: ('marketing_opt_out', None),  # the user stopped marketing
    131026: ('invalid_number', None),  # undeliverable: not on WhatsApp
    131021: ('invalid_number', None),  # the recipient is our own number
    131030: ('invalid_number', None),  # not on the test number's allow list
    }
# Without a known code, an overloaded or broken server is worth a retry.
RETRY_STATUSES = {429, 500, 502, 503, 504}
DEFAULT_RETRY_AFTER = 30
TEMPLATE_PAGE = 100


class GraphError(Exception):
    "A call other than a send failed: its code, text and whether to retry."

    def __init__(self, code, message, retry=False, status=None):
        super().__init__(f"{message} (code {code})")
        self.code = str(code)
        self.message = message
        self.retry = retry
        self.status = status


@dataclass
class MediaFile:
    "A file downloaded from WhatsApp."
    data: bytes
    mime_type: str
    sha256: str
    file_size: int


class TokenBucket:
    """At most `rate` sends a second: a send takes a token, waiting for one
    when there is none. The burst is a tenth of a second's worth: Meta
    counts arrivals on its clock, after network jitter, so we keep room."""

    def __init__(self, rate):
        self._lock = threading.Lock()
        self._tokens = float('inf')
        self.set_rate(rate)
        self._updated = time.monotonic()

    def set_rate(self, rate):
        with self._lock:
            self.rate = float(rate)
            self.capacity = max(1.0, self.rate / 10)
            self._tokens = min(self._tokens, self.capacity)

    def take(self):
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.capacity,
                self._tokens + (now - self._updated) * self.rate)
            self._updated = now
            # Reserve the token now and sleep off the debt outside the
            # lock: waiting senders go out in their arrival order.
            self._tokens -= 1
            wait = -self._tokens / self.rate if self._tokens < 0 else 0
        if wait:
            time.sleep(wait)


class SharedPace:
    """The same pace for every worker sending from the number, on any
    machine (PostgreSQL): each send reserves its slot in the database
    (throttle.take_send_slot) and sleeps until it. Outside a transaction,
    or when the database cannot say, this process's bucket paces it."""

    def __init__(self, phone_number_id, rate):
        self.phone_number_id = phone_number_id
        self.local = TokenBucket(rate)
        self.rate = self.local.rate

    def set_rate(self, rate):
        self.local.set_rate(rate)
        self.rate = self.local.rate

    def take(self):
        from trytond import backend
        from trytond.transaction import Transaction

        from . import throttle
        database = Transaction().database
        name = database.name if database else None
        if not throttle.shared(name):
            return self.local.take()
        try:
            wait = throttle.take_send_slot(name, self.phone_number_id,
                self.rate, self.local.capacity)
        except backend.DatabaseOperationalError:
            logger.warning("the pace of %s kept in this process only",
                self.phone_number_id, exc_info=True)
            return self.local.take()
        if wait:
            time.sleep(wait)


_buckets = {}
_buckets_lock = threading.Lock()


def bucket_for(phone_number_id, rate):
    """What paces every send from this number: a bucket of this process,
    or on PostgreSQL the pace the database keeps for every worker."""
    from trytond import backend
    with _buckets_lock:
        bucket = _buckets.get(phone_number_id)
        if bucket is None:
            bucket = _buckets[phone_number_id] = (
                SharedPace(phone_number_id, rate)
                if backend.name == 'postgresql' else TokenBucket(rate))
        elif bucket.rate != rate:
            bucket.set_rate(rate)  # the configuration changed
        return bucket


class WhatsAppClient:

    def __init__(self, base_url, version, phone_number_id, access_token,
            throughput=80, timeout=10):
        self.base_url = base_url.rstrip('/')
        self.version = version
        self.phone_number_id = str(phone_number_id)
        self.access_token = access_token
        self.timeout = timeout
        self.bucket = bucket_for(self.phone_number_id, throughput)

    @classmethod
    def from_config(cls):
        "The client of the [kraya_crm] whatsapp_* settings of trytond.conf."
        return cls(
            setting('whatsapp_api_url', 'https://graph.facebook.com', str),
            setting('whatsapp_api_version', 'v21.0', str),
            setting('whatsapp_phone_number_id', '', str),
            setting('whatsapp_access_token', '', str),
            throughput=setting('whatsapp_throughput', 80, float))

    @property
    def messages_url(self):
        return (f'{self.base_url}/{self.version}/{self.phone_number_id}'
            '/messages')

    @property
    def graph_url(self):
        return f'{self.base_url}/{self.version}'

    def send_text(self, to, body, callback_data=None, reply_to=None):
        "A free-form text: only within 24 h of the lead's last message."
        return self._send(to, 'text', {'body': body, 'preview_url': False},
            callback_data, reply_to)

    def send_template(self, to, name, language, body_parameters=(),
            callback_data=None, header=None, reply_to=None):
        """An approved template, the only way to write first or after 24 h.
        `header` fills an IMAGE or DOCUMENT header: {'type', 'id',
        'filename'?}."""
        template = {'name': name, 'language': {'code': language}}
        components = []
        if header:
            kind = header['type']
            media = {'id': header['id']}
            if kind == 'document' and header.get('filename'):
                media['filename'] = header['filename']
            components.append({'type': 'header', 'parameters': [
                        {'type': kind, kind: media}]})
        if body_parameters:
            components.append({'type': 'body', 'parameters': [
                        {'type': 'text', 'text': str(p)}
                        for p in body_parameters]})
        if components:
            template['components'] = components
        return self._send(to, 'template', template, callback_data, reply_to)

    def send_media(self, to, kind, media_id, caption=None, filename=None,
            callback_data=None, reply_to=None):
        "An uploaded image, document, audio or video, by its media id."
        media = {'id': media_id}
        if caption and kind in {'image', 'document', 'video'}:
            media['caption'] = caption
        if filename and kind == 'document':
            media['filename'] = filename
        return self._send(to, kind, media, callback_data, reply_to)

    def send_buttons(self, to, body, titles, callback_data=None,
            reply_to=None):
        """Text with up to three reply buttons; a tap comes back as an
        interactive button_reply carrying the title."""
        return self._send(to, 'interactive', {
                'type': 'button',
                'body': {'text': body},
                'action': {'buttons': [
                        {'type': 'reply',
                            'reply': {'id': f'b{i}', 'title': title}}
                        for i, title in enumerate(titles, 1)]},
                }, callback_data, reply_to)

    def _send(self, to, type_, content, callback_data, reply_to=None):
        message = {
            'messaging_product': 'whatsapp',
            'recipient_type': 'individual',
            'to': ''.join(c for c in to if c.isdigit()),
            'type': type_,
            type_: content,
            }
        if reply_to:
            # The lead's phone shows our message quoting theirs (or ours).
            message['context'] = {'message_id': reply_to}
        if callback_data is not None:
            # Status webhooks echo it: they name a send whose answer we lost.
            message['biz_opaque_callback_data'] = str(callback_data)
        self.bucket.take()
        try:
            answer = self._post_json(self.messages_url, message)
        except _Answered as error:
            return _error_result(error.status, error.headers, error.body)
        except _Unreachable as error:
            # Refused, reset or timed out: the message may or may not
            # have gone; callback_data lets a status webhook tell.
            return SendResult('retry', error_code='network',
                error_message=error.reason, retry_after=DEFAULT_RETRY_AFTER)
        try:
            return SendResult('sent', provider_id=answer['messages'][0]['id'])
        except (KeyError, IndexError, TypeError):
            return SendResult('retry', error_code='bad_answer',
                error_message="The answer has no message id",
                retry_after=DEFAULT_RETRY_AFTER)

    def mark_read(self, wamid):
        """Tell the lead's phone we read their message (blue ticks): it
        marks every earlier message of theirs read too."""
        self._call(lambda: self._post_json(self.messages_url, {
                    'messaging_product': 'whatsapp', 'status': 'read',
                    'message_id': wamid}))

    def upload_media(self, data, mime_type, filename):
        "Upload a file for sends; its media id."
        boundary = uuid.uuid4().hex
        fields = [('messaging_product', None, None, b'whatsapp'),
            ('type', None, None, mime_type.encode()),
            ('file', filename, mime_type, data)]
        body = b''.join(_form_part(boundary, *f) for f in fields) \
            + f'--{boundary}--\r\n'.encode()
        answer = self._call(lambda: self._open(urllib.request.Request(
                    f'{self.graph_url}/{self.phone_number_id}/media',
                    method='POST', data=body, headers={
                        **self._authorization,
                        'Content-Type':
                            f'multipart/form-data; boundary={boundary}',
                        })))
        try:
            return answer['id']
        except (KeyError, TypeError):
            raise GraphError('bad_answer', "The upload answer has no id",
                retry=True)

    def download_media(self, media_id):
        """The file of a media id (a lead's image, document...): its url,
        then the bytes from it, both with our token. Ids expire."""
        info = self._call(lambda: self._open(urllib.request.Request(
                    f'{self.graph_url}/{urllib.parse.quote(media_id)}',
                    headers=self._authorization)))
        try:
            url = info['url']
        except (KeyError, TypeError):
            raise GraphError('bad_answer', "The media answer has no url",
                retry=True)
        data = self._call(lambda: self._open(urllib.request.Request(
                    url, headers=self._authorization), raw=True))
        return MediaFile(data, info.get('mime_type')
            or 'application/octet-stream', info.get('sha256'),
            info.get('file_size'))

    def templates(self, business_account_id, limit=TEMPLATE_PAGE):
        """Every template of the business account, page after page (Graph
        cursors: paging.next until there is none)."""
        url = (f'{self.graph_url}/{business_account_id}/message_templates?'
            + urllib.parse.urlencode({'limit': limit}))
        while url:
            page = self._call(lambda: self._open(urllib.request.Request(
                        url, headers=self._authorization)))
            if not isinstance(page, dict):
                raise GraphError('bad_answer', "The answer is not a page",
                    retry=True)
            yield from page.get('data') or []
            url = (page.get('paging') or {}).get('next')

    @property
    def _authorization(self):
        return {'Authorization': f'Bearer {self.access_token}'}

    def _post_json(self, url, payload):
        return self._open(urllib.request.Request(url, method='POST',
                data=json.dumps(payload).encode(), headers={
                    **self._authorization,
                    'Content-Type': 'application/json',
                    }))

    def _open(self, request, raw=False):
        "The answer (JSON, or bytes when raw); _Answered or _Unreachable."
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) \
                    as response:
                body = response.read()
        except urllib.error.HTTPError as error:
            with error:
                raise _Answered(error.code, error.headers, error.read())
        except (OSError, http.client.HTTPException) as error:
            raise _Unreachable(str(error) or type(error).__name__)
        return body if raw else _json(body)

    @staticmethod
    def _call(call):
        "The answer of a call that is not a send, or GraphError."
        try:
            return call()
        except _Answered as error:
            result = _error_result(error.status, error.headers, error.body)
            raise GraphError(result.error_code, result.error_message,
                retry=result.outcome == 'retry', status=error.status)
        except _Unreachable as error:
            raise GraphError('network', error.reason, retry=True)


class _Answered(Exception):
    "An HTTP error answer."

    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body


class _Unreachable(Exception):
    "No answer: refused, reset or timed out."

    def __init__(self, reason):
        self.reason = reason


def _form_part(boundary, name, filename, content_type, data):
    "One part of a multipart/form-data body."
    disposition = f'form-data; name="{name}"'
    if filename:
        quoted = filename.replace('\\', '_').replace('"', '_')
        disposition += f'; filename="{quoted}"'
    head = f'--{boundary}\r\nContent-Disposition: {disposition}\r\n'
    if content_type:
        head += f'Content-Type: {content_type}\r\n'
    return head.encode() + b'\r\n' + data + b'\r\n'


def _json(body):
    try:
        return json.loads(body)
    except ValueError:
        return None


def _error_result(status, headers, body):
    "The SendResult of a Graph error answer (or of a proxy's error page)."
    answer = _json(body)
    error = answer.get('error') if isinstance(answer, dict) else None
    if not isinstance(error, dict):
        error = {}
    code = error.get('code')
    outcome, retry_after = ERRORS.get(code) or (
        ('retry', DEFAULT_RETRY_AFTER) if status in RETRY_STATUSES
        else ('failed', None))
    if outcome == 'retry':
        retry_after = _retry_after_header(headers) or retry_after
    else:
        retry_after = None
    # "(#131047) Re-engagement message": the code is kept apart.
    title = re.sub(r'^\(#\d+\)\s*', '', str(error.get('message') or ''))
    details = (error.get('error_data') or {}).get('details')
    message = ': '.join(filter(None, [title, details])) or f'HTTP {status}'
    return SendResult(outcome,
        error_code=str(code) if code is not None else f'http_{status}',
        error_message=message, retry_after=retry_after)


def _retry_after_header(headers):
    try:
        return max(0.0, float(headers.get('Retry-After')))
    except (TypeError, ValueError):
        return None  # absent, or an HTTP date: the default serves
