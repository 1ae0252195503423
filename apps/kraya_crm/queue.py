"""Tasks a dead worker left in the queue are run again.

trytond-worker marks a task taken (dequeued_at, committed at once) before
it runs it, and finished in the task's own transaction. A worker killed in
between (out of memory, a deploy, SIGKILL) or a task whose database went
away leaves it taken and never finished: nothing runs it again, and a lead
captured then would never be assigned.

So a running task holds the lock of its ir.queue row for its whole
transaction (trytond restarts the transaction with the row locked, its
usual way for record locks). Every minute the cron takes the rows that are
taken, unfinished and not locked by anyone, i.e. whose worker is gone, and
puts them back in the queue (SKIP LOCKED: a running task is never touched).
A task that fails each time it runs is put back at most MAX_REQUEUES times,
then left as trytond leaves a failed task. A task the database failed is
pushed again by trytond itself as a new task: the original is marked
finished, not put back as well. Our tasks may run twice: each
claims its rows itself (the outbox, the WhatsApp inbox, assignment of the
leads still without an owner, media not fetched yet).

SQLite has no row locks to tell a dead worker from a running one; a site
there runs one worker, which puts back what its predecessor left when it
starts (kraya_site.worker)."""
import datetime as dt
import logging

from sql import Null
from sql.conditionals import Coalesce
from sql.functions import CurrentTimestamp

from trytond.model import fields
from trytond.pool import PoolMeta
from trytond.transaction import Transaction

logger = logging.getLogger(__name__)
MAX_REQUEUES = 5
# A task taken this recently may still be on its way to its worker's pool.
GRACE = dt.timedelta(seconds=60)


class Queue(metaclass=PoolMeta):
    __name__ = 'ir.queue'
    requeued = fields.Integer("Requeued",
        help="How many times the task was put back after its worker died.")

    @classmethod
    def default_requeued(cls):
        return 0

    def run(self):
        # The lock tells the cron this task's worker is alive.
        self.__class__.lock([self])
        super().run()

    @classmethod
    def requeue_abandoned(cls):
        "The cron: put back the tasks of workers that died running them."
        transaction = Transaction()
        database = transaction.database
        if not database.has_select_for():
            return
        table = cls.__table__()
        cursor = transaction.connection.cursor()
        # dequeued_at is the database's clock (ir.queue.pull).
        query = table.select(table.id, table.name, table.requeued,
            where=(table.dequeued_at != Null) & (table.finished_at == Null)
            & (table.dequeued_at < CurrentTimestamp() - GRACE),
            order_by=[table.id.asc], limit=1000)
        query.for_ = database.get_select_for_skip_locked()('UPDATE')
        cursor.execute(*query)
        left = cursor.fetchall()
        superseded = cls._superseded([task_id for task_id, _, _ in left])
        requeue, handed_over = [], []
        for task_id, name, requeued in left:
            if task_id in superseded:
                handed_over.append(task_id)
            elif (requeued or 0) < MAX_REQUEUES:
                logger.warning("task %s (%s) was left by a worker that "
                    "died: queued again", task_id, name)
                requeue.append(task_id)
        if handed_over:
            # trytond queued them again itself, after the database failed
            # them: the copy runs, the original is done with.
            cursor.execute(*table.update([table.finished_at],
                    [CurrentTimestamp()], where=table.id.in_(handed_over)))
        if requeue:
            cursor.execute(*table.update(
                    [table.dequeued_at, table.requeued],
                    [None, Coalesce(table.requeued, 0) + 1],
                    where=table.id.in_(requeue)))
            database.notify(transaction.connection, cls.__name__, '')
        return requeue

    @classmethod
    def _superseded(cls, ids):
        """The tasks among ids that trytond's worker pushed again as a new
        task (the same method and data) after the database failed them."""
        if not ids:
            return set()
        table = cls.__table__()
        later = cls.__table__()
        cursor = Transaction().connection.cursor()
        cursor.execute(*table.join(later, condition=(later.id > table.id)
                & (later.name == table.name) & (later.data == table.data)
                ).select(table.id, where=table.id.in_(ids), group_by=[table.id]))
        return {task_id for task_id, in cursor}

    @classmethod
    def requeue_all_taken(cls):
        """Put back every task taken and not finished: only when no worker
        can be running one (SQLite's single worker, as it starts)."""
        table = cls.__table__()
        cursor = Transaction().connection.cursor()
        cursor.execute(*table.update(
                [table.dequeued_at, table.requeued],
                [None, Coalesce(table.requeued, 0) + 1],
                where=(table.dequeued_at != Null) & (table.finished_at == Null)
                & (Coalesce(table.requeued, 0) < MAX_REQUEUES)))


class Cron(metaclass=PoolMeta):
    __name__ = 'ir.cron'

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.method.selection.append(
            ('ir.queue|requeue_abandoned',
                "Run again the tasks of workers that died"))
