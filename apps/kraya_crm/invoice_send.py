"""Send on WhatsApp: the invoice's PDF goes to the customer's lead as a
document message through the outbox (so it is retried, statuses come
back, and it is on the lead's timeline). Outside WhatsApp's 24-hour
window the outbox sends it as the utility template `invoice_issued`
(`[kraya_crm] invoice_template`), whose document header carries the PDF."""
import json

from trytond.i18n import gettext
from trytond.model import ModelView
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Eval
from trytond.transaction import without_check_access

from .exceptions import InvoiceSendError
from .http import setting
from .invoice_report import inr

TEMPLATE = 'invoice_issued'
# The utility template to have approved by Meta, with a document header.
TEMPLATE_BODY = ("Namaste {{1}}, your invoice {{2}} for {{3}} is attached. "
    "Thank you for your business.")


class Invoice(metaclass=PoolMeta):
    __name__ = 'account.invoice'

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._buttons.update({
                'send_whatsapp': {
                    'invisible': ((Eval('type') != 'out')
                        | ~Eval('state').in_(['posted', 'paid'])),
                    'depends': ['type', 'state'],
                    },
                })

    def customer_lead(self):
        "The lead the invoice goes to: its deal's, else the customer's."
        pool = Pool()
        Deal = pool.get('crm.deal')
        sales = {l.origin.sale for l in self.lines
            if l.origin and l.origin.__name__ == 'sale.line'}
        deals = Deal.search([('sale', 'in', [s.id for s in sales])],
            limit=1) if sales else []
        if deals and deals[0].lead:
            return deals[0].lead, deals[0]
        leads = [l for l in self.party.crm_leads if l.whatsapp_number]
        return (leads[0] if leads else None), (deals[0] if deals else None)

    @classmethod
    @ModelView.button
    def send_whatsapp(cls, invoices):
        cls.queue_whatsapp(invoices)

    @classmethod
    def queue_whatsapp(cls, invoices):
        "Queue each invoice's PDF to its customer's WhatsApp; the messages."
        pool = Pool()
        Message = pool.get('crm.message')
        Attachment = pool.get('ir.attachment')
        Report = pool.get('account.invoice.gst', type='report')
        messages = []
        for invoice in invoices:
            lead, deal = invoice.customer_lead()
            if not lead or not lead.whatsapp_number:
                raise InvoiceSendError(gettext(
                        'kraya_crm.msg_invoice_no_whatsapp',
                        invoice=invoice.rec_name,
                        party=invoice.party.rec_name))
            extension, content, _, _ = Report.execute([invoice.id], {})
            name = f"{invoice.number.replace('/', '-')}.{extension}"
            # The outbox reads the file as the system: it is the lead's.
            with without_check_access():
                attachment = Attachment(resource=lead, name=name,
                    type='data', data=content)
                attachment.save()
            total = inr(invoice.total_amount)
            messages.append(Message(lead=lead, deal=deal,
                    direction='outbound', channel='whatsapp',
                    status='queued', kind='document', attempts=0,
                    address=lead.whatsapp_number, media=attachment,
                    body=gettext('kraya_crm.msg_invoice_caption',
                        number=invoice.number, total=total),
                    template_name=setting('invoice_template', TEMPLATE, str),
                    template_language='en',
                    template_parameters=json.dumps([
                            lead.name, invoice.number, total])))
        with without_check_access():
            Message.save(messages)
            Message.wake_outbox()
        return messages
