"""Which column holds which lead field, whatever the header's spelling,
and which Indian state a cell names."""
import re
import unicodedata

# Lead field -> header spellings, compared lower-case without spaces or
# punctuation ("Mobile No." == "mobileno"). Exact spellings win over the
# keyword rules below.
HEADER_SYNONYMS = {
    'name': [
        'name', 'fullname', 'contact', 'contactname', 'contactperson',
        'customer', 'customername', 'client', 'clientname', 'leadname',
        'person', 'personname', 'buyer', 'buyername'],
    'first_name': ['firstname', 'givenname', 'fname'],
    'last_name': ['lastname', 'surname', 'familyname', 'lname'],
    'phone': [
        'mobile', 'phone', 'contactnumber', 'contactno', 'mobileno',
        'mobilenumber', 'phoneno', 'phonenumber', 'cell', 'cellphone',
        'telephone', 'tel', 'mob', 'mobno', 'ph', 'phno'],
    'whatsapp': [
        'whatsapp', 'whatsappnumber', 'whatsappno', 'whatsappmobile', 'wa',
        'wanumber', 'wano'],
    'email': ['email', 'emailid', 'emailaddress', 'mail', 'mailid'],
    'city': ['city', 'town', 'location', 'citytown'],
    'state': ['state', 'stateut', 'province', 'region', 'statename'],
    'company_name': [
        'company', 'companyname', 'organisation', 'organization', 'firm',
        'firmname', 'business', 'businessname'],
    'campaign': [
        'campaign', 'campaignname', 'adname', 'adsetname', 'utmcampaign'],
    'notes': [
        'notes', 'note', 'remarks', 'remark', 'comments', 'comment',
        'requirement', 'requirements', 'message', 'description', 'query',
        'enquiry', 'inquiry', 'querymessage'],
    }
# When no exact spelling matches: a header word that names the field
# ("Sender Mobile", "Customer Email ID"), tried in this order.
HEADER_KEYWORDS = [
    ('whatsapp', {'whatsapp', 'wa'}),
    ('email', {'email', 'mail'}),
    ('phone', {'mobile', 'phone', 'cell', 'telephone'}),
    ('company_name', {'company', 'firm', 'organisation', 'organization'}),
    ('first_name', {'first'}),
    ('last_name', {'last', 'surname'}),
    ('name', {'name'}),
    ('city', {'city', 'town'}),
    ('state', {'state'}),
    ('campaign', {'campaign'}),
    ('notes', {'note', 'notes', 'remark', 'remarks', 'comment', 'comments',
            'requirement', 'message'}),
    ]
# What the report calls a lead field when the file has no column for it.
FIELD_LABELS = {
    'name': "Name", 'phone': "Mobile", 'whatsapp': "WhatsApp",
    'email': "Email", 'city': "City", 'state': "State",
    'company_name': "Company", 'campaign': "Campaign", 'notes': "Notes",
    'first_name': "First Name", 'last_name': "Last Name",
    }

# Cells that mean "nothing" in the sheets people keep.
BLANKS = {'', '-', '--', 'na', 'n/a', 'nil', 'none', 'null', '#n/a', 'nan'}

# State spellings people use beyond the names and ISO codes: old names,
# vehicle-registration codes, common misspellings -> ISO 3166-2 code.
STATE_ALIASES = {
    'orissa': 'IN-OD', 'or': 'IN-OD', 'od': 'IN-OD',
    'pondicherry': 'IN-PY', 'pondy': 'IN-PY', 'pudducherry': 'IN-PY',
    'newdelhi': 'IN-DL', 'nctofdelhi': 'IN-DL', 'nctdelhi': 'IN-DL',
    'jandk': 'IN-JK', 'jammuandkashmir': 'IN-JK', 'jammukashmir': 'IN-JK',
    'uttaranchal': 'IN-UK', 'ua': 'IN-UK', 'ut': 'IN-UK', 'uk': 'IN-UK',
    'ct': 'IN-CG', 'cg': 'IN-CG', 'chattisgarh': 'IN-CG',
    'chhatisgarh': 'IN-CG', 'chatisgarh': 'IN-CG',
    'tg': 'IN-TS', 'ts': 'IN-TS', 'telengana': 'IN-TS',
    'dnh': 'IN-DH', 'dd': 'IN-DH', 'damananddiu': 'IN-DH',
    'dadraandnagarhaveli': 'IN-DH',
    'aandn': 'IN-AN', 'andaman': 'IN-AN', 'andamanandnicobar': 'IN-AN',
    'maharastra': 'IN-MH', 'gujrat': 'IN-GJ', 'kerela': 'IN-KL',
    'hariyana': 'IN-HR', 'bengal': 'IN-WB',
    }


def compact(text):
    "'Mobile No.' -> 'mobileno', 'Jammu & Kashmīr' -> 'jammuandkashmir'"
    return ''.join(words(text))


def words(text):
    "'Sender_Mobile No.' -> ['sender', 'mobile', 'no']"
    text = unicodedata.normalize('NFKD', str(text or ''))
    text = ''.join(c for c in text if not unicodedata.combining(c))
    text = text.lower().replace('&', ' and ')
    return re.findall(r'[a-z0-9]+', text)


class ColumnMap:
    "Which column of the file holds which lead field, found by its header."

    def __init__(self, header):
        self.header = header
        self.index = {}
        self.ignored = []
        for position, title in enumerate(header):
            if not title.strip():
                continue
            field = self.field_of(title)
            if field and field not in self.index:
                self.index[field] = position
            else:
                self.ignored.append(title)

    @staticmethod
    def field_of(title):
        key = compact(title)
        for field, spellings in HEADER_SYNONYMS.items():
            if key in spellings:
                return field
        tokens = set(words(title))
        for field, keywords in HEADER_KEYWORDS:
            if tokens & keywords:
                return field

    def __bool__(self):
        "Whether the header names a column to find a person by."
        return bool(self.index.keys()
            & {'name', 'first_name', 'phone', 'whatsapp', 'email'})

    def title(self, field):
        "The file's header of the field's column, for the report."
        if field in self.index:
            return self.header[self.index[field]]
        return FIELD_LABELS.get(field, field)

    def cells_of(self, cells):
        "field -> text of the row's mapped cells that are not blank."
        found = {}
        for field, position in self.index.items():
            if position < len(cells) and (text := cells[position]) \
                    and text.lower() not in BLANKS:
                found[field] = text
        return found

    def mapping_text(self):
        return ', '.join(f'{self.header[i]} → {FIELD_LABELS[f]}'
            for f, i in sorted(self.index.items(), key=lambda x: x[1]))


class StateLookup:
    """Indian states and union territories by name, ISO code ("MH",
    "IN-MH") or a common spelling, case-insensitively."""

    def __init__(self, subdivisions):
        "subdivisions: [(id, code, name)] of India's top-level subdivisions"
        self.by_key = {}
        by_code = {}
        for id_, code, name in subdivisions:
            by_code[code.upper()] = id_
            self.by_key[compact(name)] = id_
            self.by_key[compact(code)] = id_
            self.by_key[compact(code.split('-', 1)[-1])] = id_
        for alias, code in STATE_ALIASES.items():
            if code in by_code:
                self.by_key.setdefault(alias, by_code[code])
        self.names = sorted(k for k in self.by_key if len(k) > 3)
        self.cache = {}

    def get(self, text):
        "The subdivision id, None when unknown."
        if text not in self.cache:
            key = compact(text)
            found = self.by_key.get(key)
            if found is None and len(key) >= 4:
                # "Andaman & Nicobar", "Maha": a unique beginning of a name.
                ids = {self.by_key[n] for n in self.names if n.startswith(key)}
                if len(ids) == 1:
                    found, = ids
            self.cache[text] = found
        return self.cache[text]
