"No table keeps an index that a longer one covers (indexes.py)."
import unittest

from trytond import backend
from trytond.pool import Pool
from trytond.tests.test_tryton import activate_module, with_transaction
from trytond.transaction import Transaction

from ..indexes import CoveredIndexes

# Every b-tree index of a table: its columns, whether it is partial.
PG_INDEXES = '''
SELECT ix.indexrelid::regclass::text, ix.indpred IS NOT NULL,
    ARRAY(SELECT a.attname FROM unnest(ix.indkey) WITH ORDINALITY
        AS k(attnum, n)
        JOIN pg_attribute AS a
            ON a.attrelid = ix.indrelid AND a.attnum = k.attnum
        ORDER BY k.n)
FROM pg_index AS ix
JOIN pg_class AS i ON i.oid = ix.indexrelid
JOIN pg_am AS am ON am.oid = i.relam
WHERE ix.indrelid = %s::regclass AND am.amname = 'btree'
    AND NOT 0 = ANY(ix.indkey)'''


def indexes(table):
    "[(name, columns, partial)] of the table's b-tree indexes."
    cursor = Transaction().connection.cursor()
    if backend.name == 'postgresql':
        cursor.execute(PG_INDEXES, (table,))
        return [(name, tuple(columns), partial)
            for name, partial, columns in cursor]
    cursor.execute(f'PRAGMA index_list("{table}")')
    found = []
    for _, name, _, _, partial in cursor.fetchall():
        cursor.execute(f'PRAGMA index_info("{name}")')
        columns = tuple(column for _, _, column in cursor.fetchall())
        if None not in columns:
            found.append((name, columns, bool(partial)))
    return found


class IndexesTestCase(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        activate_module('kraya_crm')

    @with_transaction()
    def test_no_index_is_the_start_of_a_longer_one(self):
        pool = Pool()
        tables = sorted({Model._table for _, Model in pool.iterobject()
                if issubclass(Model, CoveredIndexes)})
        self.assertIn('crm_message', tables)
        covered = []
        for table in tables:
            found = indexes(table)
            for name, columns, _ in found:
                for other, longer, partial in found:
                    if (not partial and len(longer) > len(columns)
                            and longer[:len(columns)] == columns):
                        covered.append((table, columns, longer))
        self.assertEqual(covered, [])

    @with_transaction()
    def test_message_keeps_the_indexes_its_queries_need(self):
        "What the inbox, the outbox, the engine and the deal's timeline use."
        columns = {c for _, c, _ in indexes('crm_message')}
        self.assertLessEqual({('lead', 'at'), ('status', 'send_after'),
                ('status', 'sending_at'), ('enrollment', 'step'),
                ('channel', 'provider_id'), ('deal',)}, columns)
        self.assertNotIn(('lead',), columns)
        self.assertNotIn(('enrollment',), columns)
