"""Every URL the module answers, in one place. Each endpoint checks what
it is sent (signature, size, rate), answers fast, and leaves the work to
the models it calls; bad input gets a clear answer and is kept as a dead
letter, never lost.

    GET  /<db>/crm/whatsapp/webhook          Meta's verification handshake
    POST /<db>/crm/whatsapp/webhook          signed WhatsApp deliveries
    POST /<db>/crm/capture/<key>             web forms and lead pushes
    OPTIONS /<db>/crm/capture/<key>          their CORS preflight
    GET|POST /<db>/crm/unsubscribe/<token>   the unsubscribe link of emails
    POST /<db>/crm/email/inbound             replies and bounces, signed
    GET  /<db>/crm/link/<message>?u=&s=      a link of our email: counted
    GET  /<db>/crm/inbox                     the team inbox page (desk session)
    GET|POST /<db>/crm/inbox/api/...         what the inbox page reads and does
    GET  /<db>/crm/static/<file>             the inbox page's scripts and styles
    GET  /<db>/crm/my-day                    a rep's day on the phone (desk session)
    GET|POST /<db>/crm/my-day/api/...        what the My day page reads and does
    GET  /<db>/crm/my-day/inbox/<lead>       a lead's conversation, made if missing
    GET  /<db>/crm/board                     the pipeline board (desk session)
    GET|POST /<db>/crm/board/api/...         what the board reads and does
    GET  /<db>/crm/dashboard                 the dashboard home (desk session)
    GET  /<db>/crm/dashboard/api/...         what the dashboard reads
    /<db>/crm/api/v1/...                     the integration API: api.py

Imported from the module's __init__, as Tryton's marketing_automation
registers its own."""

import hmac
import logging
import mimetypes
import re
import string
import threading
import time
import urllib.parse
from contextlib import nullcontext
from html import escape
from pathlib import Path

from trytond import backend
from trytond.exceptions import UserError
from trytond.i18n import gettext
from trytond.pool import Pool
from trytond.protocols.wrappers import (
    HTTPStatus, Response, allow_null_origin, set_max_request_size, with_pool,
    with_transaction)
from trytond.transaction import Transaction, TransactionError
from trytond.wsgi import app
from werkzeug.utils import redirect

from . import mail, whatsapp
from .board import PAGE as BOARD_PAGE, Filters
from .capture import capture_company
from .exceptions import InboxRefusal, NoCompanyError
from .http import (
    client_ip, json_response, knows_request_database, limiter, loads_bounded,
    read_body, secret, setting, valid_secrets)
from .exceptions import MailSettingError
from .mail import UNSUBSCRIBE_MAX_BYTES, NotAnEmail
from .message import utcnow
from .web_form import (
    CAPTURE_PATH, HONEYPOT, ORIGIN_ENVIRON, SUBMISSION_MESSAGES,
    SubmissionError, origin_allowed, origin_lines, parse_body)
from .whatsapp import WebhookError, signature_valid

logger = logging.getLogger(__name__)


def signed_body(request, ip, what, secrets, header_name, rate_limiter,
        max_bytes):
    """(body, None) for a body signed `sha256=<HMAC-SHA256>` with one of
    our secrets (two during a rotation), else (None, the answer): 403 while
    the secret is not set up, 429 past the rate limit, 413 over the size,
    401 unsigned, 403 badly signed."""
    if not secrets:
        return None, json_response(
            {'error': f"{what} not set up: no secret"}, status=403)
    if not rate_limiter.allow(ip):
        return None, json_response({'error': "too many requests"},
            status=429, headers={'Retry-After': '60'})
    body = read_body(request, max_bytes)
    if body is None:
        return None, json_response({'error': "body too large"}, status=413)
    header = request.headers.get(header_name)
    if not header:
        logger.warning("%s without signature from %s", what, ip)
        return None, json_response({'error': "missing signature"},
            status=401)
    if not any(signature_valid(body, header, s) for s in secrets):
        logger.warning("%s with a bad signature from %s", what, ip)
        return None, json_response({'error': "invalid signature"},
            status=403)
    return body, None


# --- WhatsApp ---

# SQLite takes one writer at a time and one that finds it busy sleeps in
# growing steps (up to 100 ms): this process's requests wait here instead,
# each woken as soon as the one before has committed.
_sqlite_writer = threading.Lock()


def verify(request):
    """Meta's subscription handshake: echo hub.challenge for our token,
    only once the app secret is ours too (else no delivery would pass)."""
    tokens = valid_secrets('whatsapp_verify_token') \
        if secret('whatsapp_app_secret') else []
    args = request.args
    given = args.get('hub.verify_token', '').encode()
    if (args.get('hub.mode') == 'subscribe'
            and any(hmac.compare_digest(given, token.encode())
                for token in tokens)):
        return Response(args.get('hub.challenge', ''), status=200,
            content_type='text/plain')
    logger.warning("WhatsApp verification refused from %s", client_ip(request))
    return Response('Forbidden', status=HTTPStatus.FORBIDDEN)


def keep_dead_letter(database_name, reason, body, remote_addr, once=False):
    with Transaction().start(database_name, 0) as transaction:
        Pool().get('crm.dead_letter').keep(
            whatsapp.ENDPOINT, reason, body, remote_addr, once=once)
        transaction.commit()


@app.route('/<database_name>/crm/whatsapp/webhook', methods=['GET', 'POST'])
@with_pool
def webhook(request, pool):
    if request.method == 'GET':
        return verify(request)
    ip = client_ip(request)
    body, refused = signed_body(request, ip, "WhatsApp webhook",
        valid_secrets('whatsapp_app_secret'), 'X-Hub-Signature-256',
        limiter('whatsapp', 'whatsapp_rate_limit', 6000),
        setting('whatsapp_max_bytes', 512 * 1024))
    if refused:
        return refused
    database_name = pool.database_name
    WhatsApp = pool.get('crm.whatsapp.webhook')
    try:
        WhatsApp.parse(body)
    except WebhookError as exception:
        keep_dead_letter(database_name, str(exception), body, ip)
        return json_response({'error': str(exception)}, status=400)
    try:
        _accept(pool, body)
    except backend.DatabaseOperationalError:
        # Busy or down: Meta retries non-2xx deliveries.
        logger.warning("WhatsApp webhook deferred", exc_info=True)
        return json_response({'error': "busy, retry"}, status=503)
    except NoCompanyError as exception:
        logger.error("WhatsApp delivery from %s refused (503, Meta delivers "
            "it again): %s", ip, exception.message)
        keep_dead_letter(database_name, exception.message, body, ip,
            once=True)
        return json_response({'error': exception.message}, status=503,
            headers={'Retry-After': '600'})
    return json_response({'status': 'accepted'})


def _accept(pool, body, tries=3):
    """Store the body in the inbox, retried when the database is busy; the
    queued task runs in this process when there is no worker."""
    from trytond.worker import run_task
    for attempt in range(1, tries + 1):
        try:
            with Transaction().start(pool.database_name, 0) as transaction, \
                    (_sqlite_writer if backend.name == 'sqlite'
                        else nullcontext()):
                # Raises NoCompanyError: no lead could be made of it.
                capture_company()
                pool.get('crm.whatsapp.inbox').accept(body)
                transaction.commit()
            break
        except backend.DatabaseOperationalError:
            if attempt == tries:
                raise
            time.sleep(0.02 * attempt)
    while transaction.tasks:
        run_task(pool, transaction.tasks.pop())


# --- Web forms ---

# The inbox's API, whose requests from another site are refused with a
# JSON answer (trytond would fail them with a 500 page).
INBOX_API_PATH = re.compile(r'/crm/(?:inbox|my-day|board|dashboard)/api/')


def _check_origins(wsgi_app):
    """Before trytond sees the Origin header: a web form's is ours to judge
    (its allowed origins), and a foreign one on our pages' APIs (inbox,
    My day, board, dashboard) is refused."""
    def wrapper(environ, start_response):
        path = environ.get('PATH_INFO', '')
        origin = environ.get('HTTP_ORIGIN')
        if origin is not None and CAPTURE_PATH.search(path):
            environ[ORIGIN_ENVIRON] = environ.pop('HTTP_ORIGIN')
        elif (origin is not None and INBOX_API_PATH.search(path)
                and urllib.parse.urlparse(origin).netloc
                != environ.get('HTTP_HOST')):
            return json_response({'error': 'cross_site',
                    'message': "Refused: this request did not come from "
                    "the CRM's own page."}, status=403)(environ,
                start_response)
        return wsgi_app(environ, start_response)
    wrapper.kraya_checks_origins = True
    return wrapper


if not getattr(app.wsgi_app, 'kraya_checks_origins', False):
    app.wsgi_app = _check_origins(app.wsgi_app)
if not getattr(app.wsgi_app, 'kraya_knows_database', False):
    app.wsgi_app = knows_request_database(app.wsgi_app)


def cors_headers(source, origin):
    if not origin:
        return {}
    if '*' in origin_lines(source.allowed_origins):
        return {'Access-Control-Allow-Origin': '*'}
    return {'Access-Control-Allow-Origin': origin, 'Vary': 'Origin'}


def error(status, code, message, field=None, headers=None):
    answer = {'error': code, 'message': message}
    if field:
        answer['field'] = field
    return json_response(answer, status=status, headers=headers)


def _source_for(request, key, origin):
    "(source, None) or (None, the error response)."
    Source = Pool().get('crm.source')
    source = Source.by_capture_key(key)
    if source is None:
        return None, error(404, 'unknown_form',
            gettext('kraya_crm.msg_web_form_unknown_key'))
    if origin and not origin_allowed(
            source.allowed_origins, origin, request.host):
        logger.info("Web form %s refused origin %s", source.id, origin)
        return None, error(403, 'origin_not_allowed',
            gettext('kraya_crm.msg_web_form_origin_refused', origin=origin))
    return source, None


@with_transaction(user=0, readonly=True)
def _preflight(request, pool, key, origin):
    source, refused = _source_for(request, key, origin)
    if refused:
        return refused
    return Response(status=204, headers={
            **cors_headers(source, origin),
            'Access-Control-Allow-Methods': 'POST, OPTIONS',
            'Access-Control-Allow-Headers': 'Content-Type',
            'Access-Control-Max-Age': '600',
            })


@with_transaction(user=0)
def _submit(request, pool, key, origin, body):
    source, refused = _source_for(request, key, origin)
    if refused:
        return refused
    headers = cors_headers(source, origin)
    transaction = Transaction()
    try:
        payload = parse_body(body, request.headers.get('Content-Type'))
        if str(payload.get(HONEYPOT) or '').strip():
            logger.info("Web form %s: honeypot filled from %s",
                source.id, client_ip(request))
            return json_response({'ok': True}, headers=headers)
        with transaction.set_context(company=capture_company()):
            source.capture_submission(payload)
    except SubmissionError as exception:
        transaction.rollback()
        message = gettext(SUBMISSION_MESSAGES[exception.code],
            **exception.params)
        keep_refused_push(source, origin, body, request,
            f"{exception.field}: {message}")
        return error(400, exception.code, message, field=exception.field,
            headers=headers)
    except NoCompanyError as exception:
        # Our fault, not the sender's: kept (a browser's too) for replay.
        transaction.rollback()
        logger.error("Web form %s refused (503): %s", source.id,
            exception.message)
        Pool().get('crm.dead_letter').keep(f'web_form:{source.code}',
            exception.message, body, client_ip(request), once=True)
        return error(503, 'not_set_up',
            "We could not save the form just now. Try again later.",
            headers={**headers, 'Retry-After': '600'})
    except UserError as exception:
        # Refused by the lead's own checks: the same answer, nothing saved.
        transaction.rollback()
        keep_refused_push(source, origin, body, request, exception.message)
        return error(400, 'invalid', exception.message, headers=headers)
    return json_response({'ok': True}, headers=headers)




def keep_refused_push(source, origin, body, request, reason):
    """A push from a server (no Origin) that we refuse is kept as a dead
    letter: no one is at a form to correct it. Browsers show the error."""
    if origin:
        return
    DeadLetter = Pool().get('crm.dead_letter')
    DeadLetter.keep(f'web_form:{source.code}', reason, body,
        client_ip(request))


# Answers given without the database (a flood or a database that is down
# must not reach it), so not from message.xml: English, as the snippet's.
FORM_TEXTS = {
    'preflight': "Too many requests. Try again in a minute.",
    'too_many': "Too many submissions. Try again in a minute.",
    'too_large': "The form data is too large.",
    'busy': "Busy. Try again in a minute.",
    'failed': "Could not save the form. Try again later.",
    }


@app.route('/<database_name>/crm/capture/<key>', methods=['POST', 'OPTIONS'])
@with_pool
def capture(request, pool, key):
    origin = request.environ.get(ORIGIN_ENVIRON)
    ip = client_ip(request)
    # Answers before the source is known may be read by any page.
    anyone = {'Access-Control-Allow-Origin': '*'} if origin else {}
    try:
        if request.method == 'OPTIONS':
            if not limiter('preflight', 'web_form_preflight_rate_limit',
                    60).allow(ip):
                return error(429, 'too_many_requests', FORM_TEXTS['preflight'],
                    headers={**anyone, 'Retry-After': '60'})
            return _preflight(request, pool, key, origin)
        if (not limiter('ip', 'web_form_rate_limit', 10).allow(ip)
                or not limiter('key', 'web_form_source_rate_limit',
                    300).allow(key)):
            return error(429, 'too_many_requests', FORM_TEXTS['too_many'],
                headers={**anyone, 'Retry-After': '60'})
        body = read_body(request, setting('web_form_max_bytes', 64 * 1024))
        if body is None:
            return error(413, 'too_large', FORM_TEXTS['too_large'],
                headers=anyone)
        try:
            return _submit(request, pool, key, origin, body)
        except backend.DatabaseIntegrityError:
            # The same person posted twice at once: the retry matches.
            return _submit(request, pool, key, origin, body)
    except backend.DatabaseOperationalError:
        logger.warning("Web form capture deferred", exc_info=True)
        return error(503, 'busy', FORM_TEXTS['busy'],
            headers={**anyone, 'Retry-After': '5'})
    except Exception:
        logger.exception("Web form capture failed")
        return error(500, 'server_error', FORM_TEXTS['failed'],
            headers=anyone)


# --- Email ---

PAGE = string.Template('''<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>$title</title>
<style>
body{margin:0;font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
background:#f3f4f6;color:#111827}
main{box-sizing:border-box;max-width:26rem;margin:12vh auto 0;
padding:2rem 1.5rem;background:#fff;border-radius:12px;text-align:center;
box-shadow:0 1px 4px rgba(0,0,0,.08)}
h1{font-size:1.35rem;line-height:1.3;margin:0 0 .75rem}
p{line-height:1.5;margin:0;color:#4b5563}
form{margin-top:1.5rem}
button{font:inherit;font-weight:600;width:100%;padding:.85rem;border:0;
border-radius:8px;background:#b91c1c;color:#fff;cursor:pointer}
</style></head>
<body><main><h1>$title</h1><p>$text</p>$form</main></body></html>
''')
FORM = string.Template(
    '<form method="post">'
    '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
    '<button type="submit">$button</button></form>')
PAGE_HEADERS = {
    'Content-Security-Policy': "default-src 'none'; "
    "style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
    'Cache-Control': 'no-store',
    # Whoever the page links to must not learn the token.
    'Referrer-Policy': 'same-origin',
    }
# Pages shown without the database (see FORM_TEXTS).
TOO_MANY = ("Too many requests", "Try again in a minute.")
BUSY = ("Please try again", "We could not answer just now. "
    "Try again in a minute.")


def page(status, title, text, button=None, headers=None, link=None):
    form = FORM.substitute(button=escape(button)) if button else ''
    if link:
        url, label = link
        form += f'<form><a href="{escape(url)}">{escape(label)}</a></form>'
    return Response(
        PAGE.substitute(title=escape(title), text=escape(text), form=form),
        status=status, headers={**PAGE_HEADERS, **(headers or {})},
        content_type='text/html; charset=utf-8')


def company_name():
    Company = Pool().get('company.company')
    try:
        return Company(capture_company()).rec_name
    except NoCompanyError:
        # Opting out needs no company: the page still works.
        return "us"


@with_transaction(user=0)
def _unsubscribe(request, pool, token):
    Lead = pool.get('crm.lead')
    try:
        lead = Lead.by_unsubscribe_token(token)
    except MailSettingError:
        logger.error("Unsubscribe link refused: no [kraya_crm] link_secret")
        lead = None
    if lead is None:
        return page(404, gettext('kraya_crm.msg_unsubscribe_unknown'),
            gettext('kraya_crm.msg_unsubscribe_unknown_text'))
    company = company_name()
    if request.method == 'POST':
        Lead.unsubscribe_from_email([lead])
    elif lead.may_contact('email'):
        return page(200,
            gettext('kraya_crm.msg_unsubscribe_question', company=company),
            gettext('kraya_crm.msg_unsubscribe_question_text'),
            button=gettext('kraya_crm.msg_unsubscribe_button'))
    return page(200, gettext('kraya_crm.msg_unsubscribe_done'),
        gettext('kraya_crm.msg_unsubscribe_done_text', company=company))


@app.route('/<database_name>/crm/unsubscribe/<token>',
    methods=['GET', 'POST'])
# Some mail apps' browsers post with "Origin: null"; the token is the proof.
@allow_null_origin
@with_pool
def unsubscribe(request, pool, token):
    if not limiter('unsubscribe', 'unsubscribe_rate_limit', 60).allow(
            client_ip(request)):
        return page(429, *TOO_MANY, headers={'Retry-After': '60'})
    if (request.content_length or 0) > UNSUBSCRIBE_MAX_BYTES:
        return Response("Request too large", status=413,
            content_type='text/plain')
    try:
        return _unsubscribe(request, pool, token)
    except Exception:
        logger.exception("Unsubscribe page failed")
        return page(503, *BUSY, headers={'Retry-After': '60'})


# A GET that writes: trytond makes GETs read-only (PostgreSQL enforces it).
@with_transaction(user=0, readonly=False)
def _count_click(request, pool, message_id, url):
    "The lead engaged with our email: a score event, then the way on."
    Message = pool.get('crm.message')
    Lead = pool.get('crm.lead')
    found = Message.search([('id', '=', message_id)])
    if found and found[0].channel == 'email':
        Lead.record_score_events([(found[0].lead, 'email_engaged',
                    utcnow(), url[:120])])


@app.route('/<database_name>/crm/link/<int:message_id>', methods=['GET'])
@with_pool
def email_link(request, pool, message_id):
    """A link of one of our emails: counted, then followed. Only to the
    address we wrote (signed), so that it is no open redirect."""
    if not limiter('email_link', 'email_link_rate_limit', 120).allow(
            client_ip(request)):
        return page(429, *TOO_MANY, headers={'Retry-After': '60'})
    url = request.args.get('u', '')
    try:
        valid = mail.click_valid(pool.database_name, message_id, url,
            request.args.get('s'))
    except MailSettingError:
        valid = False
    if not valid:
        return page(404, gettext('kraya_crm.msg_unsubscribe_unknown'),
            "This link is not one of ours.")
    try:
        _count_click(request, pool, message_id, url)
    except Exception:
        # The reader still gets where they wanted to go.
        logger.exception("Email link click of %s not counted", message_id)
    return Response(status=302, headers={'Location': url,
            'Cache-Control': 'no-store', 'Referrer-Policy': 'no-referrer'})


@with_transaction(user=0)
def _receive(request, pool, body):
    Message = pool.get('crm.message')
    try:
        with Transaction().set_context(company=capture_company()):
            return json_response({'status': Message.receive_email(body)})
    except NotAnEmail as exception:
        pool.get('crm.dead_letter').keep(
            mail.ENDPOINT, str(exception), body, client_ip(request))
        return json_response({'error': str(exception)}, status=400)


def _keep_failed(pool, reason, body, ip, once=False):
    with Transaction().start(pool.database_name, 0) as transaction:
        pool.get('crm.dead_letter').keep(mail.ENDPOINT, reason, body, ip,
            once=once)
        transaction.commit()


@app.route('/<database_name>/crm/email/inbound', methods=['POST'])
@with_pool
def inbound(request, pool):
    ip = client_ip(request)
    body, refused = signed_body(request, ip, "Inbound email",
        valid_secrets('email_inbound_secret'), 'X-Kraya-Signature',
        limiter('email_inbound', 'email_inbound_rate_limit', 600),
        setting('email_inbound_max_bytes', 10 * 1024 * 1024))
    if refused:
        return refused
    try:
        try:
            return _receive(request, pool, body)
        except backend.DatabaseIntegrityError:
            # The same email delivered twice at once: the retry finds it.
            return _receive(request, pool, body)
    except backend.DatabaseOperationalError:
        logger.warning("Inbound email deferred", exc_info=True)
        return json_response({'error': "busy, retry"}, status=503,
            headers={'Retry-After': '60'})
    except NoCompanyError as exception:
        # Kept, and 503 so that the sender's server delivers it again.
        logger.error("Inbound email from %s refused (503): %s", ip,
            exception.message)
        _keep_failed(pool, exception.message, body, ip, once=True)
        return json_response({'error': exception.message}, status=503,
            headers={'Retry-After': '600'})
    except Exception as exception:
        # Kept for a manager, and answered 2xx so the sender is not bounced.
        logger.exception("Inbound email failed")
        try:
            _keep_failed(pool, f"processing failed: {exception}", body, ip)
        except Exception:
            logger.exception("Inbound email could not be kept")
            return json_response({'error': "busy, retry"}, status=503)
        return json_response({'status': 'kept'}, status=202)


# --- The team inbox ---

STATIC = Path(__file__).parent / 'static'
STATIC_TYPES = {
    '.html': 'text/html; charset=utf-8', '.js': 'text/javascript',
    '.css': 'text/css', '.svg': 'image/svg+xml', '.png': 'image/png',
    '.woff2': 'font/woff2', '.json': 'application/json',
    }
INBOX_HEADERS = {
    'Content-Security-Policy': "default-src 'self'; img-src 'self' data: "
    "blob:; style-src 'self'; script-src 'self'; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    'Cache-Control': 'no-store',
    'X-Content-Type-Options': 'nosniff',
    'Referrer-Policy': 'same-origin',
    }
CSRF_HEADER = 'X-CSRF-Token'
# A safe fetch of our own page, or the user typing the address.
SAME_SITE_FETCHES = {'same-origin', 'none'}


def csrf_token(request):
    """The token the inbox page sends with every change: derived from the
    desk session's own secret token, which another site cannot read."""
    session = request.session
    if not session or not session.token:
        return None
    return hmac.new(session.token.encode(), b'kraya-inbox-csrf',
        'sha256').hexdigest()


def cross_site(request):
    "Whether a request that changes data may have come from another site."
    fetch_site = request.headers.get('Sec-Fetch-Site')
    if fetch_site and fetch_site not in SAME_SITE_FETCHES:
        return True
    origin = request.headers.get('Origin')
    if origin and urllib.parse.urlparse(origin).netloc != request.host:
        return True
    expected = csrf_token(request)
    given = request.headers.get(CSRF_HEADER, '')
    return not expected or not hmac.compare_digest(expected, given)


@app.route('/<database_name>/crm/static/<path:name>', methods=['GET'])
def static_file(request, database_name, name):
    "The inbox's scripts and styles: files of static/, nothing above it."
    if not limiter('static', 'static_rate_limit', 1200).allow(
            client_ip(request)):
        return Response('Too Many Requests', status=429,
            content_type='text/plain', headers={'Retry-After': '60'})
    path = (STATIC / name).resolve()
    if (not path.is_relative_to(STATIC.resolve()) or not path.is_file()
            or path.suffix not in STATIC_TYPES):
        return Response('Not Found', status=404, content_type='text/plain')
    return Response(path.read_bytes(), content_type=STATIC_TYPES[path.suffix],
        headers={'Cache-Control': 'max-age=300',
            'X-Content-Type-Options': 'nosniff'})


def signed_in_user(request):
    "The desk user of the request's session, or None."
    try:
        return request.user_id
    except Exception:
        logger.info("Inbox session check failed", exc_info=True)
        return None


def desk_page(request, pool, name, folder):
    """A page of ours (static/<folder>/index.html) on the desk's session:
    without one, it says to sign in to the desk first."""
    database = pool.database_name
    desk = f'/#{database}'
    user_id = signed_in_user(request)
    if not user_id:
        return page(401, "Sign in first",
            f"{name} uses your desk session: sign in to the desk, then "
            "open it from the CRM menu.", link=(desk, "Open the desk"),
            headers={'Cache-Control': 'no-store'})
    if not limiter('inbox', 'inbox_rate_limit', 600).allow(user_id):
        return page(429, *TOO_MANY, headers={'Retry-After': '60'})
    return _inbox_page(request, pool, desk, folder=folder)


def refused_api_request(request, action, page_name):
    """The answer refusing a request to the API of one of our pages, or
    None: no desk session (401), a change from another site (403), past
    the user's limit (429)."""
    user_id = signed_in_user(request)
    if not user_id:
        return json_response({'error': 'login_required',
                'message': "Sign in to the desk first."}, status=401)
    writing = request.method == 'POST'
    if writing and cross_site(request):
        logger.warning("%s: %s refused as cross-site from %s", page_name,
            action, client_ip(request))
        return json_response({'error': 'cross_site',
                'message': "Refused: this request did not come from "
                f"{page_name}."}, status=403)
    if not limiter('inbox_post' if writing else 'inbox',
            'inbox_post_rate_limit' if writing else 'inbox_rate_limit',
            120 if writing else 600).allow(user_id):
        return json_response({'error': 'too_many_requests',
                'message': "Too many requests. Try again in a minute."},
            status=429, headers={'Retry-After': '60'})


def dispatch_api(request, pool, routes, action, model):
    "The handler of the routes matching the request, in its transaction."
    for method, pattern, handler, status in routes:
        match = pattern.fullmatch(action)
        if match and method == request.method:
            return _inbox_call(request, pool, handler, *match.groups(),
                status=status, model=model)
    return json_response({'error': 'not_found'}, status=404)


@app.route('/<database_name>/crm/inbox', methods=['GET'])
@with_pool
def inbox_page(request, pool):
    return desk_page(request, pool, "The inbox", 'inbox')


@with_transaction(user='request', readonly=True)
def _inbox_page(request, pool, desk, folder='inbox'):
    "The page of static/<folder>/index.html for the signed-in user."
    User = pool.get('res.user')
    user = User(Transaction().user)
    html = string.Template((STATIC / folder / 'index.html').read_text())
    return Response(html.safe_substitute({name: escape(str(value))
                for name, value in {
                    'database': pool.database_name,
                    'csrf_token': csrf_token(request),
                    'user_id': user.id,
                    'user_name': user.rec_name,
                    'user_login': user.login,
                    'static': f'/{pool.database_name}/crm/static',
                    'desk_url': desk,
                    }.items()}),
        content_type='text/html; charset=utf-8', headers=INBOX_HEADERS)


def _conversation_id(value):
    try:
        return int(value)
    except ValueError:
        raise InboxRefusal('not_found',
            gettext('kraya_crm.msg_inbox_not_found'))


def _json_body(request):
    body = read_body(request, setting('inbox_max_bytes', 64 * 1024))
    if body is None:
        raise InboxRefusal('too_large', "The request is too large.")
    try:
        values = loads_bounded(body or b'{}')
    except ValueError:
        raise InboxRefusal('bad_json', "The request is not JSON.")
    if not isinstance(values, dict):
        raise InboxRefusal('bad_json', "The request is not a JSON object.")
    return values


def _send(request, Inbox, conversation_id):
    conversation = Inbox.conversation(conversation_id, mode='write')
    if request.mimetype == 'multipart/form-data':
        upload = request.files.get('file')
        if upload is None or not upload.filename:
            raise InboxRefusal('bad_file', "Choose a file to send.")
        # From the start: a retried transaction reads the file again.
        upload.stream.seek(0)
        data = upload.read()
        return Inbox.send(conversation, dict(request.form.items(),
                channel='whatsapp'),
            upload=(upload.filename, upload.mimetype, data))
    return Inbox.send(conversation, _json_body(request))


def _changing(action):
    def changing(request, Inbox, conversation_id):
        values = _json_body(request)
        conversation = Inbox.conversation(conversation_id, mode='write')
        return action(Inbox, conversation, values)
    return changing


def _set_state(request, Inbox, conversation_id, action):
    values = _json_body(request)
    conversation = Inbox.conversation(conversation_id, mode='write')
    return {'conversation': Inbox.set_state(
            conversation, action, values.get('until'))}


# (method, path pattern, handler(request, Inbox, *groups), status)
INBOX_API = [
    ('GET', r'conversations', lambda request, Inbox: Inbox.conversations(
            request.args.get('filter') or 'open', request.args.get('q'),
            max(0, request.args.get('offset', 0, type=int)),
            max(1, request.args.get('limit', 50, type=int))), 200),
    ('GET', r'conversations/(\d+)', lambda request, Inbox, c: Inbox.thread(
            Inbox.conversation(_conversation_id(c)),
            request.args.get('before'),
            max(1, request.args.get('limit', 50, type=int))), 200),
    ('GET', r'conversations/(\d+)/templates', lambda request, Inbox, c: {
            'templates': Inbox.templates(
                Inbox.conversation(_conversation_id(c)))}, 200),
    ('POST', r'conversations/(\d+)/read', lambda request, Inbox, c: {
            'conversation': Inbox.read_conversation(
                Inbox.conversation(_conversation_id(c)))}, 200),
    ('POST', r'conversations/(\d+)/messages', lambda request, Inbox, c: {
            'item': _send(request, Inbox, _conversation_id(c))}, 201),
    ('POST', r'conversations/(\d+)/notes', _changing(
            lambda Inbox, c, values: {
                'item': Inbox.add_note(c, values.get('text'))}), 201),
    ('POST', r'conversations/(\d+)/calls', _changing(
            lambda Inbox, c, values: {'item': Inbox.log_call(c, values)}),
        201),
    ('POST', r'conversations/(\d+)/assign', _changing(
            lambda Inbox, c, values: {
                'conversation': Inbox.assign(c, values.get('user'))}), 200),
    ('POST', r'conversations/(\d+)/(done|reopen|snooze)', _set_state, 200),
    ('GET', r'teammates', lambda request, Inbox: {
            'users': Inbox.teammates()}, 200),
    ('GET', r'mentions', lambda request, Inbox: {
            'items': Inbox.mentions()}, 200),
    ]
INBOX_API = [(method, re.compile(pattern), handler, status)
    for method, pattern, handler, status in INBOX_API]
INBOX_STATUSES = {'not_found': 404, 'not_allowed': 403, 'too_large': 413,
    'changed': 409, 'fields_required': 422}


@app.route('/<database_name>/crm/inbox/api/<path:action>',
    methods=['GET', 'POST'])
# Files for WhatsApp (documents up to 100 MB) come through here.
@set_max_request_size(101 * 1024 * 1024)
@with_pool
def inbox_api(request, pool, action):
    refused = refused_api_request(request, action, "the inbox page")
    if refused:
        return refused
    if action == 'events' and request.method == 'GET':
        return _inbox_events(request, pool)
    match = re.fullmatch(r'media/(\d+)', action)
    if match and request.method == 'GET':
        return _inbox_call(request, pool, _media_response, int(match[1]))
    return dispatch_api(request, pool, INBOX_API, action, 'crm.inbox')


@with_transaction(user='request')
def _inbox_call(request, pool, handler, *args, status=200,
        model='crm.inbox'):
    "The handler in the user's transaction; a refusal is a JSON error."
    User = pool.get('res.user')
    Inbox = pool.get(model)
    transaction = Transaction()
    try:
        with transaction.set_context(
                User.get_preferences(context_only=True)):
            result = handler(request, Inbox, *args)
    except InboxRefusal as refusal:
        transaction.rollback()
        return json_response({'error': refusal.code,
                'message': refusal.message, **refusal.details},
            status=INBOX_STATUSES.get(refusal.code, 400))
    except UserError as exception:
        # The models' own checks (a file WhatsApp refuses...).
        transaction.rollback()
        return json_response({'error': getattr(exception, 'code', 'refused'),
                'message': exception.message}, status=400)
    except (backend.DatabaseOperationalError, TransactionError):
        # A concurrent write (the worker recording a status on the same
        # conversation): with_transaction runs the request again.
        raise
    except Exception:
        # Answered here: trytond would take the page's JSON body for a
        # broken RPC call and answer a puzzling 400.
        logger.exception("Inbox %s failed", request.path)
        transaction.rollback()
        return json_response({'error': 'server_error',
                'message': "Something went wrong on the server; nothing "
                "was changed. Try again."}, status=500)
    if isinstance(result, Response):
        return result
    return json_response(result, status=status)


def _media_response(request, Inbox, message_id):
    name, data = Inbox.media(message_id)
    mime_type = mimetypes.guess_type(name)[0] or 'application/octet-stream'
    # Only images show in the thread; anything else is a download.
    inline = mime_type in {'image/jpeg', 'image/png', 'image/webp'}
    return Response(data or b'', content_type=mime_type, headers={
            'Content-Disposition': '%s; filename*=UTF-8\'\'%s' % (
                'inline' if inline else 'attachment',
                urllib.parse.quote(name)),
            'X-Content-Type-Options': 'nosniff',
            'Content-Security-Policy': "default-src 'none'; sandbox",
            'Cache-Control': 'private, max-age=3600',
            })


@with_transaction(user='request', readonly=True)
def _changed_since(request, pool, cursor):
    User = pool.get('res.user')
    with Transaction().set_context(User.get_preferences(context_only=True)):
        return pool.get('crm.inbox').changed_since(cursor)


def long_poll(request, pool, changed_since, answer):
    """Long poll: answer(next cursor, changes) as soon as
    changed_since(request, pool, cursor) finds what the user may see
    changed after the cursor, else after inbox_poll_seconds with nothing."""
    cursor = request.args.get('cursor')
    if not cursor:
        return json_response({'error': 'bad_cursor',
                'message': "Ask with the cursor of the last answer."},
            status=400)
    deadline = time.monotonic() + setting('inbox_poll_seconds', 25)
    while True:
        try:
            next_cursor, changed = changed_since(request, pool, cursor)
        except InboxRefusal as refusal:
            return json_response({'error': refusal.code,
                    'message': refusal.message}, status=400)
        if changed or time.monotonic() >= deadline:
            return json_response(answer(next_cursor, changed))
        time.sleep(0.5)


def _inbox_events(request, pool):
    "The inbox's live updates: the conversations changed since the cursor."
    return long_poll(request, pool, _changed_since,
        lambda cursor, changed: {'cursor': cursor,
            'conversations': changed})


# --- My day ---

def _record_id(value):
    try:
        return int(value)
    except ValueError:
        raise InboxRefusal('not_found',
            gettext('kraya_crm.msg_my_day_not_found'))


# (method, path pattern, handler(request, MyDay, *groups), status)
MY_DAY_API = [
    ('GET', r'day', lambda request, MyDay: MyDay.day(), 200),
    ('POST', r'tasks/(\d+)/outcome', lambda request, MyDay, t:
        MyDay.log_task_outcome(_record_id(t), _json_body(request)), 200),
    ('POST', r'tasks/(\d+)/next', lambda request, MyDay, t:
        MyDay.plan_next(_record_id(t), _json_body(request)), 201),
    ('POST', r'leads/(\d+)/calls', lambda request, MyDay, l:
        MyDay.log_lead_call(_record_id(l), _json_body(request)), 201),
    ]
MY_DAY_API = [(method, re.compile(pattern), handler, status)
    for method, pattern, handler, status in MY_DAY_API]


@app.route('/<database_name>/crm/my-day', methods=['GET'])
@with_pool
def my_day_page(request, pool):
    return desk_page(request, pool, "My day", 'my_day')


@app.route('/<database_name>/crm/my-day/api/<path:action>',
    methods=['GET', 'POST'])
@with_pool
def my_day_api(request, pool, action):
    "The inbox API's checks (session, CSRF, limits) before crm.my_day."
    refused = refused_api_request(request, action, "the My day page")
    if refused:
        return refused
    return dispatch_api(request, pool, MY_DAY_API, action, 'crm.my_day')


@app.route('/<database_name>/crm/my-day/inbox/<int:lead_id>',
    methods=['GET'])
@with_pool
def my_day_inbox(request, pool, lead_id):
    "To the lead's inbox conversation, made for a lead nobody wrote to yet."
    if not signed_in_user(request):
        return page(401, "Sign in first",
            "Sign in to the desk, then open My day from the CRM menu.",
            link=(f'/#{pool.database_name}', "Open the desk"),
            headers={'Cache-Control': 'no-store'})
    return _my_day_inbox(request, pool, lead_id)


# A GET that may make the conversation: not read-only (as the desk's
# "Open in Inbox" button, it makes it once).
@with_transaction(user='request', readonly=False)
def _my_day_inbox(request, pool, lead_id):
    try:
        conversation_id = pool.get('crm.my_day').conversation_of(lead_id)
    except InboxRefusal as refusal:
        return page(404, "Not found", refusal.message,
            headers={'Cache-Control': 'no-store'})
    return redirect(
        f'/{pool.database_name}/crm/inbox?c={conversation_id}', code=303)


# --- The pipeline board ---

def _board_view(request):
    "The board's mode, filters and first forecast month, from the query."
    args = request.args
    return (args.get('mode') or 'deals', Filters.from_args(args),
        args.get('start') or None)


def _board_more(request, Board, column):
    mode, filters, start = _board_view(request)
    return Board.more(mode, column, filters, start,
        request.args.get('offset', 0, type=int),
        request.args.get('limit', BOARD_PAGE, type=int))


# (method, path pattern, handler(request, Board, *groups), status); the
# patterns' digits are ids.
BOARD_API = [
    ('GET', r'board', lambda request, Board: Board.board(
            *_board_view(request)), 200),
    ('GET', r'columns/([\w-]{1,40})/cards', _board_more, 200),
    ('POST', r'deals/(\d+)/move', lambda request, Board, d:
        Board.move_deal(int(d), _json_body(request)), 200),
    ('POST', r'deals/(\d+)/reschedule', lambda request, Board, d:
        Board.reschedule_deal(int(d), _json_body(request)),
        200),
    ('POST', r'leads/(\d+)/move', lambda request, Board, l:
        Board.move_lead(int(l), _json_body(request)), 200),
    ]
BOARD_API = [(method, re.compile(pattern), handler, status)
    for method, pattern, handler, status in BOARD_API]


@app.route('/<database_name>/crm/board', methods=['GET'])
@with_pool
def board_page(request, pool):
    return desk_page(request, pool, "The pipeline board", 'board')


@app.route('/<database_name>/crm/board/api/<path:action>',
    methods=['GET', 'POST'])
@with_pool
def board_api(request, pool, action):
    "The inbox API's checks (session, CSRF, limits) before crm.board."
    refused = refused_api_request(request, action, "the pipeline board")
    if refused:
        return refused
    if action == 'events' and request.method == 'GET':
        return long_poll(request, pool, _board_changed_since,
            lambda cursor, changes: {'cursor': cursor, 'changes': changes})
    return dispatch_api(request, pool, BOARD_API, action, 'crm.board')


@with_transaction(user='request', readonly=True)
def _board_changed_since(request, pool, cursor):
    User = pool.get('res.user')
    with Transaction().set_context(User.get_preferences(context_only=True)):
        mode, filters, start = _board_view(request)
        shown = [int(i) for i in re.findall(r'\d+',
                request.args.get('shown', ''))]
        return pool.get('crm.board').changed_since(mode, filters, cursor,
            start, shown)


# --- The dashboard home ---

# (method, path pattern, handler(request, Dashboard), status): it only reads.
DASHBOARD_API = [
    ('GET', r'figures', lambda request, Dashboard: Dashboard.figures(), 200),
    ]
DASHBOARD_API = [(method, re.compile(pattern), handler, status)
    for method, pattern, handler, status in DASHBOARD_API]


@app.route('/<database_name>/crm/dashboard', methods=['GET'])
@with_pool
def dashboard_page(request, pool):
    return desk_page(request, pool, "The dashboard", 'dashboard')


@app.route('/<database_name>/crm/dashboard/api/<path:action>',
    methods=['GET'])
@with_pool
def dashboard_api(request, pool, action):
    """The inbox API's checks (session, limits) before crm.dashboard; it
    changes nothing, so it takes no POST."""
    refused = refused_api_request(request, action, "the dashboard")
    if refused:
        return refused
    return dispatch_api(request, pool, DASHBOARD_API, action,
        'crm.dashboard')
