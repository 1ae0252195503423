"""One identity per person: every channel (WhatsApp, web forms, imports)
hands its people to Lead.capture, which matches them on phone, WhatsApp
number or email and creates only those it does not know."""
from trytond.pool import Pool, PoolMeta

from .contact import normalize_email

# The lead fields a capture may fill; a match keeps what it has and only
# fills what is empty, so a form never overwrites a rep's work.
CAPTURE_FIELDS = (
    'name', 'company_name', 'phone', 'whatsapp', 'email', 'city',
    'subdivision', 'campaign', 'notes')


def capture_company():
    """The company leads from outside belong to: the site's first company
    (a Kraya site serves one business)."""
    Company = Pool().get('company.company')
    companies = Company.search([], limit=1, order=[('id', 'ASC')])
    return companies[0].id if companies else None


def identity_keys(values):
    "The keys a person is known by: ('phone', +91...) and ('email', ...)."
    keys = set()
    for name in ('phone', 'whatsapp'):
        if values.get(name):
            keys.add(('phone', values[name]))
    if values.get('email'):
        keys.add(('email', normalize_email(values['email'])))
    return keys


class Lead(metaclass=PoolMeta):
    __name__ = 'crm.lead'

    @classmethod
    def find_by_identity(cls, keys):
        """The existing leads known by any of these keys, as a dict
        key -> lead. One query, through the phone, WhatsApp and email
        indexes. Converted leads count: the person is the same."""
        phones = sorted({v for k, v in keys if k == 'phone'})
        emails = sorted({v for k, v in keys if k == 'email'})
        domain = ['OR']
        if phones:
            domain.append(('phone', 'in', phones))
            domain.append(('whatsapp', 'in', phones))
        if emails:
            domain.append(('email', 'in', emails))
        if len(domain) == 1:
            return {}
        found = {}
        # Oldest first, so that the original lead wins over later duplicates.
        for lead in cls.search(domain, order=[('id', 'ASC')]):
            for key in identity_keys({
                        'phone': lead.phone, 'whatsapp': lead.whatsapp,
                        'email': lead.email}):
                found.setdefault(key, lead)
        return found

    @classmethod
    def capture(cls, vlist, source=None):
        """Match or create a lead for each dict of values (already
        normalised: phones in E.164). Returns [(lead, created)] in the
        order given; two dicts for one person give one lead."""
        pool = Pool()
        Source = pool.get('crm.source')
        if isinstance(source, str):
            source = Source.get_by_code(source)
        known = cls.find_by_identity(
            set().union(*(identity_keys(v) for v in vlist)) if vlist else set())
        results, to_create, to_fill = [], [], {}
        for values in vlist:
            keys = identity_keys(values)
            lead = next((known[k] for k in sorted(keys) if k in known), None)
            if lead is None:
                lead = cls(**{f: values[f] for f in CAPTURE_FIELDS
                        if values.get(f) is not None})
                if source:
                    lead.source = source
                if not getattr(lead, 'name', None):
                    lead.name = (values.get('phone') or values.get('whatsapp')
                        or values.get('email') or "Unknown")
                to_create.append(lead)
                results.append((lead, True))
            else:
                if lead.id is not None and lead.id >= 0:
                    to_fill.setdefault(lead.id, (lead, {}))[1].update({
                            f: values[f] for f in CAPTURE_FIELDS
                            if values.get(f) and not getattr(lead, f, None)})
                results.append((lead, False))
            for key in keys:
                known.setdefault(key, lead)
        cls.save(to_create)
        to_write = []
        for lead, values in to_fill.values():
            if values:
                to_write.extend(([lead], values))
        if to_write:
            cls.write(*to_write)
        return results
