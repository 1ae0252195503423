"""Only the indexes a table needs: each one costs every insert and every
update of its columns, and a follow-up tick inserts thousands of messages.

Tryton adds an index on each Many2One that a One2Many points back through,
beside the indexes a model declares. It means to skip one that another
index covers, but compares their table objects, which differ (each
`__table__()` is a new one), so a table kept both: `(lead)` beside
`(lead, at)`, `(deal) WHERE deal IS NOT NULL` beside `(deal)`.
`CoveredIndexes` drops an index whose columns start another full index or
unique key of the table, or that is the partial copy of a full one."""
from sql import Column

from trytond.model import Index, Unique


class CoveredIndexes:
    "A model that keeps none of the indexes another one covers."
    __slots__ = ()

    @classmethod
    def __setup_indexes__(cls):
        super().__setup_indexes__()
        keys = [tuple(c.name for c in constraint.columns)
            for _, constraint, _ in cls._sql_constraints
            if isinstance(constraint, Unique)]
        kept = {index for index in cls._sql_indexes
            if not _covered(index, cls._sql_indexes, keys)}
        # Tryton updates no index of a model that declares none: its old
        # ones would stay, so a model whose keys cover all keeps them.
        if kept:
            cls._sql_indexes = kept


def _columns(index):
    """The names of the index's columns, or None if it is not a plain
    b-tree of columns (an expression, a similarity index)."""
    if not all(isinstance(e, Column)
            and isinstance(u, (Index.Range, Index.Equality))
            for e, u in index.expressions):
        return None
    return tuple(e.name for e, _ in index.expressions)


def _options(index):
    "The index's options that are set (`where=None` is a full index)."
    return {k: v for k, v in index.options.items() if v is not None}


def _covered(index, indexes, keys):
    """Whether a unique key or another full index serves every query
    `index` serves: its columns start with those of `index`, and it has
    more of them or `index` is only partial. (A b-tree serves equality
    and ranges alike; a single column's equality index may be a hash.)"""
    columns = _columns(index)
    options = _options(index)
    if columns is None or set(options) - {'where'}:
        return False
    partial = 'where' in options
    if any(key[:len(columns)] == columns for key in keys):
        return True
    for other in indexes:
        other_columns = _columns(other)
        if (other is index or other_columns is None or _options(other)
                or other_columns[:len(columns)] != columns):
            continue
        if len(other_columns) > len(columns):
            return True
        if partial and other.expressions[0][1] == index.expressions[0][1]:
            return True
    return False
