"""Sending WhatsApp messages through Meta's Cloud API (the Graph API's
/<phone number id>/messages endpoint).

A send never raises for what the provider or the network did: it answers a
SendResult saying what to do next, 'sent' (with the wamid), 'retry' (later,
after retry_after seconds), 'reengage' (the 24-hour window is closed: send
a template), 'invalid_number' or 'failed'. Sends of one business number
share a token bucket in this process, so a burst waits instead of being
refused by Meta's throughput limit."""
import http.client
import json
import re
import threading
import time
import urllib.error
import urllib.request

from .http import setting
from .outbox import SendResult

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
    131047: ('reengage', None),  # over 24 h since the lead's last message
    131026: ('invalid_number', None),  # undeliverable: not on WhatsApp
    131021: ('invalid_number', None),  # the recipient is our own number
    131030: ('invalid_number', None),  # not on the test number's allow list
    }
# Without a known code, an overloaded or broken server is worth a retry.
RETRY_STATUSES = {429, 500, 502, 503, 504}
DEFAULT_RETRY_AFTER = 30


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


_buckets = {}
_buckets_lock = threading.Lock()


def bucket_for(phone_number_id, rate):
    "The bucket shared by every send from this number in the process."
    with _buckets_lock:
        bucket = _buckets.get(phone_number_id)
        if bucket is None:
            bucket = _buckets[phone_number_id] = TokenBucket(rate)
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

    def send_text(self, to, body, callback_data=None):
        "A free-form text: only within 24 h of the lead's last message."
        return self._send(to, 'text', {'body': body, 'preview_url': False},
            callback_data)

    def send_template(self, to, name, language, body_parameters=(),
            callback_data=None):
        "An approved template, the only way to write first or after 24 h."
        template = {'name': name, 'language': {'code': language}}
        if body_parameters:
            template['components'] = [{'type': 'body', 'parameters': [
                        {'type': 'text', 'text': str(p)}
                        for p in body_parameters]}]
        return self._send(to, 'template', template, callback_data)

    def _send(self, to, type_, content, callback_data):
        message = {
            'messaging_product': 'whatsapp',
            'recipient_type': 'individual',
            'to': ''.join(c for c in to if c.isdigit()),
            'type': type_,
            type_: content,
            }
        if callback_data is not None:
            # Status webhooks echo it: they name a send whose answer we lost.
            message['biz_opaque_callback_data'] = str(callback_data)
        request = urllib.request.Request(self.messages_url, method='POST',
            data=json.dumps(message).encode(), headers={
                'Authorization': f'Bearer {self.access_token}',
                'Content-Type': 'application/json',
                })
        self.bucket.take()
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) \
                    as response:
                answer = _json(response.read())
        except urllib.error.HTTPError as error:
            with error:
                return _error_result(error.code, error.headers, error.read())
        except (OSError, http.client.HTTPException) as error:
            # Refused, reset or timed out: the message may or may not
            # have gone; callback_data lets a status webhook tell.
            return SendResult('retry', error_code='network',
                error_message=str(error) or type(error).__name__,
                retry_after=DEFAULT_RETRY_AFTER)
        try:
            return SendResult('sent', provider_id=answer['messages'][0]['id'])
        except (KeyError, IndexError, TypeError):
            return SendResult('retry', error_code='bad_answer',
                error_message="The answer has no message id",
                retry_after=DEFAULT_RETRY_AFTER)


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
