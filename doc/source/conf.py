"""Sphinx configuration of nova-shared-cache's documentation.

Built by ``tox -e docs`` with warnings as errors. The configuration
reference, the sample configuration and the command-line reference are
generated from the code at build time, so they cannot drift from it.
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '_exts'))

project = 'nova-shared-cache'
copyright = 'nova-shared-cache contributors'
extensions = [
    'openstackdocstheme',
    'myst_parser',
    'sphinx.ext.autodoc',
    'sphinx.ext.graphviz',
    'oslo_config.sphinxext',
    'oslo_config.sphinxconfiggen',
    'nsc_cli',
]
source_suffix = {'.rst': 'restructuredtext', '.md': 'markdown'}
master_doc = 'index'
exclude_patterns = ['_build']
myst_heading_anchors = 3

# oslo_config.sphinxconfiggen: _static/nova-shared-cache.conf.sample
config_generator_config_file = os.path.join(
    HERE, '..', '..', 'etc', 'nova-shared-cache-config-generator.conf')
sample_config_basename = '_static/nova-shared-cache'

graphviz_output_format = 'svg'

html_theme = 'openstackdocs'
# _static holds only what the build generates (the sample configuration):
# a clean clone has no such directory until sphinxconfiggen writes it,
# after Sphinx has checked this path.
os.makedirs(os.path.join(HERE, '_static'), exist_ok=True)
html_static_path = ['_static']
openstackdocs_repo_name = 'nova-shared-cache'
openstackdocs_use_storyboard = False
openstackdocs_auto_name = False
openstackdocs_pdf_link = False
pygments_style = 'native'
smartquotes = False
