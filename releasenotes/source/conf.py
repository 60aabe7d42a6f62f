"""Sphinx configuration of nova-shared-cache's release notes (reno)."""

project = 'nova-shared-cache release notes'
copyright = 'nova-shared-cache contributors'
extensions = ['reno.sphinxext']
master_doc = 'index'
exclude_patterns = ['_build']
html_theme = 'alabaster'
smartquotes = False
