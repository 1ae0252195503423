"""The predictive score: the chance that a lead's deal is won, learnt from
the closed deals of converted leads (won against lost) with scikit-learn's
logistic regression on what we know of a lead: its source, its city, how
fast we first answered, how much it wrote and did, and its band.

A logistic regression, because its coefficients are the reasons: each
feature is standardised, so that a lead's reasons are the features whose
coefficient times its (standardised) value weighs most. The model is kept
as JSON (feature names, means, scales, coefficients), never as a pickle,
and predicting is a dot product: a lead's form computes it when shown.

Its accuracy is measured on a held-out quarter of the history (AUC and a
calibration table by decile); the kept model is then fitted on all of it.
Below `win_model_min_closed` closed deals it refuses to learn and says so."""
import json
import math
from collections import Counter, defaultdict

from sql.aggregate import Count

from trytond.i18n import gettext
from trytond.model import ModelSQL, ModelView, fields
from trytond.pool import Pool, PoolMeta
from trytond.tools import grouped_slice
from trytond.transaction import Transaction, without_check_access

from .message import utcnow

in_ids = fields.SQL_OPERATORS['in']

# A city with fewer closed deals than this is "another city": too few to
# learn from, its coefficient would be noise.
MIN_CITY_DEALS = 20
TOP_REASONS = 3
HELD_OUT = 0.25


def sigmoid(value):
    return 1 / (1 + math.exp(-value))


class WinModel(ModelSQL, ModelView):
    """What the predictive score learnt from the closed deals, and how well:
    one record per training, the newest one predicts."""
    __name__ = 'crm.scoring.model'
    __string__ = "Predictive Model"
    state = fields.Selection([
            ('untrained', "Not trained yet"),
            ('not_enough', "Not enough history"),
            ('trained', "Trained"),
            ], "State", readonly=True, sort=False)
    summary = fields.Text("Summary", readonly=True)
    trained_at = fields.Timestamp("Trained At", readonly=True)
    n_won = fields.Integer("Won Deals", readonly=True)
    n_lost = fields.Integer("Lost Deals", readonly=True)
    n_held_out = fields.Integer("Held Out", readonly=True,
        help="The closed deals kept aside to measure the accuracy.")
    auc = fields.Float("AUC", digits=(1, 3), readonly=True,
        help="On the held-out deals: the chance that a won deal is ranked "
        "above a lost one (0.5 is a coin toss, 1 is perfect).")
    calibration = fields.Text("Calibration (JSON)", readonly=True)
    coefficients = fields.Text("Coefficients (JSON)", readonly=True)
    calibration_text = fields.Function(
        fields.Text("Predicted vs Won, by Decile"), 'get_calibration_text')
    coefficients_text = fields.Function(
        fields.Text("What It Learnt"), 'get_coefficients_text')

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._order = [('trained_at', 'DESC NULLS LAST'), ('id', 'DESC')]
        cls._buttons.update({
                'train': {'icon': 'tryton-refresh', 'depends': []},
                })

    @classmethod
    def default_state(cls):
        return 'untrained'

    def get_calibration_text(self, name):
        rows = json.loads(self.calibration) if self.calibration else []
        return '\n'.join(gettext('kraya_crm.msg_win_model_decile',
                decile=i, predicted=f"{r['predicted']:.0%}",
                observed=f"{r['observed']:.0%}", count=r['count'])
            for i, r in enumerate(rows, 1))

    def get_coefficients_text(self, name):
        model = json.loads(self.coefficients) if self.coefficients else None
        if not model:
            return ''
        labels = feature_labels(model['features'])
        pairs = sorted(zip(model['features'], model['weights']),
            key=lambda p: -abs(p[1]))
        return '\n'.join(f'{w:+.2f}  {labels[f]}' for f, w in pairs)

    @classmethod
    @ModelView.button_action('kraya_crm.act_scoring_model')
    def train(cls, models=None):
        "Retrain on the closed deals as they are now, and list the trainings."
        cls.retrain()

    @classmethod
    def retrain(cls):
        "Learn from the closed deals and keep the model (the weekly cron too)."
        values = cls._learn()
        with without_check_access():
            model, = cls.create([values])
        return model

    @classmethod
    def latest(cls):
        "The newest training, which predicts; None before the first."
        with without_check_access():
            models = cls.search([], limit=1)
        return models[0] if models else None

    @classmethod
    def _learn(cls):
        Configuration = Pool().get('crm.configuration')
        needed = Configuration(1).win_model_min_closed or 30
        labels = closed_history()
        n_won = sum(labels.values())
        n_lost = len(labels) - n_won
        values = {'trained_at': utcnow(), 'n_won': n_won, 'n_lost': n_lost,
            'n_held_out': None, 'auc': None, 'calibration': None,
            'coefficients': None}
        if len(labels) < needed or min(n_won, n_lost) < 4:
            values.update(state='not_enough',
                summary=gettext('kraya_crm.msg_win_model_not_enough',
                    count=len(labels), needed=needed))
            return values
        model, held_out, auc, calibration = fit(labels)
        labels_of = feature_labels(model['features'])
        top = sorted(zip(model['features'], model['weights']),
            key=lambda p: -abs(p[1]))[:TOP_REASONS]
        values.update(state='trained', n_held_out=held_out,
            auc=round(auc, 3),
            calibration=json.dumps(calibration),
            coefficients=json.dumps(model),
            summary=gettext('kraya_crm.msg_win_model_trained',
                won=n_won, lost=n_lost, auc=f'{auc:.2f}',
                held_out=held_out,
                learnt='; '.join(f'{labels_of[f]} {w:+.2f}'
                    for f, w in top)))
        return values

    @classmethod
    def current(cls):
        "The kept model as a dict, or None when it has not learnt."
        latest = cls.latest()
        if latest and latest.state == 'trained':
            return json.loads(latest.coefficients)

    @classmethod
    def predict(cls, lead_ids):
        """{lead id: (probability, [reasons])} of the kept model, or None
        when it has not learnt (not enough history)."""
        model = cls.current()
        if model is None:
            return None
        features = lead_features(lead_ids, model['cities'])
        labels = feature_labels(model['features'])
        result = {}
        for lead_id in lead_ids:
            row = features.get(lead_id, {})
            parts = []
            for name, mean, scale, weight in zip(model['features'],
                    model['means'], model['scales'], model['weights']):
                value = row.get(name, 0.0)
                parts.append((name, value,
                        weight * (value - mean) / scale))
            probability = sigmoid(
                model['intercept'] + sum(p for _, _, p in parts))
            # A reason is something the lead has (or a measure of it).
            shown = sorted((p for p in parts if p[1] or p[0] in NUMERIC),
                key=lambda p: -abs(p[2]))[:TOP_REASONS]
            result[lead_id] = (probability, [
                    ('+ ' if c > 0 else '− ') + reason_text(n, v, labels,
                        row.get(UNANSWERED))
                    for n, v, c in shown if abs(c) >= 0.05])
        return result


NUMERIC = ['response_hours', 'messages', 'events']
UNANSWERED = '_unanswered'


def reason_text(name, value, labels, unanswered=False):
    "A lead's reason, with its own figure for the measures."
    if name == 'response_hours':
        return gettext('kraya_crm.msg_win_reason_unanswered_hours'
            if unanswered else 'kraya_crm.msg_win_reason_response_hours',
            hours=f'{math.expm1(value):.1f}')
    if name in {'messages', 'events'}:
        return gettext(f'kraya_crm.msg_win_reason_{name}',
            count=round(math.expm1(value)))
    return labels[name]


def closed_history():
    "{lead id: 1 won, 0 lost}: converted leads whose deals are closed."
    pool = Pool()
    Deal = pool.get('crm.deal')
    Stage = pool.get('crm.stage')
    deal, stage = Deal.__table__(), Stage.__table__()
    cursor = Transaction().connection.cursor()
    cursor.execute(*deal.join(stage, condition=deal.stage == stage.id
            ).select(deal.lead, stage.kind,
            where=(deal.lead != None)  # noqa: E711
            & stage.kind.in_(['won', 'lost'])))
    labels = {}
    for lead_id, kind in cursor:
        # A lead with a won deal is won, whatever else it lost.
        labels[lead_id] = max(labels.get(lead_id, 0), int(kind == 'won'))
    return labels


def lead_features(lead_ids, cities=None):
    """{lead id: {feature: value}}: one-hot source, city and band, the
    hours to the first response (log), and how much the lead wrote and did
    (log counts). Cities not in `cities` are "another city"."""
    pool = Pool()
    Lead = pool.get('crm.lead')
    Source = pool.get('crm.source')
    Message = pool.get('crm.message')
    Event = pool.get('crm.lead.score_event')
    lead, source = Lead.__table__(), Source.__table__()
    message, event = Message.__table__(), Event.__table__()
    cursor = Transaction().connection.cursor()
    rows, counts = {}, defaultdict(Counter)
    for sub_ids in grouped_slice(sorted(set(lead_ids)), 1000):
        sub_ids = list(sub_ids)
        cursor.execute(*lead.join(source, 'LEFT',
                condition=lead.source == source.id).select(
                lead.id, source.code, lead.city, lead.create_date,
                lead.first_response_at, lead.band,
                where=in_ids(lead.id, sub_ids)))
        for lead_id, *values in cursor:
            rows[lead_id] = values
        cursor.execute(*message.select(message.lead, Count(message.id),
                where=in_ids(message.lead, sub_ids)
                & (message.direction == 'inbound'),
                group_by=[message.lead]))
        for lead_id, count in cursor:
            counts[lead_id]['messages'] = count
        cursor.execute(*event.select(event.lead, Count(event.id),
                where=in_ids(event.lead, sub_ids),
                group_by=[event.lead]))
        for lead_id, count in cursor:
            counts[lead_id]['events'] = count
    features = {}
    now = utcnow()
    for lead_id, (code, city, created, answered, band) in rows.items():
        city = (city or '').strip().lower() or None
        if cities is not None and city not in cities:
            city = 'other'
        row = {f'source:{code or "none"}': 1.0,
            f'city:{city or "other"}': 1.0,
            f'band:{band or "cold"}': 1.0,
            'messages': math.log1p(counts[lead_id]['messages']),
            'events': math.log1p(counts[lead_id]['events']),
            }
        # Not answered yet, the lead has waited since it came: the least
        # its response time will be.
        hours = max(((answered or now) - created).total_seconds(), 0) / 3600
        row['response_hours'] = math.log1p(hours)
        if not answered:
            # Not a feature (the hours say it): how a reason reads.
            row[UNANSWERED] = True
        features[lead_id] = row
    return features


def feature_labels(names):
    "What a salesperson reads for each feature."
    Source = Pool().get('crm.source')
    sources = {s.code: s.name for s in Source.search([])}
    labels = {}
    for name in names:
        kind, _, value = name.partition(':')
        if kind == 'source':
            labels[name] = gettext('kraya_crm.msg_win_feature_source',
                source=sources.get(value, value))
        elif kind == 'city':
            labels[name] = gettext('kraya_crm.msg_win_feature_city',
                city=value.title() if value != 'other'
                else gettext('kraya_crm.msg_win_feature_other_city'))
        elif kind == 'band':
            labels[name] = gettext('kraya_crm.msg_win_feature_band',
                band=value)
        else:
            labels[name] = gettext(f'kraya_crm.msg_win_feature_{name}')
    return labels


def fit(labels):
    """Fit the logistic regression on these leads' features: measured on a
    held-out quarter, kept as fitted on all. Returns (model as a dict,
    held-out count, AUC, calibration by decile)."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    ids = sorted(labels)
    raw = lead_features(ids)
    city_counts = Counter(c for row in raw.values() for c in row
        if c.startswith('city:'))
    cities = sorted(c.partition(':')[2] for c, n in city_counts.items()
        if n >= MIN_CITY_DEALS and c != 'city:other')
    features = lead_features(ids, set(cities))
    names = sorted({n for row in features.values() for n in row
            if n != UNANSWERED} | set(NUMERIC))
    X = np.array([[features[i].get(n, 0.0) for n in names] for i in ids])
    y = np.array([labels[i] for i in ids])

    def model(X, y):
        scaler = StandardScaler().fit(X)
        # A constant column has no scale: left as it is.
        scaler.scale_[scaler.scale_ == 0] = 1.0
        regression = LogisticRegression(C=1.0, max_iter=1000).fit(
            scaler.transform(X), y)
        return scaler, regression

    X_train, X_test, y_train, y_test = train_test_split(X, y,
        test_size=HELD_OUT, stratify=y, random_state=0)
    scaler, regression = model(X_train, y_train)
    predicted = regression.predict_proba(scaler.transform(X_test))[:, 1]
    auc = float(roc_auc_score(y_test, predicted))
    order = np.argsort(predicted)
    calibration = [{'predicted': float(predicted[part].mean()),
            'observed': float(y_test[part].mean()), 'count': int(len(part))}
        for part in np.array_split(order, min(10, len(order)))
        if len(part)]
    scaler, regression = model(X, y)
    return ({'features': names, 'cities': cities,
            'means': [float(m) for m in scaler.mean_],
            'scales': [float(s) for s in scaler.scale_],
            'weights': [float(w) for w in regression.coef_[0]],
            'intercept': float(regression.intercept_[0])},
        len(y_test), auc, calibration)


class Lead(metaclass=PoolMeta):
    __name__ = 'crm.lead'
    win_probability = fields.Function(fields.Float("Chance to Win",
            digits=(1, 2),
            help="Learnt from the won and lost deals: see CRM › "
            "Configuration › Scoring › Predictive Model."),
        'get_win_prediction')
    win_reasons = fields.Function(fields.Text("Why This Chance"),
        'get_win_prediction')

    @classmethod
    def get_win_prediction(cls, leads, names):
        WinModel = Pool().get('crm.scoring.model')
        result = {name: {} for name in names}
        ids = [l.id for l in leads]
        with without_check_access():
            predictions = WinModel.predict(ids)
            latest = WinModel.latest()
        summary = None
        if predictions is None:
            # It says why it predicts nothing.
            summary = latest.summary if latest else gettext(
                'kraya_crm.msg_win_model_untrained')
        for lead_id in ids:
            probability, reasons = (predictions or {}).get(
                lead_id, (None, [summary] if summary else []))
            if 'win_probability' in result:
                result['win_probability'][lead_id] = (
                    round(probability, 2) if probability is not None
                    else None)
            if 'win_reasons' in result:
                result['win_reasons'][lead_id] = '\n'.join(reasons)
        return result


class Cron(metaclass=PoolMeta):
    __name__ = 'ir.cron'

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.method.selection += [
            ('crm.scoring.model|retrain', "Retrain the predictive score"),
            ]
