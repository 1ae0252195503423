"""The CRM's settings that a manager changes in the desk (CRM ›
Configuration › Settings), one record per site. Settings of the server
(secrets, limits, provider addresses) stay in trytond.conf."""
from trytond.model import ModelSingleton, ModelSQL, ModelView


class Configuration(ModelSingleton, ModelSQL, ModelView):
    "CRM Settings"
    __name__ = 'crm.configuration'
    __string__ = "CRM Settings"
