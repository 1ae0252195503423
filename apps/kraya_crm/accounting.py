"""The Indian accounting of a company, set up as an accountant would with
Tryton's own wizards: the chart of accounts and GST taxes from
the module's templates (kraya_crm/account_in.xml) by "Create Chart", the
receivable and payable accounts, the tax rule "GST by place of supply" as
every party's default, the fiscal year April-March with its invoice
series, cash and bank payment methods, and one product category per GST
rate, so that a product gets its taxes by picking its rate.

./crm new-site and the demo run it (kraya_site/business.py); on a site
made before invoicing the administrator runs it from the company form
("Set Up Indian Accounting"). It does nothing twice: a company that has a
chart keeps it, and only its fiscal year of today is made if missing."""
from trytond.model import ModelView
from trytond.pool import Pool, PoolMeta
from trytond.transaction import Transaction

CHART = 'kraya_crm.account_template_root_in'
TAX_RULE = 'kraya_crm.tax_rule_gst_place_of_supply'
# product category name, GST rate template (kraya_crm.tax_gst_sale_<rate>)
RATE_CATEGORIES = [
    ("GST 0% (nil rated)", '0'),
    ("GST 3% (gold, silver, jewellery)", '3'),
    ("GST 5%", '5'),
    ("GST 18%", '18'),
    ("GST 28% (tobacco)", '28'),
    ("GST 40%", '40'),
    ("GST 12% (retired 22 Sep 2025)", '12'),
    ]
# payment method name, journal code, account code
PAYMENT_METHODS = [
    ("Cash", 'CASH', '1200'),
    ("Bank transfer / UPI", 'BANK', '1210'),
    ]


class Company(metaclass=PoolMeta):
    __name__ = 'company.company'

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._buttons.update({'set_up_indian_accounting': {}})

    @classmethod
    @ModelView.button
    def set_up_indian_accounting(cls, companies):
        for company in companies:
            set_up(company)


def set_up(company):
    "The company's Indian accounting; returns its fiscal year of today."
    pool = Pool()
    Account = pool.get('account.account')
    FiscalYear = pool.get('account.fiscalyear')
    Date = pool.get('ir.date')
    with Transaction().set_context(company=company.id):
        if not Account.search([('company', '=', company.id)], limit=1):
            create_chart(company)
            set_defaults(company)
            create_payment_methods(company)
            create_rate_categories(company)
        return FiscalYear.indian_year(company, Date.today())


def template(xml_id):
    pool = Pool()
    ModelData = pool.get('ir.model.data')
    module, name = xml_id.split('.')
    return ModelData.get_id(module, name)


def of_template(Model, company, xml_id):
    "The company's record made from the template `xml_id`."
    record, = Model.search([
            ('company', '=', company.id), ('template', '=', template(xml_id)),
            ])
    return record


def account(company, code):
    Account = Pool().get('account.account')
    record, = Account.search([
            ('company', '=', company.id), ('code', '=', code)])
    return record


def create_chart(company):
    "Tryton's Create Chart wizard, with our chart, as the desk runs it."
    pool = Pool()
    CreateChart = pool.get('account.create_chart', type='wizard')
    AccountTemplate = pool.get('account.account.template')
    session_id, _, _ = CreateChart.create()
    try:
        wizard = CreateChart(session_id)
        wizard.account.company = company
        wizard.account.account_template = AccountTemplate(template(CHART))
        wizard.transition_create_account()
        wizard.properties.company = company
        wizard.properties.account_receivable = account(company, '1100')
        wizard.properties.account_payable = account(company, '2100')
        wizard.transition_create_properties()
    finally:
        CreateChart.delete(session_id)


def set_defaults(company):
    "Every party's taxes follow the place of supply; revenue to sales."
    pool = Pool()
    Configuration = pool.get('account.configuration')
    TaxRule = pool.get('account.tax.rule')
    PaymentTerm = pool.get('account.invoice.payment_term')
    rule = of_template(TaxRule, company, TAX_RULE)
    immediate = PaymentTerm(name="Due on receipt",
        lines=[{'type': 'remainder'}])
    immediate.save()
    configuration = Configuration(1)
    configuration.default_customer_tax_rule = rule
    configuration.default_supplier_tax_rule = rule
    configuration.default_customer_payment_term = immediate
    configuration.default_category_account_revenue = account(company, '4100')
    configuration.default_category_account_expense = account(company, '5100')
    configuration.save()


def create_payment_methods(company):
    "Cash and bank, for the invoice's Pay button."
    pool = Pool()
    Journal = pool.get('account.journal')
    Method = pool.get('account.invoice.payment.method')
    methods = []
    for name, code, account_code in PAYMENT_METHODS:
        journals = Journal.search([('code', '=', code)], limit=1)
        if journals:
            journal, = journals
        else:
            journal = Journal(name="Bank", code=code, type='cash')
            journal.save()
        cash = account(company, account_code)
        methods.append(Method(name=name, company=company, journal=journal,
                debit_account=cash, credit_account=cash))
    Method.save(methods)


def create_rate_categories(company):
    "A product category per GST rate: a product picks its rate by it."
    pool = Pool()
    Category = pool.get('product.category')
    Tax = pool.get('account.tax')
    revenue, expense = account(company, '4100'), account(company, '5100')
    categories = []
    for name, rate in RATE_CATEGORIES:
        categories.append(Category(name=name, accounting=True,
                account_revenue=revenue, account_expense=expense,
                customer_taxes=[of_template(Tax, company,
                        f'kraya_crm.tax_gst_sale_{rate}')],
                supplier_taxes=[of_template(Tax, company,
                        f'kraya_crm.tax_gst_purchase_{rate}')]))
    Category.save(categories)


def rate_category(rate):
    "The product category of a GST rate ('18')."
    Category = Pool().get('product.category')
    name = dict((r, n) for n, r in RATE_CATEGORIES)[rate]
    category, = Category.search([('name', '=', name)], limit=1)
    return category


