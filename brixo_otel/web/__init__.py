"""Web glue: from a thumbs click in the browser to the trace of the message it rates.

- `asgi_feedback_app()` / `wsgi_feedback_app()`: a ready feedback endpoint (JSON in, 202 out,
  problem details for bad input) that also serves the thumbs widget at `.../feedback.js`;
- `BrixoHeadersMiddleware` (ASGI) / `BrixoHeadersWSGIMiddleware`: the message id and link token
  on the response of a request that produced a message, streaming included;
- `sse_message_event()` and `message_headers()`: the same two values, for a stream's first event
  or for headers an app sets itself;
- `primed()` / `aprimed()`: start a streamed message before its response sends headers.

The apps and middlewares are plain ASGI / WSGI: no web framework is needed to use them.
"""

from brixo_otel.web._asgi import BrixoHeadersMiddleware, asgi_feedback_app
from brixo_otel.web._headers import LINK_HEADER, MESSAGE_ID_HEADER, message_headers
from brixo_otel.web._ratelimit import RateLimit
from brixo_otel.web._sse import sse_message_event
from brixo_otel.web._stream import aprimed, primed
from brixo_otel.web._wsgi import BrixoHeadersWSGIMiddleware, wsgi_feedback_app

__all__ = [
    "LINK_HEADER",
    "MESSAGE_ID_HEADER",
    "BrixoHeadersMiddleware",
    "BrixoHeadersWSGIMiddleware",
    "RateLimit",
    "aprimed",
    "asgi_feedback_app",
    "message_headers",
    "primed",
    "sse_message_event",
    "wsgi_feedback_app",
]
