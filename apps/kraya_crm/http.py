"""What every public endpoint of ours shares: a per-client rate limit, a
body size limit, and JSON answers."""
import contextvars
import json
import logging
import threading
import time
from collections import deque

import trytond.config as config
from trytond import backend
from trytond.protocols.wrappers import Response
from trytond.transaction import Transaction
from trytond.url import HOSTNAME, http_base

from . import settings

logger = logging.getLogger(__name__)
# Deeper than any form, Cloud API delivery or API call we read; a reader
# that recursed through 5,000 nested lists would crash its process.
MAX_JSON_DEPTH = 32
# The refused secrets already logged by this process: once is enough.
_refusals_logged = set()


class RateLimiter:
    """At most `limit` calls per `seconds` for each key (e.g. an IP), in
    this process. A sliding window: no burst at a window's edge."""

    def __init__(self, limit, seconds):
        self.limit = limit
        self.seconds = seconds
        self._calls = {}
        self._lock = threading.Lock()

    def allow(self, key):
        now = time.monotonic()
        with self._lock:
            calls = self._calls.setdefault(key, deque())
            while calls and calls[0] <= now - self.seconds:
                calls.popleft()
            if len(calls) >= self.limit:
                return False
            calls.append(now)
            if len(self._calls) > 10_000:
                # Forget idle clients so the table stays small.
                for idle in [k for k, c in self._calls.items()
                        if not c or c[-1] <= now - self.seconds]:
                    del self._calls[idle]
            return True


class SharedRateLimiter:
    """The same limit for every process serving the database of the request
    (PostgreSQL: several web processes, on several machines), counted in
    the database (throttle.py). Outside a request, or when the database
    cannot count, this process's own count decides."""

    def __init__(self, name, limit, seconds):
        self.name = name
        self.limit = limit
        self.seconds = seconds
        self.local = RateLimiter(limit, seconds)

    def allow(self, key):
        from . import throttle
        database_name = _request_database.get()
        if not throttle.shared(database_name):
            return self.local.allow(key)
        try:
            return throttle.count_request(database_name, self.name, key,
                self.limit, self.seconds)
        except backend.DatabaseOperationalError:
            # Down or busy: the request meets the same error where it needs
            # the database and is answered 503; a page that needs none
            # stays within this process's own count.
            logger.warning("rate limit %s counted in this process only",
                self.name, exc_info=True)
            return self.local.allow(key)


_limiters = {}
# The database named by the path of the request being served (/<db>/...).
_request_database = contextvars.ContextVar('kraya_database', default=None)


def limiter(name, setting_name, default):
    "The limiter of one kind of request: [kraya_crm] setting_name a minute."
    if name not in _limiters:
        limit = setting(setting_name, default)
        _limiters[name] = (SharedRateLimiter(name, limit, seconds=60)
            if backend.name == 'postgresql'
            else RateLimiter(limit, seconds=60))
    return _limiters[name]


def knows_request_database(wsgi_app):
    "WSGI middleware: the limiters learn the database a request is for."
    def wrapper(environ, start_response):
        database_name = environ.get('PATH_INFO', '').split('/')[1:2]
        token = _request_database.set(
            database_name[0] if database_name else None)
        try:
            return wsgi_app(environ, start_response)
        finally:
            _request_database.reset(token)
    # The marks of the middlewares below (routes._check_origins) stay seen.
    wrapper.__dict__.update(getattr(wsgi_app, '__dict__', {}))
    wrapper.kraya_knows_database = True
    return wrapper


def setting(name, default, type_=int):
    "A [kraya_crm] setting of trytond.conf; an empty one is not set."
    value = config.get('kraya_crm', name, default=None)
    return default if value in {None, ''} else type_(value)


def secret(name):
    """The [kraya_crm] secret setting, or None while it is empty or the
    public demo value on a site that is not a demo: the caller refuses the
    request. The first refusal of each setting is logged with the reason."""
    value = setting(name, '', str)
    reason = settings.refusal(
        name, value, settings.is_demo(setting('demo', '', str)))
    if reason is None:
        return value
    if name not in _refusals_logged:
        _refusals_logged.add(name)
        stopped, source = settings.SECRETS[name]
        logger.error("%s, so %s: fill it in trytond.conf with %s "
            "(docs/deploy.md)", reason, stopped, source)
    return None


def valid_secrets(name):
    """The secrets a signature may be made with: the setting's own, then
    during a rotation [kraya_crm] <name>_previous, so that deliveries signed
    with the old one still pass until the sender has the new one (README,
    "Rotating a secret"). Empty while the setting itself is refused."""
    current = secret(name)
    if current is None:
        return []
    previous = setting(f'{name}_previous', '', str)
    if previous and settings.refusal(
            name, previous, settings.is_demo(setting('demo', '', str))) is None:
        return [current, previous]
    return [current]


def public_url():
    """The site's address in links opened from outside (emails, form
    snippets): [kraya_crm] public_url, else the address of the request
    being served, else [web] listen (the worker serves no request)."""
    url = setting('public_url', '', str)
    if url:
        return url.rstrip('/')
    request = (Transaction().context or {}).get('_request') or {}
    if request.get('http_host'):
        return http_base().rstrip('/')
    host, _, port = config.get(
        'web', 'listen', default='localhost:8000').rpartition(':')
    if host in {'', '*', '0.0.0.0', '[::]'}:
        host = HOSTNAME
    return f'http://{host}:{port}'


def client_ip(request):
    "The caller's address (trytond applies [web] num_proxies to it)."
    return request.remote_addr or 'unknown'


def loads_bounded(data, max_depth=MAX_JSON_DEPTH):
    """The JSON value of data (bytes or text), nested at most max_depth
    deep. Raises ValueError for anything else, invalid UTF-8 included."""
    try:
        value = json.loads(data)
    except RecursionError:
        raise ValueError(f"nested deeper than {max_depth} levels")
    # Measured without recursion, level by level.
    level, depth = [value], 0
    while level:
        depth += 1
        if depth > max_depth:
            raise ValueError(f"nested deeper than {max_depth} levels")
        level = [child for item in level
            if isinstance(item, (list, dict))
            for child in (item.values() if isinstance(item, dict) else item)]
    return value


def storable_text(text):
    """Text from outside as the database can hold it: PostgreSQL's text
    has no NUL character (an insert holding one fails), so it goes."""
    return text.replace('\x00', '') if isinstance(text, str) else text


def json_response(data, status=200, headers=None):
    return Response(json.dumps(data), status=status, headers=headers,
        content_type='application/json')


def read_body(request, max_bytes):
    """The raw body, or None when it is larger than max_bytes (answer 413).
    Reads at most max_bytes + 1 bytes whatever Content-Length claims, once:
    a transaction retried after a conflict reads it again from here."""
    if '_kraya_body' in request.environ:
        body = request.environ['_kraya_body']
        return None if body is None or len(body) > max_bytes else body
    length = request.content_length
    if length is not None and length > max_bytes:
        return None
    body = request.stream.read(max_bytes + 1)
    request.environ['_kraya_body'] = body
    if len(body) > max_bytes:
        return None
    return body
