"""``nova-shared-cache verify``: a coherence check through the cloud's API.

Two probe servers share one multiattach volume and pass tokens through it
(``guest``); the command creates them, reads their consoles and cleans up
(``runner``). The probe image is built from Debian packages (``image``).
"""
