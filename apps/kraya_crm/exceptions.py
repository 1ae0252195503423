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

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


class ScoringRuleError(ValidationError):
    pass
