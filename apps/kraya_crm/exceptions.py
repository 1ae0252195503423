from trytond.exceptions import UserError
from trytond.model.exceptions import ValidationError


class InvalidPhoneError(ValidationError):
    pass


class LeadConvertError(ValidationError):
    pass


class WebFormSettingError(ValidationError):
    pass


class SubmissionRefused(ValidationError):
    pass


class LeadImportError(UserError):
    "The file cannot be imported at all (as opposed to a bad row)."


class NoCompanyError(UserError):
    "The site has no company: nothing from outside can become a lead."


class MailSettingError(UserError):
    "A setting emails need (the link secret) is missing."


class MergeError(ValidationError):
    pass


class SequenceValidationError(ValidationError):
    pass


class InboxRefusal(UserError):
    """What the team inbox cannot do, with the code its page reads beside
    the message it shows."""

    def __init__(self, code, message, **details):
        super().__init__(message)
        self.code = code
        # More for the page to read (the fields a stage asks for).
        self.details = details


class MediaError(UserError):
    "A file WhatsApp does not take: its type or its size."


class ButtonsError(ValidationError):
    "Reply buttons WhatsApp refuses: more than three, or a long title."


class TemplateSyncError(UserError):
    "The template catalogue could not be read from Meta."


class BusinessCalendarError(ValidationError):
    pass


class AssignmentRuleError(ValidationError):
    pass


class TaskOutcomeError(ValidationError):
    "An outcome that is not one of the task's kind (a site visit 'busy')."


class ScoringRuleError(ValidationError):
    pass


class GstinError(ValidationError):
    "A GSTIN that is malformed, fails its check character or its state."


class HsnSacError(ValidationError):
    pass


class InvoiceNumberError(ValidationError):
    "An invoice number Rule 46 does not allow, or taken in its year."


class QuotationError(UserError):
    "A deal that cannot become a quotation (no customer, no lines)."


class DealInvoicedError(UserError):
    "A deal whose posted invoice stands in the way (lost, deleted)."


class EInvoiceError(UserError):
    "An invoice that cannot be exported as INV-01, or an IRN refused."


class UpiError(ValidationError):
    "A UPI address (VPA) that is not one."


class InvoiceSendError(UserError):
    "An invoice that cannot be sent on WhatsApp."


class PrivacyError(UserError):
    pass


class SalesTargetError(ValidationError):
    pass
