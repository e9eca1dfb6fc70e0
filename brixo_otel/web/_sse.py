"""The first event of a Server-Sent Events stream: the message id and link token, in the body.

Headers are enough for `fetch()`, but a stream read through `EventSource`, or relayed by a proxy
that drops unknown headers, only has its body; so the same two values also go out as the first
event, which the widget understands (`BrixoFeedback.fromEvent`).
"""

from __future__ import annotations

import json
import logging
import re
from typing import Final

import brixo_otel
from brixo_otel.web import _core

DEFAULT_EVENT: Final = "brixo"

#: An SSE event name is one line; we keep it to a conservative token.
_EVENT_NAME: Final = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def sse_message_event(message_id: str | None = None, *, event: str = DEFAULT_EVENT) -> str:
    """`event: brixo` / `data: {"message_id": ..., "link": ...}` followed by the blank line that
    ends an SSE event; yield it first from a streaming message.

    Inside `@brixo_otel.message` (or `message_span`) it names the current message; elsewhere
    pass `message_id` (the link token then needs the message in this process's span index).
    `link` is present when a link secret is configured. With no message id known it returns ""
    (which adds nothing to a stream) and logs a warning: telemetry never breaks a response.
    """
    if not isinstance(event, str) or not _EVENT_NAME.match(event):
        raise TypeError(f"event must be a short SSE event name, got {event!r}")
    if message_id is not None and (not isinstance(message_id, str) or not message_id):
        raise TypeError(f"message_id must be a non-empty string or None, got {message_id!r}")
    with _core.guard("building the SSE message event"):
        link: str | None
        if message_id is None or message_id == _core.current_message_id():
            message_id = _core.current_message_id()
            link = _core.current_link()
        else:
            link = _link_outside_the_message(message_id)
        if message_id is None:
            _core.log_rate_limited(
                logging.WARNING,
                "web:sse:no-id",
                "brixo_otel.web.sse_message_event() found no message id: call it inside a "
                "@brixo_otel.message function (after set_message_id, if the id comes late) or "
                "pass message_id=",
            )
            return ""
        data: dict[str, str] = {"message_id": message_id}
        if link is not None:
            data["link"] = link
        payload = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
        return f"event: {event}\ndata: {payload}\n\n"
    return ""


def _link_outside_the_message(message_id: str) -> str | None:
    try:
        return brixo_otel.link_token(message_id)
    except brixo_otel.ConfigurationError:
        return None
    except (LookupError, ValueError) as exc:  # `UnknownMessage`: the index does not hold it
        _core.log_rate_limited(
            logging.WARNING,
            "web:sse:link",
            "brixo_otel.web.sse_message_event(): no link token for the message: %s",
            exc,
        )
        return None
