"""The cron's processes keep their loaded pool out of the garbage
collector's sight.

trytond-cron loads the pool once in each of its processes and keeps it
for the process's life: about a million objects that are never garbage.
Python's collector walks all of them at every full collection, and the
follow-up engine's tick, which makes tens of thousands of objects, sets one
off every few thousand enrollments (0.1-0.15 s each here). Frozen
(gc.freeze, as Python's documentation advises for long-lived objects), they
are left out: a full collection walks only what came after them."""
import gc

from trytond.pool import PoolMeta

_frozen = False


def freeze_loaded_objects():
    """Move every object alive now to the collector's permanent generation,
    once a process: the first cron run comes after the pool is loaded."""
    global _frozen
    if not _frozen:
        gc.freeze()
        _frozen = True


class Cron(metaclass=PoolMeta):
    __name__ = 'ir.cron'

    @classmethod
    def run(cls, db_name):
        freeze_loaded_objects()
        super().run(db_name)
