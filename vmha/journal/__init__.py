"""vmha's durable local state: the journal and its outbox.

``db.Journal`` is one SQLite file (``[database] path``) in WAL mode with
``synchronous=FULL``; every write happens in ``Journal.transaction()``.
``outbox.Outbox`` stores outgoing notifications in the caller's
transaction, so a notification exists exactly when the state change that
caused it does.  ``sender.OutboxSender`` delivers them in order through a
``vmha.notify.base.Sink`` and marks each delivered; what is not delivered
when the agent stops or dies is sent on the next start.
"""
