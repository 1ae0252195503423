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
