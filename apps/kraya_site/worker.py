"""The site's queue worker. On PostgreSQL this is trytond-worker, woken by
LISTEN/NOTIFY. SQLite has no notifications and trytond-worker refuses it,
so there one process polls ir.queue: the same tasks, run the same way,
off the request that queued them.

    python -m kraya_site.worker -c sites/default/trytond.conf -d default

trytond-worker keeps one connection to LISTEN and take tasks on. When the
database restarts, that connection is gone and trytond-worker tries it
again forever without reconnecting (its pool's processes reconnect, the
loop does not): it would never take a task again. Here it exits instead,
and its supervisor (supervisord, systemd) starts a new one, which connects
once the database is back. Tasks it was running are put back in the queue
by the cron (kraya_crm/queue.py); none is lost.
"""
import logging
import sys
import time

import trytond.commandline as commandline
import trytond.config as config

logger = logging.getLogger(__name__)
IDLE_SECONDS = 0.2


# The exit status of a worker that lost its database (EX_TEMPFAIL).
EXIT_RECONNECT = 75


class QueueConnectionLost(Exception):
    "trytond-worker's connection to the queue is broken."


def site_queue(Queue):
    """trytond.worker's Queue with two mends:
    - it raises QueueConnectionLost once its own connection (LISTEN, pull)
      is broken, instead of failing the same way forever;
    - with nothing due, it says when the next task scheduled for later is
      due. trytond's pull tells that only along with a task it takes, so
      the worker slept its whole timeout (a minute) past a task queued for
      a few seconds later (an outbox send after WhatsApp's pair limit, a
      retry) unless another task woke it."""
    from trytond import backend

    class SiteQueue(Queue):
        def _check(self, call, *args):
            try:
                return call(*args)
            except backend.DatabaseOperationalError as error:
                if self.connection.broken or self.connection.closed:
                    raise QueueConnectionLost(
                        f"the queue's connection is lost ({error})")
                raise

        def pull(self, name=None):
            task_id, next_ = self._check(super().pull, name)
            if task_id is None and next_ is None:
                next_ = self._check(self._next_scheduled, name)
            return task_id, next_

        def _next_scheduled(self, name=None):
            "Seconds until the next task scheduled for later, or None."
            cursor = self.connection.cursor()
            query = ('SELECT EXTRACT(EPOCH FROM MIN(scheduled_at) '
                '- CURRENT_TIMESTAMP) FROM ir_queue WHERE dequeued_at IS NULL '
                'AND scheduled_at IS NOT NULL')
            params = ()
            if name:
                query += ' AND name = %s'
                params = (name,)
            cursor.execute(query, params)
            seconds, = cursor.fetchone()
            return None if seconds is None else max(float(seconds), 0.01)

        def get_notifications(self):
            return self._check(super().get_notifications)
    return SiteQueue


def poll(database_name, name=None):
    from trytond.pool import Pool
    from trytond.transaction import Transaction
    from trytond.worker import run_task
    with Transaction().start(database_name, 0, readonly=True):
        Pool(database_name).init()
    with Transaction().start(database_name, 0) as transaction:
        # The site's only worker: a task taken and not finished was its
        # predecessor's, which died running it.
        Pool().get('ir.queue').requeue_all_taken()
        transaction.commit()
    logger.info("polling the queue of %s", database_name)
    while True:
        task_id = claim_next(database_name, name)
        if task_id:
            try:
                run_task(database_name, task_id)
            except Exception:
                # Keep serving the other tasks.
                logger.exception("task %s failed", task_id)
        else:
            time.sleep(IDLE_SECONDS)


def claim_next(database_name, name=None):
    """Mark the next due task as taken and return its id. ir.queue's own
    pull needs RETURNING or a CTE SQLite rejects, so claim it in two steps
    inside SQLite's single-writer transaction."""
    import datetime as dt

    from sql import Null

    from trytond.pool import Pool
    from trytond.transaction import Transaction
    with Transaction().start(database_name, 0) as transaction:
        queue = Pool().get('ir.queue').__table__()
        cursor = transaction.connection.cursor()
        now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        where = (queue.dequeued_at == Null) & (
            (queue.scheduled_at == Null) | (queue.scheduled_at <= now))
        if name:
            where &= queue.name == name
        cursor.execute(*queue.select(queue.id, where=where,
                order_by=[queue.scheduled_at.nulls_first,
                    queue.expected_at.nulls_first], limit=1))
        row = cursor.fetchone()
        if not row:
            return None
        cursor.execute(*queue.update([queue.dequeued_at], [now],
                where=(queue.id == row[0]) & (queue.dequeued_at == Null)))
        transaction.commit()
        return row[0]


def main():
    parser = commandline.get_parser_worker()
    options = parser.parse_args()
    config.update_etc(options.configfile)
    commandline.config_log(options)
    from trytond import backend
    if backend.name != 'sqlite':
        import trytond.worker as worker
        from trytond.pool import Pool
        Pool.start()
        worker.Queue = site_queue(worker.Queue)
        try:
            worker.work(options)
        except QueueConnectionLost as exception:
            logger.error("%s: exiting, for the supervisor to start a worker "
                "that connects again", exception)
            sys.exit(EXIT_RECONNECT)
        return
    if not config.getboolean('queue', 'worker', default=False):
        logger.info("[queue] worker is off: tasks run in the request")
        return
    from sql import Flavor
    from trytond.pool import Pool
    Flavor.set(backend.Database.flavor)
    Pool.start()
    database_name, = options.database_names
    poll(database_name, options.name)


if __name__ == '__main__':
    try:
        main()
    except KeyboardInterrupt:
        pass
