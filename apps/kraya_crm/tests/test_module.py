from trytond.modules.company.tests import CompanyTestMixin
from trytond.tests.test_tryton import ModuleTestCase


class KrayaCrmTestCase(CompanyTestMixin, ModuleTestCase):
    "Checks views, access, depends and fields of the module."
    module = 'kraya_crm'


del ModuleTestCase
