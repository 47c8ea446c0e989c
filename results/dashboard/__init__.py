"""The results dashboard: a read-only web page + JSON API over a results database, and the same
page as one offline HTML report. Three layers, kept apart:

* ``results.dashboard.data``: the data step (store -> JSON-ready dicts; every study view cut
  from ``results.study_front.study_front``);
* ``results.dashboard.app``: the FastAPI routes (validation, HTTP errors, Host-header check);
* ``results.dashboard.page``: the drawing step (``static/dashboard.html`` with plotly.js; the
  offline report with everything inlined).

``results.dashboard.cli`` holds the ``dashboard`` and ``report`` commands. This package module
imports nothing, so building the command line stays light.
"""
