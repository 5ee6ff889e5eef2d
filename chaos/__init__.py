"""The fault suite: load through the real capture API while faults hit the stack, then proof that
every event answered 200 was stored exactly once or dead-lettered with a reason.

    python -m chaos --mode ci      # short, on every CI run (support-files/dev/make-test.sh)
    python -m chaos --mode full    # `make chaos`: 1,000 events/s, the whole fault schedule
    python -m chaos --topology cluster   # the same through both app nodes of the cluster while a
                                         # ClickHouse replica, the Redis master and node a are killed

See docs/reliability.md.
"""
