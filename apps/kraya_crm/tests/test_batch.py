"Batches where one bad item never holds up the others (batch.py)."
import unittest
from types import SimpleNamespace

from trytond import backend
from trytond.tests.test_tryton import activate_module, with_transaction

from kraya_crm.batch import run_in_batches
from kraya_crm.exceptions import NoCompanyError


class Work:
    "Items 1..n to do, some of them bad; what was done and set aside."

    def __init__(self, count, bad=(), error=ValueError):
        self.todo = list(range(1, count + 1))
        self.bad, self.error = set(bad), error
        self.done, self.set_aside, self.batches = [], [], []

    def take(self, limit, ids=None):
        todo = [i for i in self.todo if ids is None or i in ids]
        return [SimpleNamespace(id=i) for i in todo[:limit]]

    def write(self, items):
        ids = [item.id for item in items]
        self.batches.append(ids)
        if self.bad & set(ids):
            raise self.error(f"item {sorted(self.bad & set(ids))[0]} is bad")
        self._finish(ids)
        self.done.extend(ids)

    def keep(self, item, exception):
        self._finish([item.id])
        self.set_aside.append((item.id, str(exception)))

    def _finish(self, ids):
        self.todo = [i for i in self.todo if i not in ids]

    def run(self, batch_size):
        run_in_batches(self.take, self.write, self.keep, batch_size)


class RunInBatchesTestCase(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        activate_module('kraya_crm')

    @with_transaction()
    def test_bad_item_is_set_aside_and_its_batch_written(self):
        work = Work(10, bad={2})
        work.run(batch_size=4)
        self.assertEqual(work.done, [1, 3, 4, 5, 6, 7, 8, 9, 10])
        self.assertEqual(work.set_aside, [(2, "item 2 is bad")])

    @with_transaction()
    def test_one_bad_item_costs_its_batch_halvings_not_a_try_each(self):
        work = Work(1024, bad={700})
        work.run(batch_size=1024)
        self.assertEqual(work.set_aside, [(700, "item 700 is bad")])
        self.assertEqual(sorted(work.done),
            [i for i in range(1, 1025) if i != 700])
        # The batch, both halves at each halving down to pairs (9), then
        # the last pair's items alone: the good one once, the bad one twice.
        self.assertEqual(len(work.batches), 1 + 2 * 9 + 1 + 2)
        self.assertEqual(work.batches.count([700]), 2)

    @with_transaction()
    def test_bad_items_in_both_halves_are_each_set_aside(self):
        work = Work(9, bad={1, 6, 9})
        work.run(batch_size=9)
        self.assertEqual([i for i, _ in work.set_aside], [1, 6, 9])
        self.assertEqual(work.done, [2, 3, 4, 5, 7, 8])

    @with_transaction()
    def test_good_batches_are_written_whole(self):
        work = Work(9)
        work.run(batch_size=4)
        self.assertEqual(work.batches, [[1, 2, 3, 4], [5, 6, 7, 8], [9]])

    @with_transaction()
    def test_database_error_is_raised_and_nothing_set_aside(self):
        work = Work(6, bad={5}, error=backend.DatabaseOperationalError)
        with self.assertRaises(backend.DatabaseOperationalError):
            work.run(batch_size=4)
        self.assertEqual((work.done, work.set_aside), ([1, 2, 3, 4], []))
        self.assertEqual(work.todo, [5, 6])

    @with_transaction()
    def test_site_without_company_sets_nothing_aside(self):
        work = Work(2, bad={1}, error=lambda text: NoCompanyError(text))
        with self.assertRaises(NoCompanyError):
            work.run(batch_size=4)
        self.assertEqual((work.todo, work.set_aside), ([1, 2], []))

    @with_transaction()
    def test_item_taken_by_another_worker_meanwhile_is_not_set_aside(self):
        work = Work(3, bad={2})
        real_take = work.take

        def take(limit, ids=None):
            if ids == [2]:
                # Another worker did it between the batch and its retry.
                work._finish([2])
            return real_take(limit, ids)
        work.take = take
        work.run(batch_size=4)
        self.assertEqual((work.done, work.set_aside), ([1, 3], []))
