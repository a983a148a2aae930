#!/usr/bin/env python3
"""A visitor's journey through segment-analytics-python: anonymous on a laptop (with a consent banner choice),
anonymous on a phone, login on the phone, then login on the laptop, so identity resolution has to stitch two
devices into one profile.

Driven by tests/tests/sdk_clients.rs (run with the venv python of scripts/test.sh):

    python_journey.py --host http://127.0.0.1:PORT --write-key KEY --prefix P

One client per device, as two real devices would have; every setting is the client's default except the host and
the write key. Timestamps are explicit and an hour apart, so event-time trait resolution is observable. Prints a
JSON summary (ids, messageIds); exits non-zero if a client reported an error.
"""

import argparse
import json
import logging
import sys
from datetime import datetime, timedelta, timezone

from segment.analytics.client import Client
from errorlog import ErrorLog


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True)
    parser.add_argument("--write-key", required=True)
    parser.add_argument("--prefix", required=True)
    args = parser.parse_args()
    p = args.prefix

    errors = []
    log = ErrorLog()
    logging.getLogger("segment").addHandler(log)

    def on_error(error, batch):
        errors.append(f"{type(error).__name__}: {error} ({len(batch)} messages)")

    laptop = Client(args.write_key, host=args.host, on_error=on_error)
    phone = Client(args.write_key, host=args.host, on_error=on_error)

    start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=6)
    at = lambda hours: start + timedelta(hours=hours)
    user, laptop_anon, phone_anon = f"{p}-user", f"{p}-laptop", f"{p}-phone"
    email = f"{p}.Shopper@Example.com"
    consent = {"consent": {"categoryPreferences": {"Advertising": True, "Analytics": False}}}

    calls = [
        laptop.page(anonymous_id=laptop_anon, name="Home", properties={"url": "https://example.com/"},
                    timestamp=at(0), message_id=f"{p}-1"),
        laptop.track(anonymous_id=laptop_anon, event="Product Viewed", properties={"sku": "pen"},
                     context=consent, timestamp=at(1), message_id=f"{p}-2"),
        phone.page(anonymous_id=phone_anon, name="Pricing", timestamp=at(2), message_id=f"{p}-3"),
        phone.identify(user_id=user, anonymous_id=phone_anon,
                       traits={"email": email, "plan": "free", "name": "Sam Shopper"},
                       timestamp=at(3), message_id=f"{p}-4"),
        laptop.identify(user_id=user, anonymous_id=laptop_anon, traits={"plan": "pro"},
                        timestamp=at(4), message_id=f"{p}-5"),
    ]
    for ok, msg in calls:
        if not ok:
            errors.append(f"client refused to queue {msg.get('type')} {msg.get('messageId')}")
    phone.shutdown()
    laptop.shutdown()

    errors.extend(f"logged: {m}" for m in log.records)
    summary = {
        "userId": user,
        "anonymousIds": [laptop_anon, phone_anon],
        "email": email,
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
