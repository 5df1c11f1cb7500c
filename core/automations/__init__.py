"""Automations: workflows of automation engineers, their runs, and what they may ask of the database."""
