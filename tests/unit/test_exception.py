"""Every error renders its message with the keywords it is raised with."""

from nova_shared_cache import exception
from nova_shared_cache import hookinstall
from tests.unit import base

RAISED_WITH = {
    exception.ConfigError: {'option': 'cache_mode', 'reason': 'bad'},
    exception.BackendLoadError: {'backend': 'rbd', 'reason': 'boom'},
    exception.UnsupportedNova: {'nova_version': '29.0.0', 'reason': 'old'},
    exception.SharedDiskError: {'volume_id': 'v1', 'backend': 'rbd',
                                'volume': 'pool/img', 'reason': 'qcow2'},
    exception.CephError: {'what': 'connect', 'reason': 'timed out'},
    exception.GuardUnavailable: {'reason': 'no keyring'},
    exception.AttachRefused: {'volume_id': 'v1', 'volume': 'pool/img',
                              'instance': 'i1', 'reason': 'features'},
    exception.LibvirtError: {'what': 'connect to libvirt', 'reason': 'down'},
    exception.LiveSwitchError: {'domain': 'instance-1', 'disk': 'vdb',
                                'reason': 'rolled back'},
    exception.UsageError: {'reason': 'fix needs --config'},
    exception.LocalAddressesUnknown: {'reason': 'no /proc'},
    exception.BadClientAddress: {'address': '10.0.0.7', 'reason': 'no port'},
    exception.ProbeImageError: {'reason': 'no apt-get'},
    exception.VerifyError: {'reason': 'volume type t is not multiattach'},
    hookinstall.HookInstallError: {'path': '/etc/libvirt/hooks/qemu.d/x',
                                   'reason': 'no python'},
}


class ExceptionTest(base.TestCase):

    def test_every_error_is_covered(self):
        # The product's errors (the lab, lab/, has its own subclasses).
        self.assertEqual({cls for cls in
                          exception.SharedCacheError.__subclasses__()
                          if cls.__module__.startswith('nova_shared_cache.')},
                         set(RAISED_WITH))

    def test_messages_render(self):
        for cls, kwargs in RAISED_WITH.items():
            with self.subTest(error=cls.__name__):
                message = str(cls(**kwargs))
                self.assertNotIn('%(', message)
                for value in kwargs.values():
                    self.assertIn(value, message)

    def test_not_value_or_import_errors(self):
        # Nova's load_compute_driver rewrites those into a misleading text.
        for cls in RAISED_WITH:
            self.assertFalse(issubclass(cls, (ValueError, ImportError)))

    def test_wrong_keywords_still_say_what_was_passed(self):
        message = str(exception.ConfigError(optoin='cache_mode'))
        self.assertIn("optoin='cache_mode'", message)

    def test_nova_shows_the_message_to_api_users(self):
        # Nova's own rule for what ``server event show`` (details), instance
        # faults and notifications carry: format_message(), else only the
        # class name. A refused attach must say why through the API.
        from nova.compute import utils as compute_utils
        for cls, kwargs in RAISED_WITH.items():
            with self.subTest(error=cls.__name__):
                error = cls(**kwargs)
                shown = compute_utils.exception_to_dict(error)['message']
                self.assertEqual(error.format_message(), shown)
                self.assertNotEqual(cls.__name__, shown)
                for value in kwargs.values():
                    if cls is not exception.AttachRefused:
                        self.assertIn(value, shown)
        refused = exception.AttachRefused(**RAISED_WITH[
            exception.AttachRefused])
        self.assertEqual('nova-shared-cache refused volume v1: features',
                         refused.format_message())
