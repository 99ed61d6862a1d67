"""The local sales and pipeline dashboard: ``totesys dashboard`` / ``make dashboard``, one server-rendered
HTML page (inline SVG charts, no script) on the standard library's HTTP server.

Not deployed: it lives in totesys_local, which the Lambda zip excludes. It needs nothing beyond
requirements.txt; requirements-dashboard.txt holds only its browser tests' Playwright.
"""
