"""Replace a file in one step: readers see the old text or the new."""

import os
import tempfile


def replace(path, text, mode, tmp_dir=None):
    """Write ``text`` to ``path`` through a synced temporary file.

    The temporary file (hidden, in ``tmp_dir``, default the file's own
    directory: it must be on the same file system) gets ``mode`` and is
    renamed over ``path``; on any failure it is removed and ``path`` is as
    it was.
    """
    directory = tmp_dir or os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix='.%s.' % os.path.basename(path),
                               dir=directory)
    try:
        with os.fdopen(fd, 'w', encoding='utf-8') as f:
            f.write(text)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
