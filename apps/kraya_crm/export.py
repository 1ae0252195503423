"""The records people type into, exported from the desk safely (see
spreadsheet.FormulaSafeExport): leads and web forms fill them from outside."""
from trytond.pool import PoolMeta

from .spreadsheet import FormulaSafeExport


class Lead(FormulaSafeExport, metaclass=PoolMeta):
    __name__ = 'crm.lead'


class Deal(FormulaSafeExport, metaclass=PoolMeta):
    __name__ = 'crm.deal'


class Task(FormulaSafeExport, metaclass=PoolMeta):
    __name__ = 'crm.task'


class Party(FormulaSafeExport, metaclass=PoolMeta):
    __name__ = 'party.party'
