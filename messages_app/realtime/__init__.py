"""Room events from Redis to this process's sockets, one job per module.

- ``frames``: frames as the fan-out handles them (version checks, coalescing);
- ``members``: one socket (the hold until its snapshot, the versions it holds,
  the bound on bytes queued for it, ``CHAT_SOCKET_BUFFER_BYTES``);
- ``subscriber``: the Redis subscription on ``redis.asyncio`` (one Redis, or a
  Redis Cluster with sharded pub/sub), with health checks;
- ``hub``: the rooms and users of this process, the fan-out, the repair after an
  outage, the heartbeat (``CHAT_RECONCILE_SECONDS``) and the socket commands;
- ``reconcile``: the database reads of the repair and of the heartbeat;
- ``daphne``: everything specific to daphne (the fast write path,
  ``CHAT_DAPHNE_FAST_PATH``), alone because it reads private attributes.

docs/architecture.md ("Room events") tells how a change travels.
"""
