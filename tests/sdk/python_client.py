#!/usr/bin/env python3
"""Sends one identify, track, page and alias through an official, unmodified Python client.

Driven by tests/tests/sdk_clients.rs (run with the venv python of scripts/test.sh):

    python_client.py --sdk segment|rudder --host http://127.0.0.1:PORT --write-key KEY --prefix P [--gzip]

`--sdk segment` is segment-analytics-python, `--sdk rudder` is rudder-sdk-python (a fork with the same `Client`
API; it gzips by default, so --gzip changes nothing there, and it sends identify traits only in `context.traits`).
Every setting is the client's default except the host, the write key and (with --gzip) `gzip=True`. Each call has
an explicit messageId (`P-identify`, ...) and an explicit timestamp five minutes in the past, so the server's
clock-skew correction can be checked. Prints a JSON summary of what was sent; exits non-zero if the client
reported any error (its `on_error` callback, or an error logged by the client).
"""

import argparse
import importlib
import json
import logging
import sys
from datetime import datetime, timedelta, timezone
from errorlog import ErrorLog

# --sdk → (client name, package, logger the client logs its errors to)
SDKS = {
    "segment": ("segment-analytics-python", "segment.analytics", "segment"),
    "rudder": ("rudder-sdk-python", "rudderstack.analytics", "rudderstack"),
}


def fixed_timestamp():
    """Five minutes ago, truncated to milliseconds (the precision Tributary keeps)."""
    ts = datetime.now(timezone.utc) - timedelta(minutes=5)
    return ts.replace(microsecond=ts.microsecond // 1000 * 1000)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sdk", required=True, choices=sorted(SDKS))
    parser.add_argument("--host", required=True)
    parser.add_argument("--write-key", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--gzip", action="store_true")
    args = parser.parse_args()
    p = args.prefix
    name, package, logger = SDKS[args.sdk]
    Client = importlib.import_module(f"{package}.client").Client
    VERSION = importlib.import_module(f"{package}.version").VERSION

    errors = []
    log = ErrorLog()
    logging.getLogger(logger).addHandler(log)

    def on_error(error, batch):
        errors.append(f"{type(error).__name__}: {error} ({len(batch)} messages)")

    options = {"host": args.host, "on_error": on_error}
    if args.gzip:
        options["gzip"] = True
    client = Client(args.write_key, **options)

    ts = fixed_timestamp()
    user = f"{p}-user"
    traits = {"email": f"{p}@example.com", "name": f"{p} Tester", "plan": "enterprise"}
    properties = {
        "orderId": f"{p}-order",
        "revenue": 42.5,
        "currency": "EUR",
        "products": [
            {"productId": f"{p}-sku-1", "name": "Pen", "price": 2.5, "quantity": 5},
            {"productId": f"{p}-sku-2", "name": "Notebook", "price": 30.0, "quantity": 1},
        ],
    }
    page_properties = {"url": f"https://example.com/{p}/pricing", "title": "Pricing"}

    results = [
        client.identify(user_id=user, traits=traits, timestamp=ts, message_id=f"{p}-identify"),
        client.track(user_id=user, event="Order Completed", properties=properties, timestamp=ts,
                     message_id=f"{p}-track"),
        client.page(user_id=user, name="Pricing", properties=page_properties, timestamp=ts,
                    message_id=f"{p}-page"),
        client.alias(previous_id=f"{p}-anon", user_id=user, timestamp=ts, message_id=f"{p}-alias"),
    ]
    for ok, msg in results:
        if not ok:
            errors.append(f"client refused to queue {msg.get('type')} {msg.get('messageId')}")

    client.shutdown()  # flush() then join(): every queued message has been answered or given up on

    errors.extend(f"logged: {m}" for m in log.records)
    summary = {
        "client": name,
        "version": VERSION,
        "host": args.host,
        "gzip": bool(client.gzip),
        "timestamp": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "messages": [msg for _, msg in results],
        "errors": errors,
    }
    json.dump(summary, sys.stdout, default=str)
    sys.stdout.write("\n")
    if errors:
        sys.stderr.write(f"{name}: client reported errors:\n  " + "\n  ".join(errors) + "\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
