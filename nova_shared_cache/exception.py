"""Errors raised by nova-shared-cache.

Every error carries a ``msg_fmt`` template filled from keyword arguments, so
the message always names the thing that is wrong (an option, a volume, a
backend, a Nova method). None of these derive from ``ValueError`` or
``ImportError``: Nova's ``load_compute_driver`` turns those into a misleading
"not of type ComputeDriver" / "unable to load" message, while any other
exception stops nova-compute with our own text. Like Nova's own errors they
answer ``format_message()``, which is how Nova decides what an API user sees.
"""


class SharedCacheError(Exception):
    msg_fmt = "nova-shared-cache failed"
    #: What the API shows, when it differs from msg_fmt (same keywords).
    api_fmt = None

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        try:
            message = self.msg_fmt % kwargs
        except (KeyError, TypeError, ValueError):
            # A wrong keyword is a programming error, but the operator must
            # still see what was passed rather than a generic sentence.
            details = ", ".join(
                "%s=%r" % item for item in sorted(kwargs.items()))
            message = "%s (%s)" % (self.msg_fmt, details)
        super().__init__(message)

    def format_message(self):
        # Nova shows an exception's text to API users (``server event
        # show`` details, instance faults, notifications) only through
        # ``format_message()``; any other exception is reduced to its class
        # name there. These messages name options, volumes and images, never
        # secrets, so they are meant to be seen.
        if self.api_fmt:
            try:
                return self.api_fmt % self.kwargs
            except (KeyError, TypeError, ValueError):
                pass
        return str(self)


class ConfigError(SharedCacheError):
    msg_fmt = ("Invalid value for option [shared_cache] %(option)s: "
               "%(reason)s")


class BackendLoadError(SharedCacheError):
    msg_fmt = ("Cannot load shared-volume backend '%(backend)s' named in "
               "[shared_cache] enabled_backends (entry point namespace "
               "nova_shared_cache.backends): %(reason)s")


class UnsupportedNova(SharedCacheError):
    msg_fmt = ("nova-shared-cache refuses to start on Nova %(nova_version)s: "
               "%(reason)s")


class SharedDiskError(SharedCacheError):
    msg_fmt = ("Volume %(volume_id)s (%(backend)s %(volume)s) cannot be "
               "attached as a shared disk: %(reason)s")


class CephError(SharedCacheError):
    msg_fmt = "nova-shared-cache could not %(what)s: %(reason)s"


class GuardUnavailable(SharedCacheError):
    msg_fmt = "nova-shared-cache cannot check RBD images: %(reason)s"


class AttachRefused(SharedCacheError):
    msg_fmt = ("Attach of volume %(volume_id)s (image %(volume)s) to instance "
               "%(instance)s refused by nova-shared-cache: %(reason)s")
    #: What the API shows (``server event show`` details). Nova cuts it at
    #: 255 characters, so it leaves out what the user already knows (the
    #: instance, the image named after the volume), and every reason starts
    #: with the option that decided.
    api_fmt = "nova-shared-cache refused volume %(volume_id)s: %(reason)s"


class LibvirtError(SharedCacheError):
    msg_fmt = "nova-shared-cache could not %(what)s: %(reason)s"


class LiveSwitchError(SharedCacheError):
    msg_fmt = ("Live cache switch of disk %(disk)s of domain %(domain)s "
               "failed: %(reason)s")


class UsageError(SharedCacheError):
    msg_fmt = "%(reason)s"


class LocalAddressesUnknown(SharedCacheError):
    msg_fmt = ("nova-shared-cache cannot tell this host's Ceph clients from "
               "other hosts' clients: %(reason)s")


class BadClientAddress(SharedCacheError):
    msg_fmt = ("%(address)r is not a Ceph client address (%(reason)s); "
               "expected IP:PORT/NONCE as 'status' shows it, for example "
               "10.0.0.7:0/2041893277, v2:10.0.0.7:0/2041893277 or "
               "[fd00::7]:0/2041893277")


class ProbeImageError(SharedCacheError):
    msg_fmt = "cannot build the probe image: %(reason)s"


class VerifyError(SharedCacheError):
    msg_fmt = "verify: %(reason)s"
