# Kraya CRM: leads, deals and follow-ups for small Indian sales teams.
# The classes are registered from tryton.cfg; importing them (whatsapp.py,
# web_form.py) also registers their HTTP routes. Keep this file free of
# trytond imports: ./crm imports the package before trytond is configured.
