"""Import of leads from CSV and XLSX files, from the desk (the Import Leads
wizard) and from `./crm import`.

The file is read as a stream: rows are parsed, checked and normalised one
by one and imported in batches; people already known (by phone, WhatsApp
number or email) are attached to as Lead.capture does, not duplicated, and
memory stays flat whatever the size of the file. A bad row is reported
with its row number, column and reason while the good rows go in. Why it
does not hand every row to Lead.capture: docs/decisions.md.

reading   the file, row by row (LeadFile)
mapping   which column is which field (ColumnMap, StateLookup)
parsing   a row's cells to a lead's values (RowParser)
sorting   new, repeated or known people (RowSorter, ChildSorter)
importer  a run over a file, batch by batch (LeadImport)
report    the summary and the problems (ImportSummary, ProblemReport)
lead      Lead.import_file and the lookups of known people
wizard    the desk's Import Leads wizard
"""
from ..exceptions import LeadImportError
from .importer import LeadImport, roomy_sqlite_cache
from .lead import Lead
from .mapping import ColumnMap, StateLookup
from .parsing import RowParser
from .reading import LeadFile
from .report import ImportSummary, ProblemReport
from .wizard import Import, ImportResult, ImportStart

__all__ = ['ColumnMap', 'Import', 'ImportResult', 'ImportStart',
    'ImportSummary', 'Lead', 'LeadFile', 'LeadImport', 'LeadImportError',
    'ProblemReport', 'RowParser', 'StateLookup', 'roomy_sqlite_cache']
