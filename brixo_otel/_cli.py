"""`brixo-otel`: send a signal by hand, inspect and repair the outbox, run the local server.

Operators reach for it when feedback "went missing": `outbox status` says where every signal is,
`outbox dead` says why the dead letters died, `outbox retry` gives them another go after the
cause (a bad key, an outage) is fixed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from brixo_otel._delivery._worker import LINK_STAGE
from brixo_otel._settings import FIELDS, default_outbox_path

if TYPE_CHECKING:
    from brixo_otel._delivery._outbox import Outbox


def _outbox_path(given: str | None) -> str:
    return given or os.environ.get(FIELDS["outbox_path"].metadata["env"]) or default_outbox_path()


def _open_outbox(path: str) -> Outbox:
    from brixo_otel._delivery._outbox import Outbox

    if path != ":memory:" and not os.path.exists(path):
        raise SystemExit(f"brixo-otel: no outbox at {path} (set --path or BRIXO_OUTBOX_PATH)")
    return Outbox(path)


def _send(args: argparse.Namespace) -> int:
    import brixo_otel

    client = brixo_otel.configure(outbox_path=_outbox_path(args.path))
    if not client.exporters:
        print("brixo-otel: no destination: set BRIXO_API_KEY", file=sys.stderr)
        return 2
    try:
        signal = client.feedback(
            args.value,
            message_id=args.message_id,
            conversation_id=args.conversation_id,
            user_message=args.user_message,
            occurred_at=args.occurred_at,
        )
    except brixo_otel.InvalidSignal as exc:
        print(f"brixo-otel: {exc}", file=sys.stderr)
        return 2
    delivered = client.flush(args.timeout)
    client.shutdown(timeout=1.0)
    state = (
        "delivered" if delivered else "queued (not yet delivered; see `brixo-otel outbox status`)"
    )
    print(f"signal {signal.id} {signal.value} on {signal.target} {signal.target_id!r}: {state}")
    return 0 if delivered else 1


def _status(args: argparse.Namespace) -> int:
    outbox = _open_outbox(_outbox_path(args.path))
    try:
        stats = outbox.stats()
        rows, stored = outbox.totals()
    finally:
        outbox.close()
    if args.json:
        print(json.dumps({"destinations": stats, "rows": rows, "bytes": stored}, indent=2))
        return 0
    links = stats.pop(LINK_STAGE, {})
    columns = ("pending", "in_flight", "delivered", "skipped", "dead", "corrupt")
    print(f"{'destination':<16}" + "".join(f"{c:>11}" for c in columns))
    for destination, counts in sorted(stats.items()):
        print(f"{destination:<16}" + "".join(f"{counts.get(c, 0):>11}" for c in columns))
    print(f"stored: {rows} rows, {stored} bytes")
    waiting = links.get("pending", 0) + links.get("in_flight", 0)
    print(
        f"links: {links.get('linked', 0)} linked, {links.get('unresolved', 0)} unresolved "
        f"(window closed first), {waiting} waiting for their span, "
        f"{links.get('not_applicable', 0)} conversation ratings"
    )
    return 0


def _dead(args: argparse.Namespace) -> int:
    outbox = _open_outbox(_outbox_path(args.path))
    try:
        letters = outbox.dead_letters(args.destination, limit=args.limit)
    finally:
        outbox.close()
    for letter in letters:
        created = datetime.fromtimestamp(letter.created_at, timezone.utc).isoformat(
            timespec="seconds"
        )
        target = f"{letter.signal.target} {letter.signal.target_id!r}" if letter.signal else "?"
        print(
            f"{letter.signal_id}  {letter.destination}  {target}  created {created}  "
            f"attempts {letter.attempts}: {letter.reason}"
        )
    if not letters:
        print("no dead letters")
    return 0


def _retry(args: argparse.Namespace) -> int:
    outbox = _open_outbox(_outbox_path(args.path))
    try:
        count = outbox.requeue_dead(args.destination)
    finally:
        outbox.close()
    print(f"{count} dead letter(s) back to pending; the next running client delivers them")
    return 0


def _dev_server(args: argparse.Namespace) -> int:
    from brixo_otel.testing import run_dev_server

    run_dev_server(
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        db_path=args.db,
        require_known_ids=not args.accept_unknown_ids,
    )
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="brixo-otel", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    send = commands.add_parser("send", help="send one feedback signal and wait for delivery")
    send.add_argument("value", help="thumbs_up or thumbs_down")
    target = send.add_mutually_exclusive_group(required=True)
    target.add_argument("--message-id")
    target.add_argument("--conversation-id")
    send.add_argument("--user-message")
    send.add_argument("--occurred-at", help="RFC 3339 with a zone; default now")
    send.add_argument("--timeout", type=float, default=10.0, help="seconds to wait (default 10)")
    send.add_argument("--path", help="outbox file (default BRIXO_OUTBOX_PATH or the state dir)")
    send.set_defaults(run=_send)

    outbox = commands.add_parser("outbox", help="inspect or repair the outbox")
    outbox_commands = outbox.add_subparsers(dest="outbox_command", required=True)
    status = outbox_commands.add_parser("status", help="counts per destination")
    status.add_argument("--json", action="store_true")
    dead = outbox_commands.add_parser("dead", help="list dead letters and why")
    dead.add_argument("--limit", type=int, default=50)
    retry = outbox_commands.add_parser("retry", help="move dead letters back to pending")
    for sub, run in ((status, _status), (dead, _dead), (retry, _retry)):
        sub.add_argument("--path", help="outbox file (default BRIXO_OUTBOX_PATH or the state dir)")
        if sub is not status:
            sub.add_argument("--destination", help="only this destination (e.g. brixo)")
        sub.set_defaults(run=run)

    server = commands.add_parser("dev-server", help="run the local Brixo-compatible server")
    server.add_argument("--host", default="127.0.0.1")
    server.add_argument("--port", type=int, default=8787)
    server.add_argument("--api-key", help="require this key (default: accept any)")
    server.add_argument("--db", help="SQLite file to keep what it receives")
    server.add_argument(
        "--accept-unknown-ids",
        action="store_true",
        help="store signals for ids never seen in a trace instead of answering 404",
    )
    server.set_defaults(run=_dev_server)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    raise SystemExit(main())
