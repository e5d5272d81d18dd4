"""Server-rendered dashboard at /ui: Jinja2 pages, a vendored chart library (Chart.js
4.6.1, MIT, in static/vendor), read through the services only (no SQL here)."""
