// Kraya CRM branding for the sao desk (loaded by sao's index.html).
Sao.config.title = 'Kraya CRM';
Sao.config.icon_colors = '#0f766e,#334155,#f97316'.split(',');
Sao.config.calendar_colors = '#fff,#0f766e'.split(',');
Sao.config.graph_color = '#0f766e';
