"""The built documentation and release notes hold what the code has.

Run by ``tox -e docs`` after it built doc/build/html and
releasenotes/build/html: every subcommand and option of the commands'
parsers is in the CLI reference, every configuration option in the
configuration reference (and the sample), the architecture diagram was
drawn at build time, and every release note is in the release notes.
"""

import argparse
import glob
import html
import os
import re

import pytest
import yaml

from nova_shared_cache.cmd import manage
from nova_shared_cache import conf as sc_conf

TOP = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
HTML = os.environ.get('NSC_DOCS_HTML') or os.path.join(TOP, 'doc', 'build',
                                                       'html')
NOTES_HTML = os.path.join(TOP, 'releasenotes', 'build', 'html')


def text_of(path):
    """The page's text, tags dropped and entities resolved."""
    with open(path) as f:
        page = f.read()
    page = re.sub(r'<(script|style)\b.*?</\1>', ' ', page, flags=re.S)
    return html.unescape(re.sub(r'<[^>]+>', ' ', page))


def page(name, where=HTML):
    path = os.path.join(where, name)
    if not os.path.exists(path):
        pytest.fail('%s is not built (tox -e docs builds it)' % path)
    return path


def parsers():
    parser = argparse.ArgumentParser(prog='nova-shared-cache')
    subparsers = parser.add_subparsers()
    manage._add_parsers(subparsers)
    return subparsers.choices


def test_every_subcommand_and_option_is_in_the_cli_reference():
    text = text_of(page('cli.html'))
    found = parsers()
    assert {'status', 'fence', 'audit', 'fix', 'install-hook', 'verify',
            'build-probe-image'} <= set(found)
    for name, parser in found.items():
        assert 'nova-shared-cache %s' % name in text, name
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            for option in action.option_strings:
                assert re.search(r'(^|\s)%s([\s,]|$)' % re.escape(option),
                                 text), (name, option)
            help_text = action.help.replace('%(default)s',
                                            str(action.default))
            assert ' '.join(help_text.split()[:4]) in ' '.join(
                text.split()), (name, action.option_strings, help_text)


def test_exit_statuses_and_json_are_in_the_cli_reference():
    text = ' '.join(text_of(page('cli.html')).split())
    for code, meaning in manage.MEANINGS.items():
        assert re.search(r'\b%d\s+%s' % (code, {
            'ok': 'done', 'findings': r'audit\s*: findings',
            'error': 'error'}[meaning]), text), meaning
    # The audit's example document.
    assert re.search(r'"exit_code"\s*:\s*1\b', text)
    assert re.search(r'"not-shareable"', text)
    assert 'nova_shared_cache_disk_caching{' in text    # the metrics
    assert 'nova_shared_cache_audit_success' in text


def test_every_option_is_in_the_configuration_reference():
    text = text_of(page('configuration.html'))
    options = [(group, opt.name) for group, opts in sc_conf.list_opts()
               for opt in opts]
    assert len(options) >= 9
    for group, name in options:
        assert '%s.%s' % (group, name) in text or (
            re.search(r'\b%s\b' % re.escape(name), text)), name
    sample = page(os.path.join('_static', 'nova-shared-cache.conf.sample'))
    with open(sample) as f:
        sample_text = f.read()
    for _, name in options:
        assert '#%s = ' % name in sample_text, name


def test_the_diagram_is_drawn_at_build_time():
    with open(page('overview.html')) as f:
        overview = f.read()
    drawn = re.findall(r'_images/(graphviz-[0-9a-f]+\.svg)', overview)
    assert drawn, 'no graphviz image in overview.html'
    with open(page(os.path.join('_images', drawn[0]))) as f:
        svg = f.read()
    assert 'LibvirtSharedCacheDriver' in svg
    assert not glob.glob(os.path.join(TOP, 'doc', 'source', '**', '*.svg'),
                         recursive=True), 'a checked-in picture'


def test_every_page_is_built():
    for name in ('index', 'overview', 'install', 'configuration', 'cli',
                 'admin', 'verify', 'performance', 'contributor'):
        page(name + '.html')
    text = text_of(page('install.html'))
    for tool in ('devstack', 'kolla-ansible', 'OpenStack-Ansible',
                 'By hand'):
        assert tool in text


def test_every_release_note_is_in_the_release_notes():
    def letters(text):
        return re.sub(r'[^A-Za-z0-9]', '', text)
    text = letters(text_of(page('unreleased.html', NOTES_HTML)))
    notes = sorted(glob.glob(os.path.join(TOP, 'releasenotes', 'notes',
                                          '*.yaml')))
    assert len(notes) >= 5
    for path in notes:
        with open(path) as f:
            note = yaml.safe_load(f)
        for section, items in note.items():
            for item in ([items] if isinstance(items, str) else items):
                words = letters(' '.join(item.split()[:8]))
                assert words in text, (os.path.basename(path), item)
