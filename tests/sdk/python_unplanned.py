#!/usr/bin/env python3
"""One identify and one track event the source's tracking plan does not declare, through segment-analytics-python,
so that the track is quarantined (and later redriven with `tributary quarantine redrive`).

Driven by tests/tests/sdk_clients.rs (run with the venv python of scripts/test.sh):

    python_unplanned.py --host http://127.0.0.1:PORT --write-key KEY --prefix P [--event NAME]

Every client setting is the default except the host and the write key. Message ids are `P-identify` and
`P-track`. Prints a JSON summary (ids, messageIds); exits non-zero if the client reported an error. A quarantined
event is still a success for the client: the server answers 200.
"""

import argparse
import json
import logging
import sys

from segment.analytics.client import Client
from errorlog import ErrorLog


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True)
    parser.add_argument("--write-key", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--event", default="Wishlist Viewed", help="the unplanned track event name")
    args = parser.parse_args()
    p = args.prefix

    errors = []
    log = ErrorLog()
    logging.getLogger("segment").addHandler(log)

    def on_error(error, batch):
        errors.append(f"{type(error).__name__}: {error} ({len(batch)} messages)")

    client = Client(args.write_key, host=args.host, on_error=on_error)
    user = f"{p}-user"
    calls = [
        client.identify(user_id=user, traits={"plan": "pro"}, message_id=f"{p}-identify"),
        client.track(user_id=user, event=args.event, properties={"sku": f"{p}-sku", "listSize": 3},
                     message_id=f"{p}-track"),
    ]
    for ok, msg in calls:
        if not ok:
            errors.append(f"client refused to queue {msg.get('type')} {msg.get('messageId')}")
    client.shutdown()

    errors.extend(f"logged: {m}" for m in log.records)
    summary = {
        "userId": user,
        "event": args.event,
        "messageIds": [msg["messageId"] for _, msg in calls],
        "errors": errors,
    }
    json.dump(summary, sys.stdout, default=str)
    sys.stdout.write("\n")
    if errors:
        sys.stderr.write("segment-analytics-python reported errors:\n  " + "\n  ".join(errors) + "\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
