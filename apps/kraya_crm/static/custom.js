// Kraya CRM branding for the sao desk (loaded by sao's index.html).
Sao.config.title = 'Kraya CRM';
Sao.config.icon_colors = '#0f766e,#334155,#f97316'.split(',');
Sao.config.calendar_colors = '#fff,#0f766e'.split(',');
Sao.config.graph_color = '#0f766e';

// Amounts in Indian digit grouping (₹1,45,00,000.00). sao formats numbers
// with the browser's Intl for the user's language, so English is English
// (India) here; the server's own formatting uses the language's grouping.
(function() {
    var bc47 = Sao.i18n.BC47;
    Sao.i18n.BC47 = function(lang) {
        var tag = bc47(lang);
        return tag == 'en' ? 'en-IN' : tag;
    };
}());

// Menu entries that open a page of the module (the team inbox) name it
// /{database}/crm/...: the desk knows which database it is signed in to.
(function() {
    var exec_action = Sao.Action.exec_action;
    Sao.Action.exec_action = function(action, data, context) {
        if (action && action.type == 'ir.action.url' && action.url &&
                Sao.Session.current_session) {
            action = jQuery.extend({}, action, {
                url: action.url.replace('{database}', encodeURIComponent(
                    Sao.Session.current_session.database)),
            });
        }
        return exec_action.call(this, action, data, context);
    };
}());

// The page a user lands on: a login action (res.user's "actions", the
// demo's manager and reps have the dashboard) that is a page of ours opens
// in the desk's own tab instead of a pop-up, once per tab, and only when
// the desk was opened at its start (not at a record's address). Coming
// back to the desk from that page, or changing one's preferences, stays
// in the desk.
(function() {
    var at_login = false;
    function landed_key() {
        return 'kraya_landed_' + Sao.Session.current_session.database;
    }
    var get_preferences = Sao.get_preferences;
    Sao.get_preferences = function() {
        at_login = true;
        return get_preferences.apply(this, arguments).always(function() {
            at_login = false;
        });
    };
    var logout = Sao.logout;
    Sao.logout = function() {
        if (Sao.Session.current_session) {
            sessionStorage.removeItem(landed_key());
        }
        return logout.apply(this, arguments);
    };
    var exec_action = Sao.Action.exec_action;
    Sao.Action.exec_action = function(action, data, context) {
        var session = Sao.Session.current_session;
        if (at_login && session && action &&
                action.type == 'ir.action.url' && action.url &&
                action.url.indexOf('/{database}/crm/') === 0) {
            var hash = window.location.hash.substr(1);
            var at_start = !hash || hash == session.database;
            if (!at_start || sessionStorage.getItem(landed_key())) {
                return jQuery.when();
            }
            sessionStorage.setItem(landed_key(), '1');
            window.location.assign(action.url.replace('{database}',
                encodeURIComponent(session.database)));
            return jQuery.when();
        }
        return exec_action.call(this, action, data, context);
    };
}());

// sao 8.0 loads the records of a tab whose first view is a list, a graph
// or a calendar, and left one opening on cards (list-form: the field
// agent's My Leads, My Deals and My Tasks) empty until Reload.
(function() {
    var init = Sao.Tab.Form.prototype.init;
    Sao.Tab.Form.prototype.init = function(model_name, attributes) {
        init.apply(this, arguments);
        var screen = this.screen;
        this.view_prm.done(function() {
            if (!(attributes && attributes.res_id) && screen.current_view &&
                    screen.current_view.view_type == 'list-form') {
                screen.search_filter();
            }
        });
    };
}());
