"""A local stand-in for Meta's WhatsApp Cloud API, for the demo and the
tests: the real client talks HTTP to it as it would to graph.facebook.com.

    POST /<version>/<phone number id>/messages   a send (Bearer token): text,
                         template, image/document/audio/video/sticker by
                         id or link, interactive buttons and lists, a
                         quoted reply (context), or a read receipt
    POST /<version>/<phone number id>/media   an upload (multipart)
    GET /<version>/<media id>    the media's url, type, sha256 and size
    GET /_media/<media id>       the bytes (the same Bearer token)
    GET /<version>/<WABA id>/message_templates   the catalogue, paged
                         (limit, after; paging.cursors and paging.next)
    POST /_sim/reply     {"from", "name", and "text", or "image" /
                         "document" / "audio" / "video" / "sticker":
                         {"filename", "mime_type", "data_base64",
                         "caption", "fail"?, "expired"?}, or "button":
                         {"text", "payload"};
                         "context": a wamid it quotes}: a lead writes to us
    POST /_sim/preferences   {"from", "value": "stop"|"resume"}: a lead
                         stops or resumes marketing messages
    POST /_sim/fail      {"to", "code", "times"?, "async"?}: the next sends
                         to that number fail, answered or as a status
    POST /_sim/media     {"id", "expire"?, "fail"?}: a media id expires,
                         or its next `fail` downloads answer 500
    GET|POST /_sim/templates   the catalogue; POST {"templates": [...],
                         "replace"?} adds, changes or replaces entries
    POST /_sim/window    {"number", "open"?}: open or close a 24-hour window
    GET|POST /_sim/settings   throughput, pair_interval, statuses,
                         status_delay, response_delay, not_on_whatsapp,
                         webhook_url
    GET /_sim/messages   every accepted send, in order (with its media's
                         filename, type and size, its buttons, what it quotes)
    GET /_sim/reads      every read receipt the business sent
    POST /_sim/reset     GET /_sim/health

It keeps Meta's limits (throughput per number, pair rate per recipient,
the 24-hour window for free-form messages, numbers not on WhatsApp, media
types and sizes, three reply buttons of 20 characters, templates that must
exist and be approved) and answers
with Meta's error shapes and HTTP statuses. Accepted sends get signed
status webhooks (sent, delivered, read) from a background thread.

    python -m kraya_peers.whatsapp --port 8100 --webhook-url URL \\
        --app-secret S --access-token T --phone-number-id ID

This file imports nothing of trytond or of the client: it is the other
side of the wire, and a test oracle must not share the code it checks."""
import argparse
import base64
import email.parser
import email.policy
import functools
import hashlib
import heapq
import hmac
import itertools
import json
import logging
import re
import secrets
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

logger = logging.getLogger(__name__)

SEND_PATH = re.compile(r'/(v\d+\.\d+)/([^/]+)/messages')
UPLOAD_PATH = re.compile(r'/(v\d+\.\d+)/([^/]+)/media')
TEMPLATES_PATH = re.compile(r'/(v\d+\.\d+)/([^/]+)/message_templates')
MEDIA_PATH = re.compile(r'/(v\d+\.\d+)/(\d+)')
DOWNLOAD_PATH = re.compile(r'/_media/(\d+)')
MB = 1024 * 1024
# Meta's supported media: kind -> ({MIME type: what it is}, largest bytes).
MEDIA_LIMITS = {
    'image': ({'image/jpeg': 'JPEG', 'image/png': 'PNG'}, 5 * MB),
    'document': ({'text/plain': 'text', 'application/pdf': 'PDF',
            'application/msword': 'Word',
            'application/vnd.openxmlformats-officedocument'
            '.wordprocessingml.document': 'Word',
            'application/vnd.ms-excel': 'Excel',
            'application/vnd.openxmlformats-officedocument'
            '.spreadsheetml.sheet': 'Excel',
            'application/vnd.ms-powerpoint': 'PowerPoint',
            'application/vnd.openxmlformats-officedocument'
            '.presentationml.presentation': 'PowerPoint'}, 100 * MB),
    'audio': ({'audio/aac': 'AAC', 'audio/amr': 'AMR', 'audio/mpeg': 'MP3',
            'audio/mp4': 'MP4 audio', 'audio/ogg': 'OGG (Opus)'}, 16 * MB),
    'video': ({'video/mp4': 'MP4', 'video/3gpp': '3GPP'}, 16 * MB),
    # Animated stickers may be 500 KB; a lead's sticker is not checked.
    'sticker': ({'image/webp': 'WebP'}, 500 * 1024),
    }
MEDIA_KINDS = tuple(MEDIA_LIMITS)
# Media ids live 30 days at Meta; a lead's media can be fetched for 7.
MEDIA_SECONDS = 30 * 24 * 3600
MAX_BUTTONS, MAX_BUTTON_TITLE = 3, 20
MAX_ROWS, MAX_ROW_TITLE = 10, 24
TEMPLATE_PAGE = 25
TEMPLATE_LIMIT = 250  # an account whose business is not verified
# The approved templates of the demo business (name, language, category,
# body); a send names one of them or is refused with 132001.
DEFAULT_TEMPLATES = [
    ('hello', 'en', 'UTILITY', "Hello from us!"),
    ('hello', 'hi', 'UTILITY', "नमस्ते!"),
    ('welcome', 'en', 'UTILITY', "Namaste {{1}}, thank you for writing to us."),
    ('enquiry_welcome', 'en', 'UTILITY',
        "Namaste {{1}}! Thank you for your enquiry. May we call you today?"),
    ('site_visit', 'en', 'UTILITY',
        "Hello {{1}}, your site visit is at {{2}}."),
    ('site_visit_invite', 'en', 'UTILITY',
        "Hello {{1}}, would you like to visit the site this weekend?"),
    ('proposal_reminder', 'en', 'UTILITY',
        "Hello {{1}}, did you get a chance to look at our proposal for {{2}}?"),
    ('bench_follow_up', 'en', 'UTILITY', "Hello {{1}} of {{2}}."),
    # To the team: task reminders and first-response alerts.
    ('task_reminder', 'en', 'UTILITY', "Reminder: {{1}} at {{2}} ({{3}})."),
    ('lead_waiting', 'en', 'UTILITY',
        "{{1}} is waiting for a first answer: {{2}} so far, due {{3}}."),
    ('offer', 'en', 'MARKETING', "A festive offer for you, {{1}}!"),
    ('new_launch_offer', 'en', 'MARKETING',
        "{{1}}, our new launch has an early-bird price. Reply to know more."),
    ]
WINDOW_SECONDS = 24 * 3600
STATUSES = ('sent', 'delivered', 'read')
ERROR_CODES_URL = '/docs/whatsapp/cloud-api/support/error-codes/'
WEBHOOK_TRIES = 5

# Code -> (HTTP status, title, details), as the Cloud API answers them.
ERRORS = {
    100: (400, "Invalid parameter",
        "The request included unsupported or misspelled parameters."),
    190: (401, "Access token has expired",
        "Invalid OAuth access token - Cannot parse access token"),
    2500: (400, "Unknown path components", "Unknown path."),
    80007: (400, "Rate limit issues",
        "The WhatsApp Business Account has reached its rate limit."),
    130429: (400, "Rate limit hit",
        "Message failed to send because there were too many messages sent "
        "from this phone number in a short period of time."),
    131000: (500, "Something went wrong",
        "Message failed to send due to an unknown error."),
    131026: (400, "Message undeliverable",
        "Unable to deliver message: the recipient is not on WhatsApp or "
        "has not accepted the terms of service."),
    131009: (400, "Parameter value is not valid",
        "One or more parameter values are invalid."),
    131047: (400, "Re-engagement message",
        "Message failed to send because more than 24 hours have passed "
        "since the customer last replied to this number."),
    131048: (400, "Spam rate limit hit",
        "Message failed to send because there are restrictions on how "
        "many messages can be sent from this phone number."),
    131049: (400, "This message was not delivered to maintain healthy "
        "ecosystem engagement.",
        "In order to maintain a healthy ecosystem engagement, the message "
        "failed to be delivered."),
    131050: (400, "Unable to deliver the message. This recipient has "
        "chosen to stop receiving marketing messages on WhatsApp from your "
        "business.",
        "Message failed to send because the user has stopped marketing "
        "messages from this business."),
    131053: (400, "Media upload error",
        "Unable to upload the media used in the message."),
    131056: (400, "(Business Account, Consumer Account) pair rate limit hit",
        "Message failed to send because there were too many messages sent "
        "from this phone number to the same phone number in a short period "
        "of time."),
    132001: (404, "Template name does not exist in the translation",
        "The template does not exist in this language or is not approved."),
    }
# Graph errors of the GET endpoints (media, templates), not of sends.
NOT_FOUND_SUBCODE = 33


def digits(number):
    "A WhatsApp id: the E.164 number's digits, without + or spaces."
    return ''.join(c for c in str(number) if c.isdigit())


def signature(body, secret):
    "The X-Hub-Signature-256 header Meta puts on a webhook body."
    return 'sha256=' + hmac.new(
        secret.encode(), body, hashlib.sha256).hexdigest()


def graph_error(code, details=None, subcode=None):
    "(HTTP status, body) of a Graph API error answer."
    status, title, default_details = ERRORS.get(
        code, (400, "Simulated error", "Simulated error."))
    error = {
        'message': f'(#{code}) {title}',
        'type': 'OAuthException',
        'code': code,
        'error_data': {
            'messaging_product': 'whatsapp',
            'details': details or default_details,
            },
        'fbtrace_id': secrets.token_urlsafe(16),
        }
    if subcode is not None:
        error['error_subcode'] = subcode
    return status, {'error': error}


def status_error(code):
    "An error of a failed status webhook."
    _, title, details = ERRORS.get(code, (400, "Simulated error", ""))
    return {'code': code, 'title': title, 'message': title,
        'error_data': {'details': details}, 'href': ERROR_CODES_URL}


class Refused(ValueError):
    "A send Meta refuses with a code of its own (not 100)."

    def __init__(self, code, details=None):
        super().__init__(details)
        self.code = code
        self.details = details


def read_message(body):
    """The send request as the Cloud API checks it; ValueError says why not
    (answered as error 100), Refused carries another code."""
    try:
        message = json.loads(body)
    except ValueError:
        raise ValueError("The request body is not JSON.")
    if not isinstance(message, dict):
        raise ValueError("The request body is not a JSON object.")
    if message.get('status') == 'read':
        return read_receipt(message)
    unknown = set(message) - {'messaging_product', 'recipient_type', 'to',
        'type', 'text', 'template', 'biz_opaque_callback_data', 'context',
        'interactive', *MEDIA_KINDS}
    if unknown:
        raise ValueError(
            f"Param {sorted(unknown)[0]} is not a valid parameter.")
    if message.get('messaging_product') != 'whatsapp':
        raise ValueError("The parameter messaging_product is required.")
    if message.get('recipient_type', 'individual') != 'individual':
        raise ValueError("Param recipient_type must be individual.")
    if not isinstance(message.get('to'), str) \
            or not 8 <= len(digits(message['to'])) <= 15:
        raise ValueError("Param to must be a phone number.")
    callback = message.get('biz_opaque_callback_data')
    if callback is not None and (
            not isinstance(callback, str) or len(callback) > 512):
        raise ValueError("Param biz_opaque_callback_data must be a string "
            "of at most 512 characters.")
    context = message.get('context')
    if context is not None and (not isinstance(context, dict)
            or not isinstance(context.get('message_id'), str)):
        raise ValueError("Param context['message_id'] must be a string.")
    type_ = message.setdefault('type', 'text')
    if type_ == 'text':
        text = message.get('text')
        if not isinstance(text, dict) \
                or not isinstance(text.get('body'), str) \
                or not 0 < len(text['body']) <= 4096:
            raise ValueError("Param text['body'] is required.")
        if not isinstance(text.get('preview_url', False), bool):
            raise ValueError("Param text['preview_url'] must be a boolean.")
    elif type_ == 'template':
        read_template(message.get('template'))
    elif type_ in MEDIA_KINDS:
        read_media_object(type_, message.get(type_))
    elif type_ == 'interactive':
        read_interactive(message.get('interactive'))
    else:
        raise ValueError(f"Message type {type_} is not simulated.")
    return message


def read_receipt(message):
    "A read receipt: {messaging_product, status: read, message_id}."
    if message.get('messaging_product') != 'whatsapp' \
            or not isinstance(message.get('message_id'), str):
        raise ValueError("Param message_id is required.")
    unknown = set(message) - {'messaging_product', 'status', 'message_id',
        'typing_indicator'}
    if unknown:
        raise ValueError(
            f"Param {sorted(unknown)[0]} is not a valid parameter.")
    return message


def read_template(template):
    if not isinstance(template, dict) or not template.get('name') \
            or not isinstance(template.get('language'), dict) \
            or not template['language'].get('code'):
        raise ValueError(
            "Param template['name'] and template['language']['code'] "
            "are required.")
    try:
        for component in template.get('components', []):
            for parameter in component.get('parameters', []):
                kind = parameter['type']
                if kind == 'text' and not isinstance(
                        parameter.get('text'), str):
                    raise ValueError("A text parameter needs its text.")
                if kind in MEDIA_KINDS:
                    read_media_object(kind, parameter.get(kind))
    except (AttributeError, KeyError, TypeError):
        raise ValueError("Param template['components'] is malformed.")


def read_media_object(kind, media):
    "An image, document... sent by the id of an upload or by a link."
    if not isinstance(media, dict) or (
            not isinstance(media.get('id'), str)
            and not isinstance(media.get('link'), str)):
        raise ValueError(f"Param {kind}['id'] or {kind}['link'] is required.")
    if media.get('id') and media.get('link'):
        raise ValueError(f"Param {kind} takes an id or a link, not both.")
    if media.get('link') and not re.match(r'https?://', media['link']):
        raise ValueError(f"Param {kind}['link'] must be an http(s) URL.")
    if 'caption' in media and (kind in {'audio', 'sticker'}
            or not isinstance(media['caption'], str)
            or len(media['caption']) > 1024):
        raise ValueError(f"Param {kind}['caption'] is not valid.")
    if 'filename' in media and kind != 'document':
        raise ValueError(f"Param {kind}['filename'] is not a valid parameter.")


def read_interactive(interactive):
    """Reply buttons (at most 3, titles of at most 20 characters, unique)
    or a list (at most 10 rows of 24 characters); Meta refuses others
    with 131009."""
    if not isinstance(interactive, dict) \
            or interactive.get('type') not in {'button', 'list'}:
        raise ValueError("Param interactive['type'] must be button or list.")
    body = interactive.get('body')
    if not isinstance(body, dict) or not isinstance(body.get('text'), str) \
            or not 0 < len(body['text']) <= 1024:
        raise ValueError("Param interactive['body']['text'] is required.")
    action = interactive.get('action')
    if not isinstance(action, dict):
        raise ValueError("Param interactive['action'] is required.")
    try:
        if interactive['type'] == 'button':
            buttons = action['buttons']
            titles = [b['reply']['title'] for b in buttons
                if b['type'] == 'reply' and b['reply']['id']]
            if len(titles) != len(buttons):
                raise ValueError("Each button is a reply with an id.")
            if not 0 < len(buttons) <= MAX_BUTTONS:
                raise Refused(131009, "Buttons count should be between 1 "
                    f"and {MAX_BUTTONS}.")
            if any(not t or len(t) > MAX_BUTTON_TITLE for t in titles):
                raise Refused(131009, "Button title length is too long. "
                    f"The maximum is {MAX_BUTTON_TITLE} characters.")
            if len(set(titles)) != len(titles):
                raise Refused(131009, "Button titles must be unique.")
        else:
            rows = [r for section in action['sections']
                for r in section['rows']]
            if not isinstance(action.get('button'), str) \
                    or not 0 < len(action['button']) <= 20:
                raise Refused(131009, "The list's button text is 1 to 20 "
                    "characters.")
            if not 0 < len(rows) <= MAX_ROWS:
                raise Refused(131009,
                    f"A list has between 1 and {MAX_ROWS} rows.")
            if any(not r['id'] or not r['title']
                    or len(r['title']) > MAX_ROW_TITLE for r in rows):
                raise Refused(131009, "Row title length is too long. The "
                    f"maximum is {MAX_ROW_TITLE} characters.")
    except (AttributeError, KeyError, TypeError):
        raise ValueError("Param interactive['action'] is malformed.")


def media_kind(mime_type):
    "The kind a MIME type is sent as, or None when WhatsApp takes none."
    for kind, (types, _) in MEDIA_LIMITS.items():
        if kind != 'sticker' and mime_type in types:
            return kind
    return None


def multipart(content_type, body):
    "{name: (filename, content type, bytes)} of a multipart/form-data body."
    parser = email.parser.BytesParser(policy=email.policy.HTTP)
    message = parser.parsebytes(
        b'Content-Type: ' + (content_type or '').encode() + b'\r\n\r\n'
        + body)
    if not message.is_multipart():
        raise ValueError("The upload is not multipart/form-data.")
    parts = {}
    for part in message.iter_parts():
        name = part.get_param('name', header='content-disposition')
        if name:
            parts[name] = (part.get_filename(), part.get_content_type(),
                part.get_payload(decode=True) or b'')
    return parts


def _statuses(value):
    value = list(value)
    if set(value) - set(STATUSES):
        raise ValueError(f'statuses are among {", ".join(STATUSES)}')
    return value


# Each setting and how a value of it is read (from JSON too).
SETTINGS = {
    'throughput': float,  # sends a second for the number
    'pair_interval': float,  # seconds between sends to one recipient
    'statuses': _statuses,  # posted after an accepted send, in order
    'status_delay': float,  # seconds between two of them
    'response_delay': float,  # seconds every send answer waits
    'not_on_whatsapp': lambda numbers: {digits(n) for n in numbers},
    'webhook_url': lambda url: url or None,
    }
DEFAULTS = {
    'throughput': 80, 'pair_interval': 6, 'statuses': STATUSES,
    'status_delay': 0.2, 'response_delay': 0, 'not_on_whatsapp': (),
    'webhook_url': None,
    }


class Simulator:
    "Meta's side of one business number: its limits, sends and webhooks."

    def __init__(self, port=0, webhook_url=None, app_secret='',
            access_token='', phone_number_id='100000000000001',
            host='127.0.0.1', waba_id='100000000000000',
            display_phone_number='919800000001', **settings):
        self.host, self.port = host, port
        self.app_secret = app_secret
        self.access_token = access_token
        self.phone_number_id = str(phone_number_id)
        self.waba_id = waba_id
        self.display_phone_number = display_phone_number
        self._initial = {**DEFAULTS, 'webhook_url': webhook_url, **settings}
        self._lock = threading.Lock()
        self._webhooks = WebhookSender(self)
        self._server = self._thread = None
        self.reset()

    # Driving it (the /_sim/ endpoints call these).

    def configure(self, **settings):
        unknown = set(settings) - set(SETTINGS)
        if unknown:
            raise ValueError(f'unknown settings: {", ".join(sorted(unknown))}')
        values = {name: SETTINGS[name](value)
            for name, value in settings.items()}
        with self._lock:
            self.__dict__.update(values)
            self._capacity = min(self._capacity, self.throughput)
        return self.settings()

    def settings(self):
        return {name: sorted(value) if isinstance(value, set) else value
            for name, value in vars(self).items() if name in SETTINGS}

    def reset(self):
        "Forget every send, window, failure and setting made since start."
        self._webhooks.clear()
        with self._lock:
            self._sent = []
            self._reads = []  # the wamids the business marked read
            self._inbound = set()  # the wamids of the leads' messages
            self._last_inbound = {}  # wa_id -> time of its last message
            self._last_send_to = {}  # wa_id -> monotonic time of our last
            self._failures = {}  # wa_id -> [code, times, asynchronous]
            self._media = {}  # media id -> Media
            self._media_failures = {}  # media id -> downloads to fail
            self._templates = {}  # (name, language) -> template
            self._capacity, self._capacity_at = 0, time.monotonic()
        self.set_templates([{'name': name, 'language': language,
                    'category': category, 'body': body}
                for name, language, category, body in DEFAULT_TEMPLATES])
        self.configure(**self._initial)
        with self._lock:
            self._capacity = self.throughput

    def reply(self, number, text=None, name=None, media=None, button=None,
            context=None):
        """A lead writes to us: posts the inbound message webhook and opens
        the number's 24-hour window. `media` is {kind: {filename,
        mime_type, data (bytes) or data_base64, caption, fail (its first
        downloads that fail), expired}}: the file is kept under a media id
        the webhook carries, to be downloaded. Returns
        the message's wamid (and the media id)."""
        wa_id, wamid = digits(number), new_wamid()
        message = {'from': wa_id, 'id': wamid,
            'timestamp': str(int(time.time()))}
        answer = {'wamid': wamid}
        if media:
            (kind, item), = media.items()
            data = item.get('data')
            if data is None:
                data = base64.b64decode(item.get('data_base64') or '')
            stored = self._keep_media(data, item['mime_type'],
                item.get('filename'), lead=True)
            if item.get('fail'):
                # Its first downloads fail, as when Meta is having trouble.
                self.fail_media(stored.id, item['fail'])
            if item.get('expired'):
                # Gone before anyone fetches it.
                self.expire_media(stored.id)
            content = {'id': stored.id, 'mime_type': stored.mime_type,
                'sha256': stored.sha256}
            if item.get('caption'):
                content['caption'] = item['caption']
            if kind == 'document' and stored.filename:
                content['filename'] = stored.filename
            if kind == 'sticker':
                content['animated'] = False
            message.update(type=kind, **{kind: content})
            answer['media_id'] = stored.id
        elif button is not None:
            # A quick-reply button of a template ("Stop promotions").
            message.update(type='button', button={
                    'text': button['text'],
                    'payload': button.get('payload', button['text'])})
        else:
            message.update(type='text', text={'body': text})
        if context:
            message['context'] = {'from': self.display_phone_number,
                'id': context}
        self.open_window(wa_id)
        with self._lock:
            self._inbound.add(wamid)
        self._webhooks.schedule(0, lambda: self._envelope({
                    'contacts': [{'profile': {'name': name or wa_id},
                            'wa_id': wa_id}],
                    'messages': [message],
                    }))
        return answer

    def preferences(self, number, value, name=None):
        """A lead stops or resumes marketing messages in WhatsApp: posts
        the user_preferences webhook field."""
        if value not in {'stop', 'resume'}:
            raise ValueError("value is stop or resume")
        wa_id = digits(number)
        detail = ("User requested to stop marketing messages"
            if value == 'stop'
            else "User requested to resume marketing messages")
        self._webhooks.schedule(0, lambda: self._envelope({
                    'contacts': [{'profile': {'name': name or wa_id},
                            'wa_id': wa_id}],
                    'user_preferences': [{'wa_id': wa_id, 'detail': detail,
                            'category': 'marketing_messages', 'value': value,
                            'timestamp': int(time.time())}],
                    }, field='user_preferences'))

    def set_templates(self, templates, replace=False):
        """Add or change catalogue entries ({name, language, category,
        status (APPROVED), body, header (TEXT, IMAGE, DOCUMENT, VIDEO or
        none)}); with `replace` the others are gone."""
        with self._lock:
            if replace:
                self._templates = {}
            for item in templates:
                key = (item['name'], item.get('language', 'en'))
                known = self._templates.get(key)
                self._templates[key] = meta_template(
                    item, known['id'] if known else str(
                        next(_template_ids)))
        return self.templates()

    def templates(self):
        with self._lock:
            return sorted(self._templates.values(), key=lambda t: int(t['id']))

    def expire_media(self, media_id):
        with self._lock:
            self._media.pop(str(media_id), None)

    def fail_media(self, media_id, times=1):
        "The next `times` looks-up of the media id answer 500."
        with self._lock:
            self._media_failures[str(media_id)] = int(times)

    def open_window(self, number, open=True):
        "As if the number had (or had not) written to us in the last 24 h."
        with self._lock:
            if open:
                self._last_inbound[digits(number)] = time.time()
            else:
                self._last_inbound.pop(digits(number), None)

    def fail(self, number, code, times=1, asynchronous=False):
        """The next `times` sends to the number fail with the code: answered
        as an error, or accepted and then reported as a failed status."""
        with self._lock:
            self._failures[digits(number)] = [
                int(code), int(times), bool(asynchronous)]

    @property
    def sent(self):
        "Every accepted send, oldest first."
        with self._lock:
            return [dict(record) for record in self._sent]

    @property
    def reads(self):
        "The wamids the business marked read, in order."
        with self._lock:
            return list(self._reads)

    def health(self):
        return {'ok': True, 'phone_number_id': self.phone_number_id,
            'messages': len(self._sent), 'webhook_url': self.webhook_url}

    # The Cloud API.

    def send(self, version, phone_number_id, authorization, body):
        "(HTTP status, answer) of POST /<version>/<phone_number_id>/messages."
        status, answer = self._send(phone_number_id, authorization, body)
        if self.response_delay:
            # Decided, then slow to answer: as when an answer is lost.
            time.sleep(self.response_delay)
        return status, answer

    def _authorized(self, authorization):
        return hmac.compare_digest(
            authorization or '', f'Bearer {self.access_token}')

    def _send(self, phone_number_id, authorization, body):
        if not self._authorized(authorization):
            return graph_error(190)
        if phone_number_id != self.phone_number_id:
            return unknown_object(phone_number_id, 'post')
        try:
            message = read_message(body)
        except Refused as refused:
            return graph_error(refused.code, refused.details)
        except ValueError as error:
            return graph_error(100, str(error))
        if message.get('status') == 'read':
            return self._mark_read(message['message_id'])
        to = digits(message['to'])
        with self._lock:
            if not self._take_throughput():
                return graph_error(130429)
            failure = self._next_failure(to)
            if failure and not failure[1]:
                return graph_error(failure[0])
            if to in self.not_on_whatsapp:
                return graph_error(131026)
            refusal = self._refusal(message)
            if refusal:
                return refusal
            if message['type'] != 'template' and not self._window_open(to):
                return graph_error(131047)
            now = time.monotonic()
            if now - self._last_send_to.get(to, -1e9) < self.pair_interval:
                return graph_error(131056)
            self._last_send_to[to] = now
            record = sent_record(message, to, self._media)
            self._sent.append(record)
        if failure:
            self._schedule_statuses(record, [('failed', failure[0])])
        else:
            self._schedule_statuses(
                record, [(status, None) for status in self.statuses])
        logger.info("sent %s to %s (%s)", message['type'], to, record['wamid'])
        answer = {'messaging_product': 'whatsapp',
            'contacts': [{'input': message['to'], 'wa_id': to}],
            'messages': [{'id': record['wamid']}]}
        if message['type'] == 'template':
            answer['messages'][0]['message_status'] = 'accepted'
        return 200, answer

    def _refusal(self, message):
        "The error of a send naming what is not there (lock held)."
        type_ = message['type']
        if type_ == 'template':
            template = message['template']
            known = self._templates.get(
                (template['name'], template['language']['code']))
            if not known or known['status'] != 'APPROVED':
                return graph_error(132001, f"template name "
                    f"({template['name']}) does not exist in "
                    f"{template['language']['code']}")
            media = [p[p['type']] for c in template.get('components', [])
                for p in c.get('parameters', []) if p['type'] in MEDIA_KINDS]
        elif type_ in MEDIA_KINDS:
            media = [message[type_]]
        else:
            media = []
        for item in media:
            if item.get('id') and item['id'] not in self._media:
                return graph_error(131053, f"Media id {item['id']} was not "
                    "uploaded to this phone number or has expired.")
        return None

    def _mark_read(self, wamid):
        with self._lock:
            if wamid not in self._inbound:
                return graph_error(100, f"Invalid message_id {wamid}: no "
                    "message from a user has it.")
            self._reads.append(wamid)
        return 200, {'success': True}

    def upload(self, phone_number_id, authorization, content_type, body):
        "(HTTP status, answer) of POST /<version>/<phone_number_id>/media."
        if not self._authorized(authorization):
            return graph_error(190)
        if phone_number_id != self.phone_number_id:
            return unknown_object(phone_number_id, 'post')
        try:
            parts = multipart(content_type, body)
        except ValueError as error:
            return graph_error(100, str(error))
        product = parts.get('messaging_product', (None, None, b''))[2]
        if product != b'whatsapp':
            return graph_error(100,
                "The parameter messaging_product is required.")
        if 'file' not in parts:
            return graph_error(100, "The parameter file is required.")
        filename, part_type, data = parts['file']
        mime_type = parts.get('type', (None, None, b''))[2].decode() \
            or part_type
        kind = media_kind(mime_type)
        if kind is None:
            return graph_error(100, f"Param file must be a file with one "
                f"of the following types: {', '.join(sorted(all_types()))}. "
                f"Received file of type '{mime_type}'.")
        limit = MEDIA_LIMITS[kind][1]
        if len(data) > limit:
            return graph_error(100, f"Param file is {len(data)} bytes: "
                f"{kind} files are at most {limit} bytes.")
        if not data:
            return graph_error(100, "Param file is empty.")
        stored = self._keep_media(data, mime_type, filename)
        return 200, {'id': stored.id}

    def _keep_media(self, data, mime_type, filename, lead=False):
        stored = Media(str(next(_media_ids)), data, mime_type, filename,
            hashlib.sha256(data).hexdigest(), time.time(), lead)
        with self._lock:
            self._media[stored.id] = stored
        return stored

    def media_info(self, media_id, authorization):
        "(HTTP status, answer) of GET /<version>/<media id>."
        if not self._authorized(authorization):
            return graph_error(190)
        with self._lock:
            failing = self._media_failures.get(media_id, 0)
            if failing:
                self._media_failures[media_id] = failing - 1
                return graph_error(131000)
            stored = self._media.get(media_id)
        if stored is None or time.time() - stored.at > MEDIA_SECONDS:
            return unknown_object(media_id, 'get')
        return 200, {'messaging_product': 'whatsapp', 'id': stored.id,
            'url': f'{self.url}/_media/{stored.id}?' + urlencode(
                {'hash': stored.sha256[:16], 'ext': int(stored.at)}),
            'mime_type': stored.mime_type, 'sha256': stored.sha256,
            'file_size': len(stored.data)}

    def download(self, media_id, authorization):
        "(HTTP status, content type, bytes) of the media's url."
        if not self._authorized(authorization):
            # lookaside.fbsbx.com answers a page, not a Graph error.
            return 401, 'text/html', b'<html><body>Unauthorized</body></html>'
        with self._lock:
            stored = self._media.get(media_id)
        if stored is None:
            return 404, 'text/html', b'<html><body>Not found</body></html>'
        return 200, stored.mime_type, stored.data

    def list_templates(self, waba_id, authorization, query):
        "(HTTP status, answer) of GET /<version>/<WABA id>/message_templates."
        if not self._authorized(authorization):
            return graph_error(190)
        if waba_id != self.waba_id:
            return unknown_object(waba_id, 'get')
        try:
            limit = int(query.get('limit', [TEMPLATE_PAGE])[0])
            after = query.get('after', [None])[0]
            start = int(base64.urlsafe_b64decode(after).decode()) \
                if after else 0
        except (TypeError, ValueError, UnicodeDecodeError):
            return graph_error(100, "Param after or limit is not valid.")
        if not 0 < limit <= 1000:
            return graph_error(100, "Param limit must be between 1 and 1000.")
        templates = self.templates()
        page = templates[start:start + limit]
        answer = {'data': page}
        if query.get('summary'):
            # Graph's summary=total_count,...: what the account holds.
            summary = {'total_count': len(templates),
                'message_template_count': len(templates),
                'message_template_limit': TEMPLATE_LIMIT,
                'are_translations_complete': True}
            asked = query['summary'][0].split(',')
            answer['summary'] = {k: v for k, v in summary.items()
                if k in asked}
        if page:
            answer['paging'] = {'cursors': {'before': paging_cursor(start),
                    'after': paging_cursor(start + len(page))}}
            if start + len(page) < len(templates):
                # The same query from the next cursor, as Graph links it.
                version = query.pop('_version', ['v21.0'])[0]
                following = {k: v[0] for k, v in query.items()}
                following.update(limit=limit,
                    after=answer['paging']['cursors']['after'])
                answer['paging']['next'] = (
                    f'{self.url}/{version}/{waba_id}/message_templates?'
                    + urlencode(following))
        return 200, answer

    def _take_throughput(self):
        "A token bucket of one second's sends, refilled continuously."
        now = time.monotonic()
        self._capacity = min(self.throughput,
            self._capacity + (now - self._capacity_at) * self.throughput)
        self._capacity_at = now
        if self._capacity < 1:
            return False
        self._capacity -= 1
        return True

    def _next_failure(self, to):
        "(code, asynchronous) when a failure was asked for this send."
        failure = self._failures.get(to)
        if not failure:
            return None
        code, times, asynchronous = failure
        if times <= 1:
            del self._failures[to]
        else:
            failure[1] -= 1
        return code, asynchronous

    def _window_open(self, to):
        return time.time() - self._last_inbound.get(to, -1e12) < WINDOW_SECONDS

    def _schedule_statuses(self, record, statuses):
        for number, (status, error_code) in enumerate(statuses, 1):
            self._webhooks.schedule(number * self.status_delay,
                functools.partial(self._status, record, status, error_code))

    def _status(self, record, status, error_code=None):
        item = {'id': record['wamid'], 'status': status,
            'timestamp': str(int(time.time())), 'recipient_id': record['to']}
        if record['biz_opaque_callback_data'] is not None:
            item['biz_opaque_callback_data'] = \
                record['biz_opaque_callback_data']
        if error_code:
            item['errors'] = [status_error(error_code)]
        return self._envelope({'statuses': [item]})

    def _envelope(self, value, field='messages'):
        "A webhook body of the messages (or another) field, as Meta posts it."
        return {'object': 'whatsapp_business_account', 'entry': [{
                    'id': self.waba_id,
                    'changes': [{'field': field, 'value': {
                                'messaging_product': 'whatsapp',
                                'metadata': {
                                    'display_phone_number':
                                        self.display_phone_number,
                                    'phone_number_id': self.phone_number_id,
                                    },
                                **value}}]}]}

    # Serving.

    @property
    def url(self):
        return f'http://{self.host}:{self.port}'

    def start(self):
        "Listen and serve in a daemon thread; the port is known on return."
        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self._server.simulator = self
        self.port = self._server.server_address[1]
        self._webhooks.start()
        self._thread = threading.Thread(target=self._server.serve_forever,
            name='whatsapp-sim', daemon=True)
        self._thread.start()
        return self

    def serve_forever(self):
        "Serve until Ctrl-C."
        if not self._server:
            self.start()
        try:
            self._thread.join()
        finally:
            self.stop()

    def stop(self):
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self._webhooks.stop()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()


def new_wamid():
    return 'wamid.' + uuid.uuid4().hex.upper()


_media_ids = itertools.count(int(time.time() * 1000) * 1000)
_template_ids = itertools.count(int(time.time()) * 1000)


@dataclass
class Media:
    "A file uploaded by the business or sent by a lead."
    id: str
    data: bytes
    mime_type: str
    filename: str
    sha256: str
    at: float
    from_lead: bool


def paging_cursor(position):
    "An opaque cursor, as Graph's are."
    return base64.urlsafe_b64encode(str(position).encode()).decode()


def all_types():
    return {t for kind, (types, _) in MEDIA_LIMITS.items()
        if kind != 'sticker' for t in types}


def unknown_object(object_id, method):
    "Graph's answer naming an id that is not there (or not ours)."
    return graph_error(100, f"Unsupported {method} request. Object with ID "
        f"'{object_id}' does not exist, cannot be loaded due to missing "
        "permissions, or does not support this operation.",
        subcode=NOT_FOUND_SUBCODE)


def meta_template(item, template_id):
    "A catalogue entry as GET message_templates answers it."
    body = item.get('body') or ''
    components = []
    header = item.get('header')
    if header:
        component = {'type': 'HEADER', 'format': header}
        if header == 'TEXT':
            component['text'] = item.get('header_text') or item['name']
        else:
            component['example'] = {'header_handle': [
                    f'https://scontent.whatsapp.net/{template_id}']}
        components.append(component)
    parameters = re.findall(r'\{\{(\d+)\}\}', body)
    component = {'type': 'BODY', 'text': body}
    if parameters:
        component['example'] = {'body_text': [
                [f'example {p}' for p in parameters]]}
    components.append(component)
    return {'name': item['name'], 'language': item.get('language', 'en'),
        'status': item.get('status', 'APPROVED'),
        'category': item.get('category', 'UTILITY'),
        'parameter_format': 'POSITIONAL', 'components': components,
        'id': template_id}


def sent_record(message, to, media_store=None):
    "What GET /_sim/messages tells of an accepted send."
    template = message.get('template')
    media = None
    if template:
        header_media = [p for c in template.get('components', [])
            for p in c.get('parameters', []) if p['type'] in MEDIA_KINDS]
        if header_media:
            media = media_record(header_media[0]['type'],
                header_media[0][header_media[0]['type']], media_store)
        template = {'name': template['name'],
            'language': template['language']['code'],
            'parameters': [p.get('text')
                for c in template.get('components', [])
                for p in c.get('parameters', []) if p['type'] == 'text']}
    if message['type'] in MEDIA_KINDS:
        media = media_record(message['type'], message[message['type']],
            media_store)
    interactive = message.get('interactive') or {}
    buttons = [b['reply']['title']
        for b in interactive.get('action', {}).get('buttons', [])] or None
    rows = [r['title'] for s in interactive.get('action', {}).get(
            'sections', []) for r in s['rows']] or None
    text = message.get('text', {}).get('body') \
        or interactive.get('body', {}).get('text')
    return {'wamid': new_wamid(), 'to': to, 'type': message['type'],
        'text': text, 'template': template, 'media': media,
        'buttons': buttons, 'rows': rows,
        'reply_to': (message.get('context') or {}).get('message_id'),
        'biz_opaque_callback_data': message.get('biz_opaque_callback_data'),
        'at': time.time(), 'body': message}


def media_record(kind, item, media_store):
    "The file a send carried, as the lead's phone receives it."
    stored = (media_store or {}).get(item.get('id'))
    return {'kind': kind, 'id': item.get('id'), 'link': item.get('link'),
        'caption': item.get('caption'),
        'filename': item.get('filename') or (stored.filename
            if stored else None),
        'mime_type': stored.mime_type if stored else None,
        'size': len(stored.data) if stored else None,
        'sha256': stored.sha256 if stored else None}


class WebhookSender:
    """Posts the signed webhooks of a simulator from one background thread,
    each at its time, in the order they were due; retries a refused one a
    few times with a growing wait, as Meta does (it tries for days)."""

    def __init__(self, simulator):
        self.simulator = simulator
        self._due = []  # (time, sequence, tries, make the body)
        self._sequence = itertools.count()
        self._condition = threading.Condition()
        self._thread = None

    def schedule(self, delay, make_body, tries=0):
        with self._condition:
            heapq.heappush(self._due, (time.monotonic() + delay,
                    next(self._sequence), tries, make_body))
            self._condition.notify()

    def clear(self):
        with self._condition:
            self._due.clear()

    def start(self):
        self._stopping = False
        self._thread = threading.Thread(
            target=self._run, name='whatsapp-sim-webhooks', daemon=True)
        self._thread.start()

    def stop(self):
        if self._thread:
            with self._condition:
                self._stopping = True
                self._condition.notify()
            self._thread.join()
            self._thread = None

    def _run(self):
        while True:
            with self._condition:
                while not self._stopping and (not self._due
                        or self._due[0][0] > time.monotonic()):
                    self._condition.wait(self._due[0][0] - time.monotonic()
                        if self._due else None)
                if self._stopping:
                    return
                _, _, tries, make_body = heapq.heappop(self._due)
            if not self._post(make_body) and tries + 1 < WEBHOOK_TRIES:
                self.schedule(2 ** tries, make_body, tries + 1)

    def _post(self, make_body):
        url = self.simulator.webhook_url
        if not url:
            return True
        body = json.dumps(make_body()).encode()
        request = urllib.request.Request(url, data=body, method='POST',
            headers={'Content-Type': 'application/json',
                'X-Hub-Signature-256':
                    signature(body, self.simulator.app_secret)})
        try:
            with urllib.request.urlopen(request, timeout=10):
                return True
        except (OSError, ValueError) as error:
            logger.warning("webhook to %s refused: %s", url, error)
            return False


# The /_sim/ endpoints: (method, name) -> what they do with the JSON body.
def _reply(sim, data):
    media = {kind: data[kind] for kind in MEDIA_KINDS if kind in data}
    return sim.reply(data['from'], data.get('text'), name=data.get('name'),
        media=media or None, button=data.get('button'),
        context=data.get('context'))


def _media_control(sim, data):
    if data.get('expire'):
        sim.expire_media(data['id'])
    if data.get('fail'):
        sim.fail_media(data['id'], data['fail'])


CONTROLS = {
    ('POST', 'reply'): _reply,
    ('POST', 'preferences'): lambda sim, data: sim.preferences(
        data['from'], data['value'], name=data.get('name')),
    ('POST', 'media'): _media_control,
    ('GET', 'templates'): lambda sim, data: sim.templates(),
    ('POST', 'templates'): lambda sim, data: sim.set_templates(
        data['templates'], replace=data.get('replace', False)),
    ('GET', 'reads'): lambda sim, data: sim.reads,
    ('POST', 'fail'): lambda sim, data: sim.fail(data['to'], data['code'],
        times=data.get('times', 1), asynchronous=data.get('async', False)),
    ('POST', 'window'): lambda sim, data: sim.open_window(
        data['number'], open=data.get('open', True)),
    ('POST', 'settings'): lambda sim, data: sim.configure(**data),
    ('GET', 'settings'): lambda sim, data: sim.settings(),
    ('GET', 'messages'): lambda sim, data: sim.sent,
    ('POST', 'reset'): lambda sim, data: sim.reset(),
    ('GET', 'health'): lambda sim, data: sim.health(),
    }


class Handler(BaseHTTPRequestHandler):
    "Translates HTTP to the simulator's methods and back."
    server_version = 'WhatsAppCloudAPISimulator/1.0'

    def do_GET(self):
        self._route('GET')

    def do_POST(self):
        self._route('POST')

    def _route(self, method):
        simulator = self.server.simulator
        url = urlsplit(self.path)
        path, query = url.path, parse_qs(url.query)
        body = self.rfile.read(int(self.headers.get('Content-Length') or 0))
        authorization = self.headers.get('Authorization')

        def match(pattern):
            return pattern.fullmatch(path)
        if path.startswith('/_sim/'):
            status, answer = self._control(simulator, method, path[6:], body)
        elif method == 'POST' and match(SEND_PATH):
            status, answer = simulator.send(*match(SEND_PATH).groups(),
                authorization, body)
        elif method == 'POST' and match(UPLOAD_PATH):
            status, answer = simulator.upload(match(UPLOAD_PATH).group(2),
                authorization, self.headers.get('Content-Type'), body)
        elif method == 'GET' and match(TEMPLATES_PATH):
            version, waba_id = match(TEMPLATES_PATH).groups()
            status, answer = simulator.list_templates(waba_id, authorization,
                {**query, '_version': [version]})
        elif method == 'GET' and match(MEDIA_PATH):
            status, answer = simulator.media_info(
                match(MEDIA_PATH).group(2), authorization)
        elif method == 'GET' and match(DOWNLOAD_PATH):
            status, content_type, payload = simulator.download(
                match(DOWNLOAD_PATH).group(1), authorization)
            return self._answer(status, content_type, payload)
        else:
            status, answer = graph_error(
                2500, f"Unknown path components: {path}")
        self._answer(status, 'application/json', json.dumps(answer).encode())

    def _answer(self, status, content_type, payload):
        try:
            self.send_response(status)
            self.send_header('Content-Type', content_type)
            self.send_header('Content-Length', str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (a timeout, a killed worker): as at Meta,
            # the send stands and its statuses still come.
            pass

    @staticmethod
    def _control(simulator, method, name, body):
        control = CONTROLS.get((method, name))
        if not control:
            return 404, {'error': f'no {method} /_sim/{name}'}
        try:
            answer = control(simulator, json.loads(body or b'{}'))
        except (KeyError, TypeError, ValueError) as error:
            return 400, {'error': f'{type(error).__name__}: {error}'}
        return 200, {'ok': True} if answer is None else answer

    def log_message(self, format, *args):
        logger.debug(format, *args)


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m kraya_peers.whatsapp',
        description="A local WhatsApp Cloud API for the demo and the tests.")
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--port', type=int, default=8100)
    parser.add_argument('--webhook-url', help="where statuses and replies go")
    parser.add_argument('--app-secret', default='', help="signs the webhooks")
    parser.add_argument('--access-token', default='',
        help="the Bearer token sends must carry")
    parser.add_argument('--phone-number-id', default='100000000000001')
    parser.add_argument('--waba-id', default='100000000000000',
        help="the WhatsApp Business Account whose templates it lists")
    parser.add_argument('--throughput', type=float, default=80,
        help="sends a second (default 80)")
    parser.add_argument('--pair-interval', type=float, default=6,
        help="seconds between two sends to one number (default 6)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(message)s')
    simulator = Simulator(port=args.port, host=args.host,
        webhook_url=args.webhook_url, app_secret=args.app_secret,
        access_token=args.access_token, phone_number_id=args.phone_number_id,
        waba_id=args.waba_id, throughput=args.throughput, pair_interval=args.pair_interval)
    simulator.start()
    print(f'WhatsApp Cloud API simulator at {simulator.url}, '
        f'webhooks to {args.webhook_url or "nowhere"}. Ctrl-C stops it.',
        flush=True)
    try:
        simulator.serve_forever()
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
