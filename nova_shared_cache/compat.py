"""Check, before the driver starts, that Nova is one this extension knows.

The driver overrides private methods of Nova's ``LibvirtDriver``. If a Nova
release renames one or changes its arguments, the override would silently
stop being called (or break every attach), so nova-compute must refuse to
start instead, saying which method and which Nova.
"""

import inspect

from nova_shared_cache import exception

#: Nova major versions the test suites run against (2024.2 Dalmatian = 30
#: up to 2026.2 = 34). Keep in sync with the README and setup.cfg.
SUPPORTED_NOVA = range(30, 35)

#: method name -> the leading parameters the override relies on; where
#: releases differ, each accepted variant.
REQUIRED_METHODS = {
    '_set_cache_mode': [('self', 'conf')],
    '_get_volume_config': [
        # Nova 34 dropped the instance (it served only AMD SEV).
        ('self', 'connection_info', 'disk_info'),
        ('self', 'instance', 'connection_info', 'disk_info'),
    ],
    '_connect_volume': [('self', 'context', 'connection_info', 'instance')],
    'attach_volume': [('self', 'context', 'connection_info', 'instance')],
    'swap_volume': [('self', 'context', 'old_connection_info',
                     'new_connection_info', 'instance')],
    'spawn': [('self', 'context', 'instance')],
    '_get_guest_storage_config': [('self', 'context', 'instance')],
    '_live_migration_operation': [('self', 'context', 'instance')],
}


def nova_version():
    from nova import version
    return version.version_string()


def _major(version_string):
    try:
        return int(version_string.split('.', 1)[0])
    except ValueError:
        return None


def check(driver_class, version_string):
    """Raise UnsupportedNova unless ``driver_class`` has what we override."""
    major = _major(version_string)
    if major not in SUPPORTED_NOVA:
        raise exception.UnsupportedNova(
            nova_version=version_string,
            reason="this release is not tested with nova-shared-cache "
                   "(supported: Nova %d to %d)" % (
                       SUPPORTED_NOVA[0], SUPPORTED_NOVA[-1]))
    for name, expected in REQUIRED_METHODS.items():
        expected = [tuple(v) for v in expected]
        method = getattr(driver_class, name, None)
        if not callable(method):
            raise exception.UnsupportedNova(
                nova_version=version_string,
                reason="%s.%s does not exist" % (driver_class.__name__, name))
        params = tuple(inspect.signature(method).parameters)
        if not any(params[:len(variant)] == variant for variant in expected):
            raise exception.UnsupportedNova(
                nova_version=version_string,
                reason="%s.%s%s does not start with the parameters %s" % (
                    driver_class.__name__, name, inspect.signature(method),
                    ' or '.join('(%s)' % ', '.join(v) for v in expected)))


def positional_parameters(function):
    """Parameter names of an unbound method, without ``self``."""
    try:
        return tuple(inspect.signature(function).parameters)[1:]
    except (TypeError, ValueError):
        return ()


def argument(parameters, name, args, kwargs, default=None):
    """The value passed for parameter ``name`` of a call ``(*args, **kwargs)``.

    ``parameters`` comes from positional_parameters(); a parameter the
    method does not have gives ``default``.
    """
    if name in kwargs:
        return kwargs[name]
    try:
        return args[parameters.index(name)]
    except (ValueError, IndexError):
        return default
