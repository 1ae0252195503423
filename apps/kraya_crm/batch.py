"""Work done in batches (WhatsApp deliveries waiting in the inbox): one bad
item never holds up the good ones beside it.

- Each batch is taken, written and marked done in a transaction of its
  own; the caller's transaction writes nothing. On SQLite a write there
  would hold the database's only write lock against every batch after it.
- A batch that fails because of what it holds is written again in
  halves, each in its own transaction, and a half that fails in halves
  again, down to the item that fails alone: only it is set aside (for the
  inbox: kept as a dead letter). One bad item among 5,000 costs about 26
  transactions, not 5,000.
- A database error (a lock, a lost connection) or a site without a
  company is not the items' fault: it is raised, the items stay to be
  done, and the task (or the next cron run) tries them again."""
import logging

from trytond import backend
from trytond.transaction import Transaction

from .exceptions import NoCompanyError

logger = logging.getLogger(__name__)


def is_transient(exception):
    "An error that says nothing of the items: trying again may succeed."
    return isinstance(exception,
        (backend.DatabaseOperationalError, NoCompanyError))


def run_in_batches(take, write, set_aside, batch_size, tries_alone=2):
    """Do every item `take` finds, batch after batch.

    take(limit, ids=None) locks and returns up to `limit` items still to
    do (only those among `ids` when given); write(items) does them and
    marks them done; set_aside(item, exception) records one that cannot
    be done and marks it done too. An item that fails alone is tried
    `tries_alone` times before it is set aside: another worker storing
    the same thing at once fails the first try on a unique key."""
    while True:
        with Transaction().new_transaction() as transaction:
            items = take(batch_size)
            ids = [item.id for item in items]
            failure = _written(transaction, write, items)
        if failure is not None:
            logger.info("batch of %s failed (%s): in halves",
                len(ids), failure)
            _write_in_halves(take, write, set_aside, ids, tries_alone)
        if len(ids) < batch_size:
            return


def _written(transaction, write, items):
    """Write the items in this transaction; the exception they caused, if
    any, after rolling it back. Transient errors are raised."""
    if not items:
        return None
    try:
        write(items)
    except Exception as exception:
        if is_transient(exception):
            raise
        transaction.rollback()
        return exception
    return None


def _write_in_halves(take, write, set_aside, ids, tries_alone):
    """Write the items of `ids`, whose batch failed, half after half, each
    in a transaction of its own; a half that fails is halved again, and a
    lone item is tried alone."""
    if len(ids) == 1:
        _write_alone(take, write, set_aside, ids[0], tries_alone)
        return
    middle = len(ids) // 2
    for half in (ids[:middle], ids[middle:]):
        if len(half) > 1:
            with Transaction().new_transaction() as transaction:
                # Those another worker did meanwhile are no longer taken.
                items = take(len(half), ids=half)
                failure = _written(transaction, write, items)
            if failure is None:
                continue
            half = [item.id for item in items]
        _write_in_halves(take, write, set_aside, half, tries_alone)


def _write_alone(take, write, set_aside, item_id, tries):
    for _ in range(tries):
        with Transaction().new_transaction() as transaction:
            items = take(1, ids=[item_id])
            if not items:
                # Done or set aside meanwhile by another worker.
                return
            failure = _written(transaction, write, items)
        if failure is None:
            return
    with Transaction().new_transaction():
        items = take(1, ids=[item_id])
        if items:
            set_aside(items[0], failure)
