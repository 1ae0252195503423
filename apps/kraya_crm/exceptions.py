from trytond.model.exceptions import ValidationError


class InvalidPhoneError(ValidationError):
    pass


class LeadConvertError(ValidationError):
    pass


class WebFormSettingError(ValidationError):
    pass


class SubmissionRefused(ValidationError):
    pass
