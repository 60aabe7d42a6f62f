"""The command-line reference, generated from the commands' own parsers.

``.. nsc-cli::`` renders every subcommand of ``nova-shared-cache`` (its
help, usage, options with their defaults and choices, exit statuses) from
the argparse parsers the command builds (``manage._add_parsers``), so the
reference cannot drift from the code. ``.. nsc-audit-json::`` renders the
audit's ``--json`` document (its keys from the report's dataclasses and an
example made by the same code), ``.. nsc-metrics::`` the metrics of
``audit --format prometheus`` (rendered by ``nova_shared_cache.metrics``
from an example report).
"""

import argparse
import json

from docutils import nodes
from docutils.parsers.rst import Directive
from docutils.statemachine import StringList
from sphinx.errors import ExtensionError
from sphinx.util.nodes import nested_parse_with_titles

PROG = 'nova-shared-cache'


def _parsers():
    from nova_shared_cache.cmd import manage
    parser = argparse.ArgumentParser(prog=PROG)
    subparsers = parser.add_subparsers(title='commands')
    manage._add_parsers(subparsers)
    helps = {a.dest: a.help for a in subparsers._choices_actions}
    return [(name, helps.get(name, ''), sub)
            for name, sub in subparsers.choices.items()]


def _option_text(action):
    if action.option_strings:
        names = ', '.join(action.option_strings)
        if action.nargs == 0:
            return names
        return '%s %s' % (names, action.metavar or (
            '{%s}' % ','.join(action.choices) if action.choices
            else action.dest.upper()))
    return action.metavar or action.dest


def _escape(text):
    for char in '\\*`|_':
        text = (text or '').replace(char, '\\' + char)
    return text or ''


def _action_lines(command, action):
    if not action.help:
        raise ExtensionError('option %s of %s %s has no help text: give it '
                             'one in its parser' % (_option_text(action),
                                                    PROG, command))
    help_text = action.help
    if action.default not in (None, False, argparse.SUPPRESS) and (
            action.nargs != 0):
        help_text = help_text.replace('%(default)s', str(action.default))
    elif '%(default)s' in help_text:
        help_text = help_text.replace('%(default)s', str(action.default))
    extra = []
    if action.choices and action.option_strings:
        extra.append('one of: %s' % ', '.join(
            '``%s``' % c for c in action.choices))
    if action.required:
        extra.append('required')
    if action.nargs == 0 or action.default in (None, False, []) or (
            '(default' in (action.help or '')):
        pass
    else:
        extra.append('default ``%s``' % action.default)
    text = _escape(help_text)
    if extra:
        text = '%s (%s)' % (text, '; '.join(extra)) if text else (
            '; '.join(extra).capitalize())
    return ['``%s``' % _option_text(action),
            '   %s' % text, '']


class _Rst(Directive):

    def render(self, lines):
        node = nodes.section()
        node.document = self.state.document
        nested_parse_with_titles(
            self.state, StringList(lines, source='nsc_cli'), node)
        return node.children


class CliDirective(_Rst):
    has_content = False

    def run(self):
        from nova_shared_cache.cmd import manage
        lines = []
        for name, help_text, parser in _parsers():
            parser.prog = '%s [--config-file FILE] [--config-dir DIR] %s' % (
                PROG, name)
            title = '%s %s' % (PROG, name)
            lines += [title, '-' * len(title), '',
                      '.. _cli-%s:' % name, '',
                      _escape(help_text[:1].upper() + help_text[1:]) + '.',
                      '', '.. code-block:: text', '']
            lines += ['   ' + line for line in
                      parser.format_usage().strip().splitlines()]
            lines.append('')
            actions = [a for a in parser._actions
                       if not isinstance(a, argparse._HelpAction)]
            positional = [a for a in actions if not a.option_strings]
            optional = [a for a in actions if a.option_strings]
            if positional:
                lines += ['Arguments:', '']
                for action in positional:
                    lines += _action_lines(name, action)
            if optional:
                lines += ['Options:', '']
                for action in optional:
                    lines += _action_lines(name, action)
        lines += ['Exit statuses', '-------------', '',
                  'Every command:', '']
        for code, meaning in sorted(manage.MEANINGS.items()):
            lines += ['``%d``' % code, '   %s' % {
                'ok': 'done; ``audit``: nothing found; ``verify``: '
                      'coherent',
                'findings': '``audit``: findings (see the report); '
                            '``verify``: stale reads seen',
                'error': 'error: a usage error, or something could not '
                         'be read or done (the message names it)',
            }.get(meaning, meaning), '']
        lines += ['With ``--json`` the standard output is exactly one JSON '
                  'document, also for a usage error or a failure: then '
                  '``{"error": ..., "error_type": ..., "command": ..., '
                  '"exit_code": 2, "meaning": "error"}``. Every document '
                  'carries ``exit_code`` and ``meaning`` (%s).' % ', '.join(
                      '``%s``' % m for _, m in sorted(
                          manage.MEANINGS.items())), '']
        return self.render(lines)


def _example_report():
    from nova_shared_cache import audit
    row = audit.DiskRow(
        domain='instance-0000002a',
        uuid='6a1f0c2e-0b7e-4c51-9a43-1d2e3f4a5b6c',
        running=True, persistent=True, target='vdb',
        image='volumes/volume-3f0e9a52-7c1d-4e8b-a6f2-9b0c1d2e3f40',
        serial='3f0e9a52-7c1d-4e8b-a6f2-9b0c1d2e3f40', cache='writeback',
        shareable=False, live_xml_cache='writeback',
        qemu={'direct': False, 'writeback': True, 'no_flush': False},
        shared_by=['local domains: instance-0000002b'], features=[],
        other_host_clients=[], ceph_user='cinder')
    return row


class AuditJsonDirective(_Rst):
    has_content = False

    def run(self):
        import dataclasses

        from nova_shared_cache import audit
        disk_keys = [f.name for f in dataclasses.fields(audit.DiskRow)
                     if f.repr] + ['shared']
        report = audit.Report(domains=1)
        row = _example_report()
        row.findings = [
            {'code': 'caching', 'where': 'qemu',
             'detail': "QEMU runs it with librbd's cache on"},
            {'code': 'caching', 'where': 'definition',
             'detail': "the definition has cache='writeback'"},
            {'code': 'not-shareable', 'where': 'definition',
             'detail': 'the definition lacks <shareable/>'}]
        report.disks.append(row)
        report.seconds = 0.412
        doc = report.report()
        doc['guard'] = {'source': 'keyring', 'user': 'cinder',
                        'cluster': 'ceph', 'ceph_conf': '/etc/ceph/ceph.conf',
                        'usable': True,
                        'detail': 'keyring /etc/ceph/ceph.client.cinder.'
                                  'keyring'}
        doc['exit_code'], doc['meaning'] = 1, 'findings'
        lines = ['Top-level keys: %s.' % ', '.join(
            '``%s``' % k for k in sorted(doc)), '',
            'Keys of each entry of ``disks``: %s.' % ', '.join(
                '``%s``' % k for k in disk_keys), '',
            'Finding codes: ``caching`` (``where``: ``qemu``, '
            '``live-xml`` or ``definition``), ``not-shareable``, '
            '``live-differs``, ``features``.', '',
            'An example (a domain caching an image another local domain '
            'uses; only the first domain asked with --domain):', '',
            '.. code-block:: json', '']
        lines += ['   ' + line for line in json.dumps(
            doc, indent=2, sort_keys=True).splitlines()]
        lines.append('')
        return self.render(lines)


class MetricsDirective(_Rst):
    has_content = False

    def run(self):
        from nova_shared_cache import metrics
        row = _example_report()
        row.findings = [{'code': 'caching', 'where': 'qemu',
                         'detail': ''}]
        report = {'domains': 1, 'disks': [row.report()], 'findings': 1,
                  'errors': [], 'warnings': [], 'seconds': 0.412}
        text = metrics.render(report, {'source': 'keyring',
                                       'user': 'cinder', 'usable': True},
                              1, now=1767225600.0)
        lines = ['.. code-block:: text', '']
        lines += ['   ' + line for line in text.splitlines()]
        lines.append('')
        return self.render(lines)


class JsonKeysDirective(_Rst):
    """``.. nsc-json:: COMMAND``: the keys of COMMAND --json's document."""

    required_arguments = 1

    def run(self):
        import importlib
        name = self.arguments[0].replace('-', '_')
        module = importlib.import_module('nova_shared_cache.cmd.%s' % name)
        lines = []
        for key, meaning in module.JSON_KEYS.items():
            lines += ['``%s``' % key, '   %s' % _escape(meaning), '']
        lines += ['``exit_code``, ``meaning``', '   as for every command', '']
        return self.render(lines)


def setup(app):
    app.add_directive('nsc-json', JsonKeysDirective)
    app.add_directive('nsc-cli', CliDirective)
    app.add_directive('nsc-audit-json', AuditJsonDirective)
    app.add_directive('nsc-metrics', MetricsDirective)
    return {'parallel_read_safe': True, 'version': '1'}
