"""The web dashboard: static pages (plain HTML, ES modules, CSS; nothing from a CDN) over the REST API."""
