"""The local sales and pipeline dashboard (Streamlit): ``totesys dashboard`` / ``make dashboard``.

Not deployed: it lives in totesys_local, which the Lambda zip excludes, and its dependencies are in
requirements-dashboard.txt, not in the Lambda layer.
"""
