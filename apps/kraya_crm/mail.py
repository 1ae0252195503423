"""Email for follow-up sequences: an email with its unsubscribe link, sent
through the site's SMTP server ([email] uri), and what comes back.

    GET  /<db>/crm/unsubscribe/<token>   "Stop emails from <company>?"
    POST /<db>/crm/unsubscribe/<token>   opts the lead out of email (the
                                         page's button or RFC 8058 one-click)
    POST /<db>/crm/email/inbound         a raw inbound email (RFC 822),
                                         X-Kraya-Signature: sha256=<HMAC>

A send never raises for what the server or the network did: deliver answers
a SendResult, 'sent', 'retry' (after retry_after seconds) or 'failed' (the
recipient was refused). An inbound email is a bounce, which fails the email
it returns, or a reply, stored once per Message-ID on the lead we wrote to
(else the sender's lead, else a new one). A GET never opts out: mail
scanners open every link in an email."""
import base64
import datetime as dt
import hashlib
import hmac
import logging
import re
import smtplib
import string
import urllib.parse
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser, HeaderParser
from email.utils import formataddr, format_datetime, make_msgid, parseaddr
from html import escape
from html.parser import HTMLParser

import trytond.config as config
from trytond.i18n import gettext
from trytond.pool import Pool, PoolMeta
from trytond.sendmail import get_smtp_server, send_message
from trytond.transaction import Transaction

from .contact import normalize_email
from .exceptions import MailSettingError
from .http import public_url, secret, storable_text
from .message import utcnow
from .outbox import SendResult

logger = logging.getLogger(__name__)
ENDPOINT = 'email'
# Greylisting and full mailboxes ask for minutes, not seconds.
RETRY_AFTER_REFUSAL = 300
RETRY_AFTER_NO_SERVER = 60
# Timeline bodies stay readable; the rest of a long email is in the mailbox.
MAX_BODY = 20_000
FOOTER_TEXT = "Don't want these emails? Unsubscribe: {url}"
FOOTER_HTML = (
    '<p style="margin-top:32px;font-size:12px;color:#6b7280">'
    'Don\'t want these emails? <a href="{url}" style="color:#6b7280">'
    'Unsubscribe</a></p>')
EMAIL_HTML = string.Template(
    '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
    '<meta name="viewport" content="width=device-width, initial-scale=1">'
    '</head><body style="font-family:Arial,Helvetica,sans-serif;'
    'font-size:15px;line-height:1.5;color:#1f2937">\n$body\n$footer\n'
    '</body></html>\n')
# The unsubscribe button and the one-click POST send a few bytes at most.
UNSUBSCRIBE_MAX_BYTES = 4096


# --- Building and sending ---

URL = re.compile(r'https?://[^\s<>"\']+[^\s<>"\'.,;:!?)\]]')


def _line_html(line, track):
    "A line of text as HTML: escaped, its web addresses made links."
    parts, end = [], 0
    for match in URL.finditer(line):
        url = match.group(0)
        parts.append(escape(line[end:match.start()]))
        parts.append('<a href="%s">%s</a>' % (
                escape(track(url) if track else url), escape(url)))
        end = match.end()
    parts.append(escape(line[end:]))
    return ''.join(parts)


def text_to_html(text, track=None):
    """The text as HTML: escaped, paragraphs at blank lines, line breaks
    kept, web addresses as links (through track(url), when given)."""
    paragraphs = re.split(r'\n[ \t]*\n', (text or '').strip())
    return '\n'.join('<p>%s</p>' % '<br>\n'.join(
                _line_html(line, track) for line in paragraph.splitlines())
        for paragraph in paragraphs if paragraph.strip())


def html_with_footer(html, footer):
    "The footer before </body>, or the fragment made a whole document."
    closing = re.search(r'</body\s*>', html, re.IGNORECASE)
    if closing:
        return html[:closing.start()] + footer + html[closing.start():]
    return EMAIL_HTML.substitute(body=html, footer=footer)


def build_email(to, subject, text, html, message_id, unsubscribe_url,
        from_addr=None, reply_to=None, from_name=None, answers=(),
        track=None):
    """The email to send: text and HTML alternatives (the HTML made from the
    text when html is None), both ending with the unsubscribe link, and the
    RFC 8058 one-click unsubscribe headers. html, when given, is trusted
    markup (a template); everything else put into HTML is escaped.
    from_name is the teammate who writes; answers, the Message-IDs of the
    thread it answers, the last one answered directly; track(url), the
    address a link of the text goes through to count the click."""
    msg = EmailMessage()
    sender = from_addr or config.get('email', 'from')
    if from_name:
        sender = formataddr((from_name, parseaddr(sender)[1]))
    msg['From'] = sender
    msg['To'] = to
    if reply_to:
        msg['Reply-To'] = reply_to
    if answers:
        # Threads the answer in the lead's mail app (RFC 5322 3.6.4).
        msg['In-Reply-To'] = answers[-1]
        msg['References'] = ' '.join(answers)
    msg['Subject'] = subject
    msg['Date'] = format_datetime(dt.datetime.now(dt.timezone.utc))
    msg['Message-ID'] = message_id
    # Relays such as Amazon SES replace the Message-ID; bounces quote our
    # headers back, so this one still names the email.
    msg['X-Kraya-Message'] = message_id
    msg['List-Unsubscribe'] = f'<{unsubscribe_url}>'
    msg['List-Unsubscribe-Post'] = 'List-Unsubscribe=One-Click'
    msg.set_content(
        f"{(text or '').rstrip()}\n\n-- \n"
        + FOOTER_TEXT.format(url=unsubscribe_url) + "\n")
    msg.add_alternative(html_with_footer(
            text_to_html(text, track) if html is None else html,
            FOOTER_HTML.format(url=escape(unsubscribe_url))), subtype='html')
    return msg


def new_message_id():
    "A new RFC 5322 Message-ID, <...@domain>, on the domain we send from."
    address = parseaddr(config.get('email', 'from') or '')[1]
    return make_msgid(domain=address.rpartition('@')[2] or 'localhost')


def _refusal(provider_id, code, text):
    "A 5xx refusal is final (the address bounced); a 4xx one is worth a retry."
    if isinstance(text, bytes):
        text = text.decode('utf-8', 'replace')
    if 500 <= code <= 599:
        return SendResult('failed', provider_id, f'smtp-{code}', text)
    return SendResult('retry', provider_id, f'smtp-{code}', text,
        RETRY_AFTER_REFUSAL)


def _close(server):
    if server is None:
        return
    try:
        server.quit()
    except (smtplib.SMTPException, OSError):
        server.close()


def deliver(msg):
    """Send the email through the site's SMTP server. A refused recipient or
    content (5xx) is 'failed'; a temporary refusal (4xx), a server we cannot
    reach or one that refuses us (sender, login) is 'retry'."""
    provider_id = msg['Message-ID']
    server = None
    try:
        server = get_smtp_server(strict=True)
        server = send_message(msg, server=server, strict=True) or server
    except smtplib.SMTPRecipientsRefused as error:
        code, text = next(iter(error.recipients.values()))
        return _refusal(provider_id, code, text)
    except smtplib.SMTPDataError as error:
        return _refusal(provider_id, error.smtp_code, error.smtp_error)
    except smtplib.SMTPResponseException as error:
        # Our settings are wrong (sender, login): keep the email until fixed.
        logger.error("SMTP server refused us: %s %s", error.smtp_code,
            error.smtp_error)
        result = _refusal(provider_id, error.smtp_code, error.smtp_error)
        result.outcome, result.retry_after = 'retry', RETRY_AFTER_REFUSAL
        return result
    except (smtplib.SMTPException, OSError) as error:
        return SendResult('retry', provider_id, 'smtp-connection',
            str(error) or type(error).__name__, RETRY_AFTER_NO_SERVER)
    finally:
        _close(server)
    return SendResult('sent', provider_id)


# --- Unsubscribe links ---

def link_secret():
    "Refused while empty or the demo's, as anyone could forge the links."
    value = secret('link_secret')
    if value is None:
        raise MailSettingError(
            gettext('kraya_crm.msg_mail_link_secret_missing'))
    return value


def unsubscribe_token(database_name, lead_id):
    "The lead's id and a MAC of it: a link cannot be made for another lead."
    digest = hmac.new(link_secret().encode(),
        f'unsubscribe:{database_name}:{lead_id}'.encode(),
        hashlib.sha256).digest()
    return f'{lead_id}.' + base64.urlsafe_b64encode(
        digest[:16]).decode().rstrip('=')


def click_signature(database_name, message_id, url):
    "A MAC of the email and the address: a link goes only where we wrote."
    digest = hmac.new(link_secret().encode(),
        f'click:{database_name}:{message_id}:{url}'.encode(),
        hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:16]).decode().rstrip('=')


def click_url(database_name, message_id, url):
    "The address a link of our email goes through, to count its click."
    return '%s/%s/crm/link/%s?%s' % (public_url(),
        urllib.parse.quote(database_name), message_id,
        urllib.parse.urlencode({'u': url, 's': click_signature(
                    database_name, message_id, url)}))


def click_valid(database_name, message_id, url, signature):
    return bool(url) and URL.fullmatch(url) is not None \
        and hmac.compare_digest(signature or '',
            click_signature(database_name, message_id, url))


def unsubscribe_url(database_name, lead_id):
    return '%s/%s/crm/unsubscribe/%s' % (public_url(),
        urllib.parse.quote(database_name),
        unsubscribe_token(database_name, lead_id))


def lead_id_of_token(database_name, token):
    "The id of the lead a token was made for, or None if it is not ours."
    lead_id = token.partition('.')[0]
    if not re.fullmatch(r'[0-9]{1,18}', lead_id):
        return None
    expected = unsubscribe_token(database_name, int(lead_id))
    if hmac.compare_digest(expected.encode(), token.encode()):
        return int(lead_id)


# --- Reading inbound email ---

class NotAnEmail(ValueError):
    "An inbound body that is not an RFC 822 email."


@dataclass
class Bounce:
    "A report that one of our emails could not be delivered."
    original_ids: list  # Message-IDs the returned email may have had
    status: str  # the enhanced status code, e.g. '5.1.1'
    diagnostic: str
    at: dt.datetime


@dataclass
class Reply:
    "An email someone wrote to us."
    message_id: str
    sender: str  # the address, lower-cased
    sender_name: str
    subject: str
    text: str  # without the quoted earlier messages
    attachment: str
    at: dt.datetime
    thread_ids: list  # In-Reply-To, then References from the newest
    automatic: bool  # an out-of-office or other auto-reply


MESSAGE_ID = re.compile(r'<[^<>\s]+>')
BOUNCE_SENDER = re.compile(r'^(mailer-daemon|postmaster)(@|$)', re.IGNORECASE)
STATUS_CODE = re.compile(r'\b([45]\.\d{1,3}\.\d{1,3})\b')
QUOTED_ID = re.compile(
    r'^\s*(?:X-Kraya-Message|Message-ID)\s*:\s*(<[^<>\s]+>)',
    re.IGNORECASE | re.MULTILINE)
# Where a reply quotes the earlier message: "On <date>, <who> wrote:"
# (Gmail wraps it over two lines), Outlook's separators.
QUOTE_INTRO = re.compile(
    r'^(On\s.+|.*<[^<>\s]+@[^<>\s]+>.*)\s(wrote|लिखा)\s*:$', re.IGNORECASE)
QUOTE_RULE = re.compile(
    r'^(-{2,}\s*Original Message\s*-{2,}|_{20,})$', re.IGNORECASE)


def message_ids(value):
    return MESSAGE_ID.findall(str(value or ''))


def part_text(part):
    "A text part's content; a charset Python does not know is read as UTF-8."
    try:
        return part.get_content()
    except (LookupError, UnicodeError, AssertionError):
        return (part.get_payload(decode=True) or b'').decode(
            'utf-8', 'replace')


def sent_at(msg):
    "When the email says it was sent, in UTC; now when unusable or future."
    now = utcnow()
    at = getattr(msg['Date'], 'datetime', None)
    if at is None:
        return now
    if at.tzinfo:
        at = at.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return min(at, now)


class _HtmlText(HTMLParser):
    "The text of an HTML email, without scripts, styles and blockquotes."
    SKIPPED = {'script', 'style', 'head', 'blockquote'}
    BREAKS = {'br', 'p', 'div', 'li', 'tr', 'h1', 'h2', 'h3', 'h4', 'table'}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts, self.skipping = [], 0

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIPPED:
            self.skipping += 1
        elif tag in self.BREAKS:
            self.parts.append('\n')

    def handle_endtag(self, tag):
        if tag in self.SKIPPED:
            self.skipping = max(self.skipping - 1, 0)
        elif tag in self.BREAKS:
            self.parts.append('\n')

    def handle_data(self, data):
        if not self.skipping:
            self.parts.append(data)


def html_to_text(html):
    parser = _HtmlText()
    parser.feed(html)
    parser.close()
    lines = [re.sub(r'[ \t\r\f\v]+', ' ', line).strip()
        for line in ''.join(parser.parts).splitlines()]
    return re.sub(r'\n{3,}', '\n\n', '\n'.join(lines)).strip()


def _starts_quote(lines, i):
    line = lines[i].strip()
    if QUOTE_RULE.match(line) or QUOTE_INTRO.match(line):
        return True
    if i + 1 < len(lines) and QUOTE_INTRO.match(
            f'{line} {lines[i + 1].strip()}'):
        return True
    # Outlook: a From: line with Sent: or Date: right below it.
    return (line.startswith('From:') and any(
            re.match(r'(Sent|Date):', l.strip()) for l in lines[i + 1:i + 4]))


def without_quote(text):
    """What the sender wrote, without the earlier messages quoted below it;
    the whole text when that leaves nothing."""
    lines = text.splitlines()
    for i in range(len(lines)):
        if _starts_quote(lines, i):
            lines = lines[:i]
            break
    while lines and (not lines[-1].strip()
            or lines[-1].lstrip().startswith('>')):
        lines.pop()
    return '\n'.join(lines).strip() or text.strip()


def _returned_headers(msg):
    "The headers of the email a bounce returns, as the bounce quotes them."
    for part in msg.walk():
        content_type = part.get_content_type()
        if content_type in {'message/rfc822', 'message/global'}:
            yield from part.get_payload()
        elif content_type in {'text/rfc822-headers', 'message/global-headers'}:
            yield HeaderParser(policy=policy.default).parsestr(
                part_text(part))


def _original_ids(msg, text):
    ids = []
    for headers in _returned_headers(msg):
        for name in ('X-Kraya-Message', 'Message-ID'):
            ids.extend(message_ids(headers.get(name)))
    for name in ('X-Kraya-Message', 'Original-Message-ID'):
        ids.extend(message_ids(msg.get(name)))
    if not ids:
        # A bounce that pastes the returned email into its text.
        ids = QUOTED_ID.findall(text)
    return list(dict.fromkeys(ids))


def _failed_recipient(reports):
    """(status, diagnostic) of the first failed recipient of delivery status
    reports, or None when they report a delay or a delivery."""
    for report in reports:
        # The first block is about the message, the others one recipient each.
        for fields in report.get_payload()[1:]:
            action = str(fields.get('Action') or '').strip().lower()
            status = str(fields.get('Status') or '').strip() or None
            if action == 'failed' or (not action and status
                    and status.startswith('5')):
                diagnostic = str(fields.get('Diagnostic-Code') or '')
                return status, re.sub(
                    r'^\s*smtp\s*;\s*', '', diagnostic, flags=re.I) or None


def _prose_failure(text):
    "(status, diagnostic) of a bounce written for people only."
    found = STATUS_CODE.search(text)
    line = next((l.strip() for l in text.splitlines()
            if re.search(r'\b[45]\d\d\b', l)), None)
    return found.group(1) if found else None, line


def read_bounce(msg):
    """The Bounce of a delivery report (RFC 3464) or of the usual
    mailer-daemon prose; None for a report of a delay or a delivery."""
    texts = [part_text(part) for part in msg.walk()
        if part.get_content_type() == 'text/plain']
    text = '\n'.join(texts)
    reports = [part for part in msg.walk()
        if part.get_content_type() == 'message/delivery-status']
    if reports:
        failure = _failed_recipient(reports)
    elif re.search(r'delay|warning', str(msg.get('Subject') or ''), re.I):
        failure = None
    else:
        failure = _prose_failure(text)
    if failure is None:
        return None
    status, diagnostic = failure
    summary = ' '.join(text.split())[:300] or None
    return Bounce(_original_ids(msg, text), status, diagnostic or summary,
        sent_at(msg))


def read_reply(msg, raw, sender_name, sender):
    if '@' not in sender:
        raise NotAnEmail(f"the sender {sender!r} is not an email address")
    body = msg.get_body(preferencelist=('plain', 'html'))
    text = part_text(body) if body is not None else ''
    if body is not None and body.get_content_type() == 'text/html':
        text = html_to_text(text)
    files = [part.get_filename() for part in msg.iter_attachments()
        if part.get_filename()]
    auto_submitted = str(msg.get('Auto-Submitted') or 'no').strip().lower()
    precedence = str(msg.get('Precedence') or '').strip().lower()
    return Reply(
        # One without a Message-ID is known by its bytes, so that a
        # redelivery is still stored once.
        message_id=(message_ids(msg.get('Message-ID')) or [
                '<%s@kraya.invalid>' % hashlib.sha256(raw).hexdigest()[:32]
                ])[0],
        sender=normalize_email(sender),
        sender_name=storable_text(sender_name).strip() or None,
        subject=storable_text(str(msg.get('Subject') or '')).strip() or None,
        text=storable_text(without_quote(text)[:MAX_BODY]) or None,
        attachment=('attachments: ' + ', '.join(files)) if files else None,
        at=sent_at(msg),
        thread_ids=list(dict.fromkeys(message_ids(msg.get('In-Reply-To'))
                + message_ids(msg.get('References'))[::-1])),
        automatic=(auto_submitted != 'no'
            or precedence in {'auto_reply', 'bulk', 'junk'}
            or 'X-Autoreply' in msg or 'X-Autorespond' in msg))


def read_email(raw):
    """The Bounce or Reply a raw inbound email is, or None for a report of a
    delay (the server still tries). Raises NotAnEmail."""
    try:
        # Not text any email means: the database could not hold it.
        msg = BytesParser(policy=policy.default).parsebytes(
            raw.replace(b'\x00', b''))
        if not str(msg.get('From') or '').strip():
            raise NotAnEmail("no From header: not an email")
        sender_name, sender = parseaddr(str(msg['From']))
        if ((msg.get_content_type() == 'multipart/report'
                    and str(msg.get_param('report-type')).lower()
                    == 'delivery-status')
                or BOUNCE_SENDER.match(sender)):
            return read_bounce(msg)
        return read_reply(msg, raw, sender_name, sender)
    except NotAnEmail:
        raise
    except Exception as exception:
        # Headers or parts the email package cannot make sense of.
        raise NotAnEmail(f"unreadable email: {exception}") from exception


# --- Models ---

class Lead(metaclass=PoolMeta):
    __name__ = 'crm.lead'

    @property
    def email_unsubscribe_url(self):
        "The link in our emails' footer that stops emails to this lead."
        return unsubscribe_url(Transaction().database.name, self.id)

    @classmethod
    def by_unsubscribe_token(cls, token):
        """The lead of an unsubscribe link, the one it was merged into if
        merged, or None for a link that is not ours."""
        lead_id = lead_id_of_token(Transaction().database.name, token)
        with Transaction().set_context(active_test=False):
            leads = cls.search([('id', '=', lead_id)]) if lead_id else []
        lead = leads[0] if leads else None
        while lead is not None and lead.merged_into:
            lead = lead.merged_into
        return lead

    @classmethod
    def unsubscribe_from_email(cls, leads):
        """Opt the people of these leads out of email: the leads and any
        other active lead with the same address (an unmerged duplicate).
        Returns the leads newly opted out."""
        others = cls.browse([row['id'] for row in cls._identity_rows(
                    {('email', lead.email) for lead in leads if lead.email},
                    [])])
        unique = list({lead.id: lead for lead in [*leads, *others]}.values())
        return cls.opt_out(unique, 'email', "Unsubscribe link")


class Message(metaclass=PoolMeta):
    __name__ = 'crm.message'

    @classmethod
    def receive_email(cls, raw):
        """Take one inbound email (the webhook, a replayed dead letter): a
        bounce fails the email it returns, anything else lands on a
        timeline. Returns 'bounce', 'stored', 'known' or 'ignored';
        raises NotAnEmail for a body that is not an email."""
        received = read_email(raw)
        if isinstance(received, Bounce):
            cls.receive_bounces([received])
            return 'bounce'
        if isinstance(received, Reply):
            return 'stored' if cls.receive_emails([received]) else 'known'
        return 'ignored'

    @classmethod
    def receive_bounces(cls, bounces):
        "Fail the emails these bounces return; returns how many changed."
        return cls.apply_statuses(ENDPOINT, [
                (message_id, 'failed', bounce.at, bounce.status,
                    bounce.diagnostic)
                for bounce in bounces for message_id in bounce.original_ids])

    @classmethod
    def receive_emails(cls, replies):
        """Put emails on their leads' timelines: on the lead of the email
        they answer (In-Reply-To, References), else the sender's lead, else
        a new lead of source 'email'. An email whose Message-ID is stored
        is skipped. Returns the new messages."""
        Lead = Pool().get('crm.lead')
        known = cls.by_provider_id(ENDPOINT, {r.message_id for r in replies})
        fresh = list({r.message_id: r for r in replies
                if r.message_id not in known}.values())
        ours = cls.by_provider_id(ENDPOINT,
            {i for reply in fresh for i in reply.thread_ids})
        found = {}
        for reply in fresh:
            answered = [ours[i] for i in reply.thread_ids
                if i in ours and ours[i].direction == 'outbound']
            if answered:
                found[reply.message_id] = (answered[0].lead, False)
        unthreaded = [r for r in fresh if r.message_id not in found]
        found.update(zip([r.message_id for r in unthreaded], Lead.capture([
                        {'name': r.sender_name or r.sender, 'email': r.sender}
                        for r in unthreaded], source='email')))
        # The emails of people erased on their request: none stored.
        fresh = [r for r in fresh if found[r.message_id][0]]
        messages = []
        for reply in fresh:
            lead, _ = found[reply.message_id]
            messages.append(cls(lead=lead, deal=lead.open_deal,
                    direction='inbound', channel=ENDPOINT, status='received',
                    kind='auto_reply' if reply.automatic else 'email',
                    at=reply.at, provider_id=reply.message_id,
                    address=reply.sender, subject=reply.subject,
                    body=reply.text, attachment=reply.attachment))
        cls.save(messages)
        # A new lead has not replied to anything, nor has an out-of-office.
        Lead.record_inbound([(found[r.message_id][0], r.at,
                    not found[r.message_id][1] and not r.automatic)
                for r in fresh])
        return messages
