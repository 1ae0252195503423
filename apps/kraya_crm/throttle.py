"""What the processes of a site share to stay within a rate: the requests
each client may make to our endpoints (http.limiter) and the pace of the
sends from a WhatsApp number (whatsapp_client).

On PostgreSQL a site runs several web processes and workers, on one
machine or several, so a limit kept in one process's memory lets N
processes together do N times as much. There the count is a row of the
database, changed by one statement on a connection of its own
(autocommit): no request's or send's transaction holds the row, and the
database's clock is the one clock of every process. SQLite sites run one
web process and one worker, which keep their counts in memory
(http.RateLimiter, whatsapp_client.TokenBucket)."""
import datetime as dt

from trytond import backend
from trytond.model import Index, ModelSQL, ModelView, Unique, fields
from trytond.pool import PoolMeta
from trytond.transaction import Transaction

from .message import utcnow

# A client not heard from for so long is forgotten (every window is shorter).
IDLE = dt.timedelta(hours=1)

# One statement per request: the sliding window is approximated from this
# window's count and the last one's, weighted by how much of the last one
# the sliding window still covers (no burst at a window's edge). A refused
# request counts nothing and changes nothing.
COUNT_REQUEST = '''
WITH clock AS (
    SELECT extract(epoch FROM clock_timestamp()) / %(seconds)s AS t)
INSERT INTO crm_rate_limit AS r
    (limit_name, client, period, count, previous, counted_at, create_uid,
        create_date)
SELECT %(name)s, %(client)s, floor(clock.t)::integer, 1, 0,
    timezone('UTC', now()), 0, timezone('UTC', now()) FROM clock
WHERE 1 <= %(limit)s
ON CONFLICT (limit_name, client) DO UPDATE SET
    period = EXCLUDED.period,
    counted_at = EXCLUDED.counted_at,
    count = CASE WHEN r.period = EXCLUDED.period THEN r.count + 1 ELSE 1 END,
    previous = CASE WHEN r.period = EXCLUDED.period THEN r.previous
        WHEN r.period = EXCLUDED.period - 1 THEN r.count ELSE 0 END
WHERE (CASE WHEN r.period = EXCLUDED.period THEN r.count + 1 ELSE 1 END)
    + (CASE WHEN r.period = EXCLUDED.period THEN r.previous
        WHEN r.period = EXCLUDED.period - 1 THEN r.count ELSE 0 END)
    * (1 - ((SELECT t FROM clock) - EXCLUDED.period)) <= %(limit)s
RETURNING 1'''

# The generic cell rate algorithm: next_at is when the number would next
# send at its steady rate. A send reserves its slot and is told how long
# to wait for it; up to `tolerance` seconds of sends may go at once.
TAKE_SEND_SLOT = '''
WITH clock AS (SELECT extract(epoch FROM clock_timestamp())::float8 AS now)
INSERT INTO crm_send_pace AS p (sender, next_at, create_uid, create_date)
SELECT %(sender)s, clock.now + %(interval)s, 0, timezone('UTC', now()) FROM clock
ON CONFLICT (sender) DO UPDATE SET
    next_at = GREATEST(p.next_at, (SELECT now FROM clock)) + %(interval)s
RETURNING GREATEST(0, next_at - %(interval)s - %(tolerance)s
    - (SELECT now FROM clock))'''


def shared(database_name):
    """Whether the processes serving this database share their counts
    through it: PostgreSQL, with the database's pool already loaded in this
    process (a name in a request path is not trusted to open a pool)."""
    from trytond.pool import Pool as Pools
    return (backend.name == 'postgresql' and database_name
        and database_name in Pools.database_list())


def _fetch_one(database_name, query, params):
    "One statement on an autocommit connection of the database's pool."
    database = backend.Database(database_name).connect()
    connection = database.get_connection(autocommit=True)
    try:
        with connection.cursor() as cursor:
            cursor.execute(query, params)
            return cursor.fetchone()
    finally:
        database.put_connection(connection)


def count_request(database_name, name, client, limit, seconds):
    """Whether `client` may make one more request under the limit `name`
    (at most `limit` in any `seconds`), counting it if so."""
    return _fetch_one(database_name, COUNT_REQUEST, {
            'name': name, 'client': str(client)[:200], 'limit': limit,
            'seconds': seconds}) is not None


def take_send_slot(database_name, sender, rate, burst):
    """Reserve the next send of the number `sender` at `rate` a second
    (up to `burst` at once) and return the seconds to wait for it."""
    interval = 1 / rate
    wait, = _fetch_one(database_name, TAKE_SEND_SLOT, {
            'sender': str(sender), 'interval': interval,
            'tolerance': max(0.0, burst - 1) * interval})
    return float(wait)


class RateLimit(ModelSQL, ModelView):
    "The requests one client made under one limit, this window and the last."
    __name__ = 'crm.rate_limit'
    __string__ = "Rate Limit"
    limit_name = fields.Char("Limit", required=True)
    client = fields.Char("Client", required=True)
    period = fields.Integer("Window", required=True,
        help="The number of the window: its start divided by its length.")
    count = fields.Integer("Requests", required=True)
    previous = fields.Integer("Requests of the Window Before", required=True)
    counted_at = fields.Timestamp("Counted At", required=True)

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_constraints += [
            ('client_unique', Unique(t, t.limit_name, t.client),
                'kraya_crm.msg_rate_limit_unique'),
            ]
        cls._sql_indexes.add(Index(t, (t.counted_at, Index.Range())))

    @classmethod
    def forget_idle(cls):
        """The cron: forget the clients not heard from for an hour (every
        limit's window is shorter), so the table holds the active ones."""
        table = cls.__table__()
        cursor = Transaction().connection.cursor()
        cursor.execute(*table.delete(
                where=table.counted_at < utcnow() - IDLE))


class SendPace(ModelSQL, ModelView):
    "When a WhatsApp number may send next, shared by every worker."
    __name__ = 'crm.send_pace'
    __string__ = "Send Pace"
    sender = fields.Char("Sender", required=True,
        help="The WhatsApp phone number id the sends go from.")
    next_at = fields.Float("Next Send At", required=True,
        help="Seconds since 1970 (the database's clock) of the number's "
        "next send at its steady rate.")

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_constraints += [
            ('sender_unique', Unique(t, t.sender),
                'kraya_crm.msg_send_pace_unique'),
            ]


class Cron(metaclass=PoolMeta):
    __name__ = 'ir.cron'

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.method.selection.append(
            ('crm.rate_limit|forget_idle', "Forget idle rate-limit clients"))
