"""What each role may do, declared once: every model of the module (and
the party, sale and invoice models it works with), every button, every
wizard, and the fields some roles may not see.

tests/test_permission_matrix.py proves each entry over real JSON-RPC on a
running demo site; test_permission_table.py (here) fails when the pool has
a model, button or wizard this table does not declare, so a model added
without deciding who may use it cannot land.

Roles are the demo's users: the CRM Manager, a Sales Rep, a Field Agent,
the Accountant, and `nobody`, a user of the company in no CRM group.
Access is model access here; which records of a model a role reaches is
the record rules' work (tests/test_record_rules_rpc.py)."""

ROLES = ('manager', 'rep', 'agent', 'accountant', 'nobody')

# The letters a role gets on a model: r read and search, w write,
# c create, d delete.
FULL, READ, NONE = 'rwcd', 'r', ''
# Settings the manager keeps and every CRM user reads; nobody else.
SETTINGS = dict(manager=FULL, rep=READ, agent=READ, accountant=READ,
    nobody=NONE)
# What the sales team works on; the accountant reads it all.
SALES_WORK = dict(manager=FULL, rep='rwc', agent='rwc', accountant=READ,
    nobody=NONE)
# The sales team's reports (reporting.py).
SALES_REPORT = dict(manager=READ, rep=READ, agent=NONE, accountant=NONE,
    nobody=NONE)

MODELS = {
    # The integration API's keys: administrators only (not a CRM role).
    'crm.api.key': dict.fromkeys(ROLES, NONE),
    'crm.assignment.rule': dict(SETTINGS, accountant=NONE),
    # Rules act without the access rules of who triggered them: only the
    # manager writes them; every CRM user sees them and their runs.
    'crm.automation.action': SETTINGS,
    'crm.automation.rule': SETTINGS,
    'crm.automation.run': dict(SETTINGS, manager=READ),
    'crm.business_calendar': SETTINGS,
    'crm.business_calendar.holiday': SETTINGS,
    # A singleton: it is written, never created or deleted.
    'crm.configuration': dict(SETTINGS, manager='rw'),
    'crm.conversation': SALES_WORK,
    'crm.dead_letter': dict(manager='rwd', rep=NONE, agent=NONE,
        accountant=NONE, nobody=NONE),
    'crm.deal': dict(SALES_WORK, agent='rw'),
    # A field agent sees no money (the deal's value and lines).
    'crm.deal.line': dict(SALES_WORK, rep=FULL, agent=NONE),
    # Written by the deal's stage changes only.
    'crm.deal.stage_history': dict(manager=READ, rep=READ, agent=READ,
        accountant=READ, nobody=NONE),
    'crm.enrollment': SALES_WORK,
    # What happened, for the webhooks (event.py): written by the system.
    'crm.event': dict(manager=READ, rep=NONE, agent=NONE, accountant=NONE,
        nobody=NONE),
    'crm.lead': SALES_WORK,
    'crm.lead.consent': SALES_WORK,
    'crm.lead.merge_log': SALES_WORK,
    # The score's own rows follow the lead's access (__access__); the
    # field agent's rule shows them none (FIELDS below).
    'crm.lead.score_event': SALES_WORK,
    'crm.lead.score_line': SALES_WORK,
    'crm.message': SALES_WORK,
    # What was exported, erased and purged, and the erased people's
    # hashes: managers read them; only the system writes (privacy.py).
    'crm.privacy.log': dict(manager=READ, rep=NONE, agent=NONE,
        accountant=NONE, nobody=NONE),
    'crm.privacy.suppression': dict(manager=READ, rep=NONE, agent=NONE,
        accountant=NONE, nobody=NONE),
    # A report (table_query): only read means something.
    # What the processes share to keep one rate (throttle.py): the
    # system's own counts, no user's business.
    'crm.rate_limit': dict.fromkeys(ROLES, NONE),
    'crm.send_pace': dict.fromkeys(ROLES, NONE),
    'crm.report.first_response': dict(manager=READ, rep=NONE, agent=NONE,
        accountant=NONE, nobody=NONE),
    # The desk's reports: a rep reads their own figures (the reports
    # count only the records the rules let the user read).
    'crm.reporting.funnel': SALES_REPORT,
    'crm.reporting.lost_reason': SALES_REPORT,
    'crm.reporting.rep': SALES_REPORT,
    'crm.reporting.source': SALES_REPORT,
    'crm.reporting.forecast': SALES_REPORT,
    'crm.reporting.sequence': SALES_REPORT,
    'crm.reporting.sequence_step': SALES_REPORT,
    'crm.scoring.model': dict(SETTINGS, manager='rwc'),
    'crm.scoring.rule': SETTINGS,
    'crm.sequence': dict(SETTINGS),
    'crm.sequence.step': dict(SETTINGS),
    'crm.source': SETTINGS,
    # What a source cost a month: money, which a field agent never sees.
    'crm.source.cost': dict(SETTINGS, agent=NONE),
    # Monthly targets: the manager sets them, a rep or field agent reads
    # their own (the record rule), the accountant none.
    'crm.sales.target': dict(SETTINGS, accountant=NONE),
    'crm.stage': SETTINGS,
    'crm.task': dict(SALES_WORK, rep=FULL),
    'crm.tag': SETTINGS,
    'crm.team': SETTINGS,
    # Outgoing webhooks: the URLs and secrets are the manager's; only the
    # worker writes deliveries and their tries (webhook.py).
    'crm.webhook': dict(manager=FULL, rep=NONE, agent=NONE, accountant=NONE,
        nobody=NONE),
    'crm.webhook.attempt': dict(manager=READ, rep=NONE, agent=NONE,
        accountant=NONE, nobody=NONE),
    # Written by the manager only through Replay (its fields are read-only).
    'crm.webhook.delivery': dict(manager='rw', rep=NONE, agent=NONE,
        accountant=NONE, nobody=NONE),
    'crm.whatsapp.inbox': dict(manager=READ, rep=NONE, agent=NONE,
        accountant=NONE, nobody=NONE),
    'crm.whatsapp.template': dict(SETTINGS, manager='rwc'),
    # Customers: the sales team and the accountant keep them; anyone of
    # the company may look one up; only a manager deletes one.
    'party.party': dict(manager=FULL, rep='rwc', agent='rwc',
        accountant='rwc', nobody=READ),
    # Quotations are the sales team's (Tryton's Sales group); the
    # accountant reads them to invoice. A field agent sees no money.
    'sale.sale': dict(manager=FULL, rep=FULL, agent=NONE, accountant=READ,
        nobody=NONE),
    # Invoices are accounting's: the sales team reads them, only the
    # accountant makes, posts and pays them.
    'account.invoice': dict(manager=READ, rep=READ, agent=NONE,
        accountant=FULL, nobody=NONE),
    }

# Tables of a many-to-many field: not on RPC at all (403), reached only
# through their field, with its model's access.
RELATIONS = {
    'crm.assignment.rule-country.subdivision',
    'crm.assignment.rule-crm.source',
    'crm.deal-crm.tag',
    'crm.lead-crm.tag',
    'crm.message-res.user',
    'crm.team-res.user',
    }

# Models whose rows are views of others: only read is tried.
REPORTS = {'crm.report.first_response', 'crm.reporting.funnel',
    'crm.reporting.lost_reason', 'crm.reporting.rep', 'crm.reporting.source',
    'crm.reporting.sequence', 'crm.reporting.sequence_step',
    'crm.reporting.forecast'}
SINGLETONS = {'crm.configuration'}

# Models of ours that store nothing (a wizard's form, a page's API): they
# must offer nothing over RPC but what every view offers.
VIEW_ONLY = {
    'crm.api.key.create.done', 'crm.api.key.create.start',
    'crm.automation.dry_run.result',
    'crm.board', 'crm.dashboard', 'crm.enrollment.enrol.start', 'crm.inbox',
    'crm.lead.import.result',
    'crm.lead.import.start', 'crm.lead.merge.start',
    'crm.lead.privacy_export.start',
    'crm.lead.reassign.start', 'crm.my_day',
    'crm.report.first_response.context', 'crm.reporting.context',
    'crm.task.finish.start',
    'crm.whatsapp.template.sync.done', 'crm.whatsapp.template.sync.start',
    'crm.whatsapp.webhook',
    }

SALES_TEAM = {'manager', 'rep'}
IN_THE_FIELD = {'manager', 'rep', 'agent'}
BUTTONS = {
    # Administrators only: no CRM role.
    ('crm.api.key', 'revoke'): set(),
    ('crm.automation.rule', 'dry_run'): {'manager'},
    ('crm.dead_letter', 'ignore'): {'manager'},
    ('crm.dead_letter', 'replay'): {'manager'},
    ('crm.deal', 'create_quotation'): SALES_TEAM,
    ('crm.deal', 'open_quotation'): {'manager', 'rep', 'accountant'},
    ('crm.enrollment', 'pause'): SALES_TEAM,
    ('crm.enrollment', 'resume'): SALES_TEAM,
    ('crm.enrollment', 'stop'): SALES_TEAM,
    ('crm.lead', 'convert'): SALES_TEAM,
    # A person's rights (DPDP Act): the manager answers them.
    ('crm.lead', 'erase_personal_data'): {'manager'},
    ('crm.lead', 'export_personal_data'): {'manager'},
    ('crm.lead', 'merge'): SALES_TEAM,
    ('crm.lead', 'open_inbox'): IN_THE_FIELD,
    ('crm.scoring.model', 'train'): {'manager'},
    ('crm.source', 'regenerate_key'): {'manager'},
    ('crm.task', 'cancel'): IN_THE_FIELD,
    ('crm.task', 'done'): IN_THE_FIELD,
    ('crm.task', 'reopen'): IN_THE_FIELD,
    ('crm.webhook', 'new_secret'): {'manager'},
    ('crm.webhook.delivery', 'replay'): {'manager'},
    }

# Tryton's own buttons of the sale and the invoice, as the CRM's roles
# meet them.
SALE_BUTTONS = {button: SALES_TEAM for button in [
        'cancel', 'confirm', 'draft', 'handle_invoice_exception',
        'handle_shipment_exception', 'manual_shipment', 'modify_header',
        'quote']}
SALE_BUTTONS.update({'manual_invoice': SALES_TEAM | {'accountant'},
        # Run by the system as a sale moves on, by nobody's hand.
        'process': set()})
INVOICE_BUTTONS = {button: {'accountant'} for button in [
        'cancel', 'delegate_lines_to_pay', 'draft', 'einvoice', 'pay',
        'post', 'reschedule_lines_to_pay', 'send_whatsapp',
        'validate_invoice']}
INVOICE_BUTTONS['process'] = set()
BUTTONS.update({('sale.sale', b): roles for b, roles in SALE_BUTTONS.items()})
BUTTONS.update({('account.invoice', b): roles
        for b, roles in INVOICE_BUTTONS.items()})

WIZARDS = {
    'crm.api.key.create': set(),
    'crm.automation.dry_run': {'manager'},
    'crm.enrollment.enrol': SALES_TEAM,
    'crm.lead.import': SALES_TEAM,
    'crm.lead.merge': SALES_TEAM,
    'crm.lead.privacy_export': {'manager'},
    'crm.lead.reassign': {'manager'},
    'crm.task.finish': IN_THE_FIELD,
    'crm.whatsapp.template.sync': {'manager'},
    }

# (model, field): the roles that may NOT read it. A field agent never
# gets a lead's value to the business: its score, source or campaign, a
# deal's value. '*' is every row of the model: the rule shows the role
# none of them.
HIDDEN = {
    ('crm.lead', 'score'): {'agent'},
    ('crm.lead', 'score_lines'): {'agent'},
    ('crm.lead', 'score_events'): {'agent'},
    ('crm.lead', 'win_probability'): {'agent'},
    ('crm.lead', 'win_reasons'): {'agent'},
    ('crm.lead', 'source'): {'agent'},
    ('crm.lead', 'campaign'): {'agent'},
    ('crm.deal', 'value'): {'agent'},
    ('crm.deal', 'value_text'): {'agent'},
    # The deal's quotation and invoicing: money, as its value; reps see
    # the state and amounts, not the invoices themselves (accounting's).
    ('crm.deal', 'sale'): {'agent'},
    ('crm.deal', 'invoices'): {'agent', 'rep'},
    ('crm.deal', 'amount_invoiced'): {'agent'},
    ('crm.deal', 'amount_due'): {'agent'},
    ('crm.lead.score_line', '*'): {'agent'},
    ('crm.lead.score_event', '*'): {'agent'},
    }

# Beside crm.*: the models of other modules the CRM works with.
OTHER_MODELS = ('party.party', 'sale.sale', 'account.invoice')
