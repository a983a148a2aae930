#!/usr/bin/env python3
"""Two identified shoppers through segment-analytics-python, each with a consent banner choice: A grants
advertising and analytics, B grants analytics but denies advertising. Each is identified (email, name) and then
completes an order, with the banner's choice in `context.consent.categoryPreferences` on both calls.

Driven by tests/tests/deliver_e2e.rs (run with the venv python of scripts/test.sh):

    python_consent.py --host http://127.0.0.1:PORT --write-key KEY --prefix P

Every client setting is the default except the host and the write key. User ids are `P-a` and `P-b`, message ids
`P-a-identify`, `P-a-track`, `P-b-identify`, `P-b-track`. Prints a JSON summary (ids, emails, messageIds); exits
non-zero if the client reported an error.
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
    args = parser.parse_args()
    p = args.prefix

    errors = []
    log = ErrorLog()
    logging.getLogger("segment").addHandler(log)

    def on_error(error, batch):
        errors.append(f"{type(error).__name__}: {error} ({len(batch)} messages)")

    client = Client(args.write_key, host=args.host, on_error=on_error)

    shoppers = {
        "a": {"name": "Ada Allowed", "advertising": True, "revenue": 42.5},
        "b": {"name": "Bo Blocked", "advertising": False, "revenue": 17.0},
    }
    summary = {"users": {}, "messageIds": [], "errors": errors}
    calls = []
    for key, shopper in shoppers.items():
        user = f"{p}-{key}"
        email = f"{p}.{key}@example.com"
        consent = {
            "consent": {"categoryPreferences": {"Advertising": shopper["advertising"], "Analytics": True}}
        }
        properties = {
            "orderId": f"{user}-order",
            "revenue": shopper["revenue"],
            "currency": "EUR",
            "products": [
                {"productId": f"{user}-sku-1", "name": "Pen", "price": 2.5, "quantity": 1},
                {"productId": f"{user}-sku-2", "name": "Notebook", "price": shopper["revenue"] - 2.5, "quantity": 1},
            ],
        }
        identify = client.identify(user_id=user, traits={"email": email, "name": shopper["name"]}, context=consent,
                                   message_id=f"{user}-identify")
        track = client.track(user_id=user, event="Order Completed", properties=properties, context=consent,
                             message_id=f"{user}-track")
        calls.extend([identify, track])
        summary["users"][key] = {
            "userId": user,
            "email": email,
            "messageIds": [identify[1]["messageId"], track[1]["messageId"]],
        }
    for ok, msg in calls:
        if not ok:
            errors.append(f"client refused to queue {msg.get('type')} {msg.get('messageId')}")
    client.shutdown()  # flush() then join(): every queued message has been answered or given up on

    errors.extend(f"logged: {m}" for m in log.records)
    summary["messageIds"] = [msg["messageId"] for _, msg in calls]
    json.dump(summary, sys.stdout, default=str)
    sys.stdout.write("\n")
    if errors:
        sys.stderr.write("segment-analytics-python reported errors:\n  " + "\n  ".join(errors) + "\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
