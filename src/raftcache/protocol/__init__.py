"""The Raft protocol's shared vocabulary: messages, the cluster configuration, validation.

Rule: a leaf package. It imports nothing of raftcache outside itself, so that the Raft core
(``raftcache.raft``), the transports (``raftcache.network``) and the storage
(``raftcache.storage``) can all depend on it without depending on each other:

- ``messages``: the RPCs and the log entry, as plain dataclasses.
- ``configuration``: voters and learners with their addresses, and its one encoding.
- ``validation``: the structural checks a transport runs on an inbound request.

``raftcache.raft.messages``, ``raftcache.raft.configuration`` and ``raftcache.raft.validation``
re-export these modules under their older names.
"""
