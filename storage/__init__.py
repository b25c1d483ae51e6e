"""Message and metadata storage: bytes on disk, no AMQP knowledge beyond them.

What the engine uses:

- :class:`storage.store.LogStore` (one per data directory): ``queue_log(vhost, name)``
  gives a durable queue its :class:`storage.log.QueueLog`; ``want_sync()`` asks for
  a group-commit fsync and returns the epoch to wait for, and
  ``sync_waiters`` holds the :class:`storage.interfaces.SyncWaiter` objects told when an
  epoch is safe (or failed); ``drop_queue_log``, ``quarantine``, ``housekeep``.
- :class:`storage.log.QueueLog` (one per durable queue): ``append`` a message
  record (returns its ref), ``read_full(ref)``, ``settle(ref)``,
  ``mark_delivered(ref)``, ``recover()``, and the ``on_lost`` callback the queue
  registers to hear which refs a failed write lost.
- :mod:`storage.records`: the record format and reading a log directory without
  changing it (lost+found); :mod:`storage.meta`: the durable metadata file;
  :mod:`storage.lostfound`: queue data recovery could not match;
  :mod:`storage.files`: private files and directories; :mod:`storage.fileio`: the
  file layer all of the above goes through (the real one, or a test's).
"""
