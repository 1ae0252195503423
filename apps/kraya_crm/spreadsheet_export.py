"""Download a list as an Excel workbook: the *Spreadsheet (Excel)* entry
of the Print menu of the reports, leads, deals and tasks. The desk's own
export writes CSV only; managers asked for a file Excel opens with its
columns typed (numbers as numbers, dates as dates).

The columns are the list's own (its tree view, in order), the rows the
selected records, or every record the list shows when none is selected
(the report's filters apply: they are in the context). Text is written
safe against formula injection (spreadsheet.py), and only what the user
may read is written: the report checks access as every Tryton report."""
import datetime as dt
from decimal import Decimal
from xml.etree import ElementTree

from trytond.pool import Pool
from trytond.report import Report

from .spreadsheet import xlsx_bytes

# The rows one download holds at most.
LIMIT = 100_000


def list_columns(Model):
    "[(field name, label)] of the model's default list view, in order."
    view = Model.fields_view_get(view_type='tree')
    descriptions = view['fields']
    columns, seen = [], set()
    for node in ElementTree.fromstring(view['arch']).iter('field'):
        name = node.get('name')
        if (name in seen or name not in descriptions
                or node.get('tree_invisible') == '1'
                or node.get('invisible') == '1'):
            continue
        seen.add(name)
        columns.append((name, node.get('string')
                or descriptions[name]['string']))
    return columns


def cell(record, name, description):
    "The value of a field as a spreadsheet cell: typed, or its label."
    value = getattr(record, name, None)
    kind = description['type']
    if value is None:
        return None
    if kind in {'many2one', 'reference'}:
        return value.rec_name
    if kind in {'one2many', 'many2many'}:
        return ", ".join(v.rec_name for v in value)
    if kind == 'selection':
        return dict(description.get('selection') or []).get(value, value)
    if kind == 'multiselection':
        labels = dict(description.get('selection') or [])
        return ", ".join(labels.get(v, v) for v in value)
    if kind == 'timedelta':
        hours, rest = divmod(int(value.total_seconds()), 3600)
        return f'{hours}:{rest // 60:02d}'
    if isinstance(value, (Decimal, int, float, bool, dt.date)):
        return value
    return str(value)


class SpreadsheetExport(Report):
    "The rows of a list as an .xlsx workbook."
    __name__ = 'crm.spreadsheet_export'

    @classmethod
    def execute(cls, ids, data):
        pool = Pool()
        ActionReport = pool.get('ir.action.report')
        action = ActionReport(data['action_id'])
        model = action.model or data.get('model')
        Model = pool.get(model)
        ids = list(map(int, ids))
        cls.check_access(action, model, ids)
        if ids:
            order = {i: n for n, i in enumerate(ids)}
            records = sorted(Model.search([('id', 'in', ids)]),
                key=lambda r: order[r.id])
        else:
            records = Model.search(data.get('domain') or [], limit=LIMIT)
        columns = list_columns(Model)
        descriptions = Model.fields_get([n for n, _ in columns])
        rows = ([cell(r, name, descriptions[name]) for name, _ in columns]
            for r in records)
        title = Model.__string__
        return ('xlsx', xlsx_bytes([label for _, label in columns], rows,
                title=title), False, title)
