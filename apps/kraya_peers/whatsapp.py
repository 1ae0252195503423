"""A local stand-in for Meta's WhatsApp Cloud API, for the demo and the
tests: the real client talks HTTP to it as it would to graph.facebook.com.

    POST /<version>/<phone number id>/messages   a send (Bearer token)
    POST /_sim/reply     {"from", "name", "text"}: a lead writes to us
    POST /_sim/fail      {"to", "code", "times"?, "async"?}: the next sends
                         to that number fail, answered or as a status
    POST /_sim/window    {"number", "open"?}: open or close a 24-hour window
    GET|POST /_sim/settings   throughput, pair_interval, statuses,
                         status_delay, response_delay, not_on_whatsapp,
                         webhook_url
    GET /_sim/messages   every accepted send, in order
    POST /_sim/reset     GET /_sim/health

It keeps Meta's limits (throughput per number, pair rate per recipient,
the 24-hour window for free-form text, numbers not on WhatsApp) and answers
with Meta's error shapes and HTTP statuses. Accepted sends get signed
status webhooks (sent, delivered, read) from a background thread.

    python -m kraya_peers.whatsapp --port 8100 --webhook-url URL \\
        --app-secret S --access-token T --phone-number-id ID

This file imports nothing of trytond or of the client: it is the other
side of the wire, and a test oracle must not share the code it checks."""
import argparse
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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)

SEND_PATH = re.compile(r'/(v\d+\.\d+)/([^/]+)/messages')
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
    131056: (400, "(Business Account, Consumer Account) pair rate limit hit",
        "Message failed to send because there were too many messages sent "
        "from this phone number to the same phone number in a short period "
        "of time."),
    132001: (404, "Template name does not exist in the translation",
        "The template does not exist in this language or is not approved."),
    }


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


def read_message(body):
    "The send request as the Cloud API checks it; ValueError says why not."
    try:
        message = json.loads(body)
    except ValueError:
        raise ValueError("The request body is not JSON.")
    if not isinstance(message, dict):
        raise ValueError("The request body is not a JSON object.")
    unknown = set(message) - {'messaging_product', 'recipient_type', 'to',
        'type', 'text', 'template', 'biz_opaque_callback_data', 'context'}
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
    type_ = message.get('type', 'text')
    if type_ == 'text':
        text = message.get('text')
        if not isinstance(text, dict) \
                or not isinstance(text.get('body'), str) \
                or not 0 < len(text['body']) <= 4096:
            raise ValueError("Param text['body'] is required.")
        if not isinstance(text.get('preview_url', False), bool):
            raise ValueError("Param text['preview_url'] must be a boolean.")
    elif type_ == 'template':
        template = message.get('template')
        if not isinstance(template, dict) or not template.get('name') \
                or not isinstance(template.get('language'), dict) \
                or not template['language'].get('code'):
            raise ValueError(
                "Param template['name'] and template['language']['code'] "
                "are required.")
        try:
            parameters = [p for c in template.get('components', [])
                for p in c.get('parameters', [])]
            texts_missing = any(p['type'] == 'text'
                and not isinstance(p.get('text'), str) for p in parameters)
        except (AttributeError, KeyError, TypeError):
            raise ValueError("Param template['components'] is malformed.")
        if texts_missing:
            raise ValueError("A text parameter needs its text.")
    else:
        raise ValueError(f"Message type {type_} is not simulated.")
    return message


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
            self._last_inbound = {}  # wa_id -> time of its last message
            self._last_send_to = {}  # wa_id -> monotonic time of our last
            self._failures = {}  # wa_id -> [code, times, asynchronous]
            self._capacity, self._capacity_at = 0, time.monotonic()
        self.configure(**self._initial)
        with self._lock:
            self._capacity = self.throughput

    def reply(self, number, text, name=None):
        """A lead writes to us: posts the inbound message webhook and opens
        the number's 24-hour window. Returns the message's wamid."""
        wa_id, wamid = digits(number), new_wamid()
        self.open_window(wa_id)
        self._webhooks.schedule(0, lambda: self._envelope({
                    'contacts': [{'profile': {'name': name or wa_id},
                            'wa_id': wa_id}],
                    'messages': [{'from': wa_id, 'id': wamid,
                            'timestamp': str(int(time.time())),
                            'type': 'text', 'text': {'body': text}}],
                    }))
        return wamid

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

    def _send(self, phone_number_id, authorization, body):
        if not hmac.compare_digest(
                authorization or '', f'Bearer {self.access_token}'):
            return graph_error(190)
        if phone_number_id != self.phone_number_id:
            return graph_error(100, "Unsupported post request. Object with "
                f"ID '{phone_number_id}' does not exist.", subcode=33)
        try:
            message = read_message(body)
        except ValueError as error:
            return graph_error(100, str(error))
        to = digits(message['to'])
        with self._lock:
            if not self._take_throughput():
                return graph_error(130429)
            failure = self._next_failure(to)
            if failure and not failure[1]:
                return graph_error(failure[0])
            if to in self.not_on_whatsapp:
                return graph_error(131026)
            if message['type'] == 'text' and not self._window_open(to):
                return graph_error(131047)
            now = time.monotonic()
            if now - self._last_send_to.get(to, -1e9) < self.pair_interval:
                return graph_error(131056)
            self._last_send_to[to] = now
            record = sent_record(message, to)
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

    def _envelope(self, value):
        "A webhook body of the messages field, as Meta posts it."
        return {'object': 'whatsapp_business_account', 'entry': [{
                    'id': self.waba_id,
                    'changes': [{'field': 'messages', 'value': {
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


def sent_record(message, to):
    "What GET /_sim/messages tells of an accepted send."
    template = message.get('template')
    if template:
        template = {'name': template['name'],
            'language': template['language']['code'],
            'parameters': [p.get('text')
                for c in template.get('components', [])
                for p in c.get('parameters', [])]}
    return {'wamid': new_wamid(), 'to': to, 'type': message['type'],
        'text': message.get('text', {}).get('body'), 'template': template,
        'biz_opaque_callback_data': message.get('biz_opaque_callback_data'),
        'at': time.time(), 'body': message}


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
CONTROLS = {
    ('POST', 'reply'): lambda sim, data: {'wamid': sim.reply(
            data['from'], data['text'], name=data.get('name'))},
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
        path = urlsplit(self.path).path
        body = self.rfile.read(int(self.headers.get('Content-Length') or 0))
        send = SEND_PATH.fullmatch(path)
        if path.startswith('/_sim/'):
            status, answer = self._control(simulator, method, path[6:], body)
        elif send and method == 'POST':
            status, answer = simulator.send(*send.groups(),
                self.headers.get('Authorization'), body)
        else:
            status, answer = graph_error(
                2500, f"Unknown path components: {path}")
        payload = json.dumps(answer).encode()
        try:
            self.send_response(status)
            self.send_header('Content-Type', 'application/json')
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
    parser.add_argument('--throughput', type=float, default=80,
        help="sends a second (default 80)")
    parser.add_argument('--pair-interval', type=float, default=6,
        help="seconds between two sends to one number (default 6)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(message)s')
    simulator = Simulator(port=args.port, host=args.host,
        webhook_url=args.webhook_url, app_secret=args.app_secret,
        access_token=args.access_token, phone_number_id=args.phone_number_id,
        throughput=args.throughput, pair_interval=args.pair_interval)
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
