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

Imported from the module's __init__, as Tryton's marketing_automation
registers its own."""

import hmac
import logging
import string
import threading
import time
from contextlib import nullcontext
from html import escape

from trytond import backend
from trytond.exceptions import UserError
from trytond.i18n import gettext
from trytond.pool import Pool
from trytond.protocols.wrappers import (
    HTTPStatus, Response, allow_null_origin, with_pool, with_transaction)
from trytond.transaction import Transaction
from trytond.wsgi import app

from . import mail, whatsapp
from .capture import capture_company
from .exceptions import NoCompanyError
from .http import (
    client_ip, json_response, limiter, read_body, secret, setting)
from .exceptions import MailSettingError
from .mail import UNSUBSCRIBE_MAX_BYTES, NotAnEmail
from .web_form import (
    CAPTURE_PATH, HONEYPOT, ORIGIN_ENVIRON, SUBMISSION_MESSAGES,
    SubmissionError, origin_allowed, origin_lines, parse_body)
from .whatsapp import WebhookError, signature_valid

logger = logging.getLogger(__name__)


def signed_body(request, ip, what, secret, header_name, rate_limiter,
        max_bytes):
    """(body, None) for a body signed `sha256=<HMAC-SHA256>` with our
    secret, else (None, the answer): 403 while the secret is not set up,
    429 past the rate limit, 413 over the size, 401 unsigned, 403 badly
    signed."""
    if secret is None:
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
    if not signature_valid(body, header, secret):
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
    token = secret('whatsapp_app_secret') and secret('whatsapp_verify_token')
    args = request.args
    if (args.get('hub.mode') == 'subscribe' and token
            and hmac.compare_digest(
                args.get('hub.verify_token', '').encode(), token.encode())):
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
        secret('whatsapp_app_secret'), 'X-Hub-Signature-256',
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

def _take_origin_aside(wsgi_app):
    def wrapper(environ, start_response):
        if (CAPTURE_PATH.search(environ.get('PATH_INFO', ''))
                and 'HTTP_ORIGIN' in environ):
            environ[ORIGIN_ENVIRON] = environ.pop('HTTP_ORIGIN')
        return wsgi_app(environ, start_response)
    wrapper.kraya_capture_origin = True
    return wrapper


if not getattr(app.wsgi_app, 'kraya_capture_origin', False):
    app.wsgi_app = _take_origin_aside(app.wsgi_app)


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


def page(status, title, text, button=None, headers=None):
    form = FORM.substitute(button=escape(button)) if button else ''
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
        secret('email_inbound_secret'), 'X-Kraya-Signature',
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
