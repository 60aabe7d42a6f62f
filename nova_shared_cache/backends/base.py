"""The interface every shared-volume backend implements."""

import abc


class SharedVolumeBackend(metaclass=abc.ABCMeta):
    """A storage backend whose multiattach volumes nova-shared-cache guards.

    Backends are loaded with stevedore from the ``nova_shared_cache.backends``
    namespace; the entry-point name is the name used in
    ``[shared_cache] enabled_backends`` and is set as ``name`` by the loader.
    A backend gets the whole oslo.config object so it can read the options it
    registers itself; it must not do I/O in ``__init__``.
    """

    #: The entry-point name; set by the loader.
    name = None

    def __init__(self, conf):
        self.conf = conf

    @abc.abstractmethod
    def owns(self, connection_info) -> bool:
        """Does this connection_info describe a volume of this backend?

        Pure: look at the dict only. Called on every volume-XML path.
        """

    def describe(self, connection_info) -> str:
        """A short, secret-free name of the volume for logs and errors."""
        data = connection_info.get('data') or {}
        return str(data.get('name') or data.get('volume_id') or '?')

    def bind_host(self, host) -> None:
        """Nova's libvirt Host (``get_connection()``), given at start.

        Backends that read libvirt secrets keep it; no I/O here.
        """

    def report_at_start(self) -> None:
        """Log once, at nova-compute's start, what the checks can do.

        Must not block nor raise for the sake of the storage (the driver
        logs anything raised as a warning and starts anyway).
        """

    def on_connect(self, context, connection_info, instance,
                   shared: bool, new_attachment: bool = False) -> None:
        """Connect-time hook, called before Nova connects the volume.

        ``shared`` says whether the policy treats the volume as a shared disk
        (multiattach). ``new_attachment`` is True when the volume is being
        attached to the instance (attach, swap, first boot) and False when
        an existing attachment is connected again (reboot, power on, rescue,
        resize, migration), where the image may legitimately still be open
        by the instance's previous QEMU process. A backend checks or
        prepares the storage side here and raises to refuse the attach; the
        domain has not been touched yet. The default does nothing.

        Fail-safe contract: only a new attachment may be refused, and only
        by a policy the operator chose; a reconnect never fails here, and a
        check that cannot run (storage down, no credentials) logs a warning
        and lets Nova go on, as stock Nova would.
        """
