"""``nova-shared-cache``: the operator's view of shared disks.

Reads nova.conf like nova-manage (``--config-file``, ``--config-dir``,
default ``/etc/nova/nova.conf``): ``[shared_cache] ceph_conf``,
``ceph_user`` and ``ceph_timeout`` say how to reach Ceph, ``[libvirt]
connection_uri`` where the local domains are.

This module is the dispatcher: each subcommand is a module of this package
(``status``, ``fence``, ``audit``, ``fix``, ``install_hook``, ``verify``)
with its parser (``add_parser``), its input checks (``check_input``,
before anything connects) and its action (``run``); here are the parsing,
the error handling and ``--json``'s one-document promise they share.

Exit status: 0 done (audit: nothing found), 1 audit findings, 2 error.
"""

import contextlib
import io
import json
import os
import sys

from oslo_config import cfg

from nova_shared_cache import cephclient
from nova_shared_cache.cmd import audit as audit_cmd
from nova_shared_cache.cmd import common
from nova_shared_cache.cmd import fence as fence_cmd
from nova_shared_cache.cmd import fix as fix_cmd
from nova_shared_cache.cmd import install_hook as install_hook_cmd
from nova_shared_cache.cmd import status as status_cmd
from nova_shared_cache.cmd import verify as verify_cmd
from nova_shared_cache import conf as sc_conf
from nova_shared_cache import exception
from nova_shared_cache import hostnet

DEFAULT_CONFIG = '/etc/nova/nova.conf'
OK, FINDINGS, ERROR = common.OK, common.FINDINGS, common.ERROR
MEANINGS = common.MEANINGS
#: The subcommands' modules, in the order --help lists them.
SUBCOMMANDS = (status_cmd, fence_cmd, audit_cmd, fix_cmd, install_hook_cmd,
               verify_cmd)
#: Subcommand name: its module.
MODULES = {name: module for module in SUBCOMMANDS for name in module.NAMES}


def _add_parsers(subparsers):
    for module in SUBCOMMANDS:
        module.add_parser(subparsers)


class _ConfigOpts(cfg.ConfigOpts):
    """oslo.config's ConfigOpts without argparse's prefix matching.

    argparse looks at every argument with the top-level parser first, and
    with prefix matching ``fix --config`` would be an ambiguous abbreviation
    of ``--config-file``/``--config-dir``.
    """

    def _pre_setup(self, *args, **kwargs):
        result = super()._pre_setup(*args, **kwargs)
        self._oparser.allow_abbrev = False
        return result


def make_conf(argv):
    conf = _ConfigOpts()
    sc_conf.register_opts(conf)
    conf.register_opts(common.LIBVIRT_OPTS, group='libvirt')
    conf.register_cli_opt(cfg.SubCommandOpt(
        'command', title='commands', handler=_add_parsers))
    default_files = ([DEFAULT_CONFIG] if os.path.exists(DEFAULT_CONFIG)
                     else [])
    conf(argv, project='nova', prog='nova-shared-cache',
         default_config_files=default_files)
    return conf


#: What an operator can do when this host's addresses cannot be read.
_ADDRESS_REMEDY = {
    'audit': '; or pass --no-ceph to audit without asking Ceph (sharing is '
             'then judged by <shareable/> and the local domains only)',
    'fix': '; or pass --no-ceph to fix what <shareable/> and the local '
           'domains show',
    'fence': "; --force fences without this check (make sure the client is "
             "not one of this host's domains)",
}


def check_input(conf):
    """Check the command line and nova.conf before any connection."""
    check = getattr(MODULES[conf.command.name], 'check_input', None)
    if check is not None:
        check(conf)


class _ParseExit(Exception):
    """argparse ended the parsing (usage error or --help)."""

    def __init__(self, code, stdout, stderr):
        super().__init__(code)
        self.code, self.stdout, self.stderr = code, stdout, stderr


def _parse_args(argv, err):
    captured_out, captured_err = io.StringIO(), io.StringIO()
    exited = None
    try:
        with contextlib.redirect_stdout(captured_out), \
                contextlib.redirect_stderr(captured_err):
            return make_conf(argv)
    except SystemExit as done:
        exited = OK if done.code is None else done.code
        if not isinstance(exited, int):
            captured_err.write('%s\n' % exited)
            exited = ERROR
    finally:
        if exited is None:
            # Whatever else oslo.config printed (a deprecation warning...).
            err.write(captured_out.getvalue() + captured_err.getvalue())
    raise _ParseExit(exited, captured_out.getvalue(),
                     captured_err.getvalue())


def _asks_json(argv):
    """--json or audit's --format json: one JSON document, come what may."""
    for i, arg in enumerate(argv):
        if arg == '--json' or arg == '--format=json' or (
                arg == '--format' and argv[i + 1:i + 2] == ['json']):
            return True
    return False


def _owed_metrics(conf, argv, error):
    """Where a failed audit --format prometheus still writes its metrics.

    None when nothing is owed: another command or format, or a usage error
    (the operator's to fix at the command line). Else the --output file,
    or '' for standard output. When nova.conf itself could not be read the
    options come from the command line as given.
    """
    if isinstance(error, exception.UsageError):
        return None
    if conf is not None:
        if (conf.command.name != 'audit'
                or audit_cmd.audit_format(conf.command) != 'prometheus'):
            return None
        return conf.command.output or ''
    return audit_cmd.metrics_output(argv)


def _write_owed_metrics(conf, argv, error, out, err):
    output = _owed_metrics(conf, argv, error)
    if output is not None:
        audit_cmd.failed(output, out, err, type(error).__name__)


def _document(doc, code):
    doc.setdefault('exit_code', code)
    doc.setdefault('meaning', MEANINGS.get(code, 'error'))
    return json.dumps(doc, indent=2, sort_keys=True) + '\n'


def _error_document(message, error_type, command, code=ERROR, **extra):
    return _document(dict(extra, error=message, error_type=error_type,
                          command=command), code)


def main(argv=None, out=None, err=None):
    """Run one command; its exit status.

    With --json, stdout gets exactly one JSON document whatever happens
    (errors too: {"error": ..., "exit_code": 2, "meaning": "error"}).
    """
    out = out or sys.stdout
    err = err or sys.stderr
    argv = list(sys.argv[1:] if argv is None else argv)
    as_json = _asks_json(argv)
    # With --json a failing command's partial output is dropped, so that
    # one document comes out.
    sink = io.StringIO() if as_json else out
    command = conf = None
    try:
        conf = _parse_args(argv, err)
        command = conf.command.name
        check_input(conf)
        code = MODULES[command].run(conf, sink)
    except _ParseExit as done:
        err.write(done.stderr)
        if done.code == OK:     # --help
            out.write(_document({'help': done.stdout}, OK) if as_json
                      else done.stdout)
        elif as_json:
            lines = done.stderr.strip().splitlines() or ['usage error']
            out.write(_error_document(
                lines[-1].split(' error: ', 1)[-1], 'UsageError', None,
                code=done.code, usage='\n'.join(lines[:-1])))
        return done.code
    except (exception.SharedCacheError, cfg.Error,
            KeyboardInterrupt) as error:
        message = str(error) or type(error).__name__
        if isinstance(error, hostnet.AddressError):
            message += _ADDRESS_REMEDY.get(command, '')
        elif isinstance(error, KeyboardInterrupt):
            message = 'interrupted'
        err.write('nova-shared-cache: %s\n' % message)
        if as_json:
            out.write(_error_document(message, type(error).__name__,
                                      command))
        else:
            _write_owed_metrics(conf, argv, error, out, err)
        return ERROR
    except Exception as error:  # never a traceback and exit 1 ("findings")
        message = 'unexpected %s: %s' % (type(error).__name__, error)
        err.write('nova-shared-cache: %s\n' % message)
        if as_json:
            out.write(_error_document(message, type(error).__name__,
                                      command))
        else:
            _write_owed_metrics(conf, argv, error, out, err)
        return ERROR
    finally:
        cephclient.REGISTRY.close_all()
    if as_json:
        try:
            doc = json.loads(sink.getvalue())
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            message = 'the %s command printed no JSON document' % command
            err.write('nova-shared-cache: %s\n' % message)
            out.write(_error_document(message, 'UnexpectedOutput', command))
            return ERROR
        out.write(_document(doc, code))
    return code


if __name__ == '__main__':
    sys.exit(main())
