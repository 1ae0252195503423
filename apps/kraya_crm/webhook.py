"""Outgoing webhooks: the CRM's events POSTed to n8n, Zapier, Make or a
program of one's own, signed, in order, at least once.

A subscription names a URL, the events it wants and a secret. Each event
(event.py) becomes one delivery per subscription wanting it, written in
the transaction of the change; the worker sends it after the commit.

- The body is JSON with the event id; `X-Kraya-Signature: sha256=<hex>` is
  the HMAC-SHA256, keyed by the secret, of `<X-Kraya-Timestamp>.<body>`,
  so a receiver can refuse a forged or replayed delivery (docs in the
  README, "Outgoing webhooks").
- A receiver that fails (no answer in time, an error status) gets the
  delivery again after 30 s, 1 min, 2 min... at most an hour apart, for
  up to 24 hours; then it is failed and a manager can replay it. Every
  try is logged with its status, error and duration.
- The events of one lead or deal reach a receiver in the order they
  happened: a delivery waits while an earlier one of the same lead or
  deal to the same subscription is still on its way.
- 410 Gone tells us the receiver is gone for good: the subscription is
  switched off and its waiting deliveries failed.
- Claimed and committed before the POST, as the outbox does: two workers
  never send one delivery at once, and one left "sending" by a worker that
  died is sent again once its lease ends (hence at least once)."""
import datetime as dt
import hashlib
import hmac
import json
import logging
import secrets
import time
import urllib.parse

import requests
from sql import Literal, Null
from sql.operators import Exists

from trytond import backend
from trytond.i18n import gettext
from trytond.model import (
    DeactivableMixin, Index, ModelSQL, ModelView, fields)
from trytond.model.exceptions import ValidationError
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Eval
from trytond.transaction import Transaction, without_check_access

from .event import EVENTS, KINDS
from .http import setting
from .message import utcnow

logger = logging.getLogger(__name__)
QUEUE_NAME = 'crm_webhook'
USER_AGENT = 'Kraya-CRM-Webhooks/1'
# A delivery still waiting for its receiver: it holds back the later
# events of its lead or deal.
UNFINISHED = ['pending', 'sending']
SENDING_LEASE = dt.timedelta(minutes=5)


def sign(secret, timestamp, body):
    "The X-Kraya-Signature of a body sent at `timestamp` (Unix seconds)."
    digest = hmac.new(secret.encode(), f'{timestamp}.'.encode() + body,
        hashlib.sha256).hexdigest()
    return f'sha256={digest}'


def backoff(attempts):
    """How long a failed delivery waits before its next try: doubling from
    webhook_retry_seconds, at most an hour."""
    first = setting('webhook_retry_seconds', 30)
    return dt.timedelta(seconds=min(first * 2 ** (attempts - 1), 3600))


class WebhookUrlError(ValidationError):
    pass


class Webhook(DeactivableMixin, ModelSQL, ModelView):
    "Where the CRM POSTs the events a tool (n8n, Zapier, Make) wants."
    __name__ = 'crm.webhook'
    __string__ = "Webhook"
    name = fields.Char("Name", required=True,
        help="What receives the events, e.g. \"n8n: new leads to Sheets\".")
    url = fields.Char("URL", required=True,
        help="Where each event is POSTed as JSON (http or https).")
    events = fields.MultiSelection(EVENTS, "Events", required=True,
        help="The events this receiver gets.")
    secret = fields.Char("Signing Secret", required=True, strip=False,
        help="Signs each delivery (X-Kraya-Signature); the receiver checks "
        "the signature with it.")
    company = fields.Many2One('company.company', "Company", required=True)
    disabled_reason = fields.Char("Why Switched Off", readonly=True,
        states={'invisible': ~Eval('disabled_reason')})
    deliveries = fields.One2Many(
        'crm.webhook.delivery', 'webhook', "Deliveries", readonly=True)

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._buttons.update({
                'new_secret': {'icon': 'tryton-refresh'},
                })

    @staticmethod
    def default_secret():
        return secrets.token_urlsafe(32)

    @staticmethod
    def default_company():
        return Transaction().context.get('company')

    @classmethod
    def validate_fields(cls, webhooks, field_names):
        super().validate_fields(webhooks, field_names)
        if 'url' in field_names:
            for webhook in webhooks:
                parts = urllib.parse.urlsplit(webhook.url or '')
                if parts.scheme not in {'http', 'https'} or not parts.hostname:
                    raise WebhookUrlError(gettext(
                            'kraya_crm.msg_webhook_url', url=webhook.url,
                            webhook=webhook.rec_name))

    @classmethod
    def preprocess_values(cls, mode, values):
        values = super().preprocess_values(mode, values)
        if values.get('active'):
            # Switched on again by a person: the old reason no longer holds.
            values.setdefault('disabled_reason', None)
        return values

    @classmethod
    @ModelView.button
    def new_secret(cls, webhooks):
        "Rotate the secret (tell the receiver the new one)."
        for webhook in webhooks:
            webhook.secret = cls.default_secret()
        cls.save(webhooks)

    @classmethod
    def switch_off(cls, webhooks, reason):
        "The receiver is gone: no more deliveries, and the ones waiting fail."
        Delivery = Pool().get('crm.webhook.delivery')
        cls.write(webhooks, {'active': False, 'disabled_reason': reason})
        waiting = Delivery.search([
                ('webhook', 'in', [w.id for w in webhooks]),
                ('state', 'in', UNFINISHED),
                ])
        Delivery.write(waiting, {'state': 'failed', 'last_error': reason})


class Event(metaclass=PoolMeta):
    __name__ = 'crm.event'
    deliveries = fields.One2Many(
        'crm.webhook.delivery', 'event', "Deliveries", readonly=True)

    @classmethod
    def wanted(cls):
        Webhook = Pool().get('crm.webhook')
        webhook = Webhook.__table__()
        cursor = Transaction().connection.cursor()
        # The active webhooks' events, read straight from the table: this
        # runs at every change of a lead, deal, message or task.
        cursor.execute(*webhook.select(webhook.events,
                where=webhook.active == Literal(True)))
        # JSON: a list from PostgreSQL, its text from SQLite.
        return super().wanted() | {kind for events, in cursor
            for kind in (json.loads(events) if isinstance(events, str)
                else events or [])}

    @classmethod
    def notify(cls, events):
        super().notify(events)
        Pool().get('crm.webhook.delivery').queue_events(events)


class Delivery(ModelSQL, ModelView):
    "One event on its way to one webhook, with each try logged."
    __name__ = 'crm.webhook.delivery'
    __string__ = "Webhook Delivery"
    webhook = fields.Many2One('crm.webhook', "Webhook", required=True,
        readonly=True, ondelete='CASCADE')
    event = fields.Many2One('crm.event', "Event", required=True,
        readonly=True, ondelete='CASCADE')
    event_name = fields.Function(
        fields.Selection(KINDS, "Event Type"), 'get_event_field')
    about = fields.Char("About", required=True, readonly=True)
    state = fields.Selection([
            ('pending', "Waiting"),
            ('sending', "Sending"),
            ('delivered', "Delivered"),
            ('failed', "Failed"),
            ], "State", required=True, readonly=True, sort=False)
    attempts = fields.Integer("Tries", readonly=True)
    next_attempt_at = fields.Timestamp("Next Try At", readonly=True)
    sending_at = fields.Timestamp("Sending Since", readonly=True)
    delivered_at = fields.Timestamp("Delivered At", readonly=True)
    last_status = fields.Integer("Last HTTP Status", readonly=True)
    last_error = fields.Char("Last Error", readonly=True)
    tries = fields.One2Many('crm.webhook.attempt', 'delivery', "Tries Log",
        readonly=True)

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_indexes.update({
                Index(t, (t.next_attempt_at, Index.Range()),
                    where=t.state == 'pending'),
                Index(t, (t.sending_at, Index.Range()),
                    where=t.state == 'sending'),
                Index(t, (t.webhook, Index.Equality()),
                    (t.about, Index.Equality()), (t.id, Index.Range()),
                    where=t.state.in_(UNFINISHED)),
                })
        cls._order = [('id', 'DESC')]
        cls._buttons.update({
                'replay': {
                    'invisible': Eval('state').in_(UNFINISHED),
                    'depends': ['state'],
                    'icon': 'tryton-refresh',
                    },
                })

    @staticmethod
    def default_state():
        return 'pending'

    @staticmethod
    def default_attempts():
        return 0

    def get_rec_name(self, name):
        return f'{self.event.kind} → {self.webhook.rec_name}'

    @classmethod
    def get_event_field(cls, deliveries, name):
        return {d.id: d.event.kind for d in deliveries}

    @classmethod
    def queue_events(cls, events):
        "One delivery of each event to each webhook of its company wanting it."
        Webhook = Pool().get('crm.webhook')
        if not events:
            return
        with without_check_access():
            webhooks = Webhook.search([])
            now = utcnow()
            deliveries = cls.create([{
                        'webhook': webhook.id,
                        'event': event.id,
                        'about': event.about,
                        'next_attempt_at': now,
                        } for event in events for webhook in webhooks
                    if event.kind in webhook.events
                    and (event.company is None
                        or event.company == webhook.company)])
        if deliveries:
            cls.wake()

    @classmethod
    @ModelView.button
    def replay(cls, deliveries):
        "Send the event again, as a new delivery (the receiver has its id)."
        with without_check_access():
            replayed = cls.create([{
                        'webhook': d.webhook.id,
                        'event': d.event.id,
                        'about': d.about,
                        'next_attempt_at': utcnow(),
                        } for d in deliveries])
        cls.wake()
        return replayed

    @classmethod
    def _due(cls, table, now, limit):
        """The query of the deliveries to send now, oldest first: those
        whose try is due and those left sending by a worker that died,
        unless an earlier one of their lead or deal is still unfinished."""
        earlier = cls.__table__()
        held_back = Exists(earlier.select(earlier.id, where=(
                    earlier.webhook == table.webhook)
                & (earlier.about == table.about)
                & (earlier.id < table.id)
                & earlier.state.in_(UNFINISHED)))
        due = (((table.state == 'pending') & (table.next_attempt_at <= now))
            | ((table.state == 'sending')
                & (table.sending_at < now - SENDING_LEASE)))
        return table.select(table.id, where=due & ~held_back,
            order_by=[table.id.asc], limit=limit)

    @classmethod
    def wake(cls):
        """Queue a task to send what is due, unless one is waiting. The cron
        calls it every minute, so retries whose time came go out."""
        Queue = Pool().get('ir.queue')
        queue = Queue.__table__()
        cursor = Transaction().connection.cursor()
        cursor.execute(*queue.select(queue.id, where=(
                    queue.name == QUEUE_NAME) & (queue.dequeued_at == Null),
                limit=1))
        if cursor.fetchone():
            return
        cursor.execute(*cls._due(cls.__table__(), utcnow(), 1))
        due = cursor.fetchone()
        if due:
            with Transaction().set_context(queue_name=QUEUE_NAME):
                # The queue wants records: the task sends all that is due.
                cls.__queue__.send_due(cls.browse([due[0]]))

    @classmethod
    def send_due(cls, _=None, batch_size=20, seconds=50):
        """The worker's task: send what is due, batch after batch, for at
        most `seconds`. Each claim and each answer is its own
        transaction, so no database lock is held while a receiver is slow."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                claimed = cls._claim(batch_size)
            except backend.DatabaseOperationalError:
                # SQLite: another writer won; the cron's wake-up comes back.
                logger.info("webhook deliveries busy, claim skipped",
                    exc_info=True)
                return
            if not claimed:
                return
            for delivery_id in claimed:
                transaction = Transaction()
                try:
                    with transaction.new_transaction() as sending:
                        cls.send(cls.browse([delivery_id]))
                        sending.commit()
                except Exception:
                    # Left "sending": the lease brings it back.
                    logger.exception(
                        "webhook delivery %s failed", delivery_id)

    @classmethod
    def _claim(cls, limit):
        "Take up to `limit` due deliveries; committed before any is sent."
        transaction = Transaction()
        now = utcnow()
        with transaction.new_transaction() as claim:
            database = claim.database
            table = cls.__table__()
            cursor = claim.connection.cursor()
            query = cls._due(table, now, limit)
            if database.has_select_for():
                query.for_ = database.get_select_for_skip_locked()('UPDATE')
            cursor.execute(*query)
            ids = [i for i, in cursor]
            if ids:
                cursor.execute(*table.update(
                        [table.state, table.sending_at, table.attempts],
                        ['sending', now, table.attempts + 1],
                        where=table.id.in_(ids)))
            claim.commit()
        return ids

    @classmethod
    def send(cls, deliveries):
        """POST each claimed delivery to its receiver and write the outcome
        and the try; in the caller's transaction."""
        pool = Pool()
        Attempt = pool.get('crm.webhook.attempt')
        Webhook = pool.get('crm.webhook')
        tries, gone = [], {}
        for delivery in deliveries:
            if delivery.state != 'sending':
                continue
            status, error, duration = delivery.post()
            now = utcnow()
            tries.append({'delivery': delivery.id, 'at': now,
                    'status_code': status, 'error': error,
                    'duration_ms': duration})
            delivery.last_status = status
            delivery.last_error = error
            delivery.sending_at = None
            if status is not None and 200 <= status < 300:
                delivery.state = 'delivered'
                delivery.delivered_at = now
            elif status == 410:
                delivery.state = 'failed'
                gone[delivery.webhook] = gettext(
                    'kraya_crm.msg_webhook_gone', at=now.strftime(
                        '%Y-%m-%d %H:%M UTC'))
            elif now - delivery.event.create_date >= dt.timedelta(
                    hours=setting('webhook_retry_hours', 24)):
                delivery.state = 'failed'
            else:
                delivery.state = 'pending'
                delivery.next_attempt_at = now + backoff(delivery.attempts)
        with without_check_access():
            cls.save(deliveries)
            Attempt.create(tries)
            for webhook, reason in gone.items():
                Webhook.switch_off([webhook], reason)

    def post(self):
        """One try: (HTTP status or None, error or None, milliseconds)."""
        body = json.dumps({**self.event.payload(), 'attempt': self.attempts},
            ensure_ascii=False, separators=(',', ':')).encode()
        timestamp = str(int(time.time()))
        headers = {
            'Content-Type': 'application/json',
            'User-Agent': USER_AGENT,
            'X-Kraya-Event': self.event.kind,
            'X-Kraya-Event-Id': f'evt_{self.event.id}',
            'X-Kraya-Delivery': str(self.id),
            'X-Kraya-Timestamp': timestamp,
            'X-Kraya-Signature': sign(self.webhook.secret, timestamp, body),
            }
        started = time.monotonic()
        try:
            # A redirect is not followed: it would carry the signed body to
            # an address nobody subscribed.
            response = requests.post(self.webhook.url, data=body,
                headers=headers, allow_redirects=False,
                timeout=setting('webhook_timeout_seconds', 10))
        except requests.RequestException as exception:
            return (None, f'{type(exception).__name__}: {exception}'[:500],
                int((time.monotonic() - started) * 1000))
        duration = int((time.monotonic() - started) * 1000)
        if 200 <= response.status_code < 300:
            return response.status_code, None, duration
        return (response.status_code,
            f'HTTP {response.status_code}: {response.text[:300]}', duration)

    @classmethod
    def forget_old(cls):
        """The cron: events older than webhook_keep_days (30) go with their
        deliveries and tries, unless a delivery of theirs (a replay) is
        still on its way."""
        Event = Pool().get('crm.event')
        before = utcnow() - dt.timedelta(days=setting('webhook_keep_days', 30))
        with without_check_access():
            waiting = {d.event.id for d in cls.search([
                        ('state', 'in', UNFINISHED),
                        ('event.create_date', '<', before),
                        ])}
            Event.delete(Event.search([
                        ('create_date', '<', before),
                        ('id', 'not in', list(waiting)),
                        ], limit=10_000))


class Attempt(ModelSQL, ModelView):
    "One try of a delivery: what the receiver answered, and how fast."
    __name__ = 'crm.webhook.attempt'
    __string__ = "Webhook Try"
    delivery = fields.Many2One('crm.webhook.delivery', "Delivery",
        required=True, readonly=True, ondelete='CASCADE')
    at = fields.Timestamp("At", required=True, readonly=True)
    status_code = fields.Integer("HTTP Status", readonly=True)
    error = fields.Char("Error", readonly=True)
    duration_ms = fields.Integer("Duration (ms)", readonly=True)

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_indexes.add(Index(t, (t.delivery, Index.Equality())))
        cls._order = [('at', 'DESC'), ('id', 'DESC')]


class Cron(metaclass=PoolMeta):
    __name__ = 'ir.cron'

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.method.selection.extend([
                ('crm.webhook.delivery|wake', "Send due webhook deliveries"),
                ('crm.webhook.delivery|forget_old',
                    "Forget old webhook events"),
                ])
