"""Shared code for the three ToteSys Lambda handlers."""
