"""`Brixo`: a stand-in for the vendor's tracing SDK (`from brixo import Brixo`, 0.1.6).

Same calls, same span and resource attributes, same OTLP endpoint and `Brixo-Auth` header, so the
vendor's quickstart runs with only its import line changed. Unlike the vendor SDK it joins an
existing TracerProvider instead of replacing it, handles sync generators, and pulls in no
auto-instrumentation. Beyond it, an interaction can be rated: a `message_id` given to
`begin_context` / `update_context` / `end_context` (or `brixo_otel.set_message_id` inside the
interaction) makes the root span the rated message span.

`filter_openinference_spans` / `filter_traceloop_spans` keep the spans of those instrumentations
(which record prompts and completions) out of the trace export to Brixo; the app's own
exporters on its provider are not touched.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import re
from collections.abc import Mapping
from typing import Any, ClassVar, Final, Protocol

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.util.types import AttributeValue

from brixo_otel import attributes as attrs
from brixo_otel._api import configure, current
from brixo_otel._instrument._decorators import expect_rated_interactions, interaction
from brixo_otel._instrument._scope import MessageScope, current_interaction
from brixo_otel._internal import log_rate_limited, logger
from brixo_otel._settings import FIELDS

_ACCOUNT_KEYS = ("id", "name", "logo_url", "website_url")
_USER_KEYS = ("id", "name", "email")


def _fields(value: object, keys: tuple[str, ...]) -> dict[str, object]:
    """Known keys of a mapping or an object (dataclass, pydantic model); unknown ones dropped."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return {k: value[k] for k in keys if value.get(k) is not None}
    return {k: getattr(value, k) for k in keys if getattr(value, k, None) is not None}


def _attribute_value(value: object) -> AttributeValue:
    if isinstance(value, (str, bool, int, float)):
        return value
    return str(value)


#: Instrumentation scopes of OpenInference (`openinference.instrumentation.openai`, ...), and of
#: Traceloop's SDK (`traceloop.tracer`); as the vendor SDK matches them, by prefix.
_OPENINFERENCE_SCOPE: Final = "openinference.instrumentation"
_TRACELOOP_SCOPE: Final = "traceloop"
#: OpenLLMetry (Traceloop's instrumentations) names its scopes `opentelemetry.instrumentation.X`
#: like the official OpenTelemetry ones (httpx, fastapi, openai_v2 ...), which must be kept. Its
#: packages are told apart by what every one of them requires: Traceloop's AI conventions.
_CONTRIB_SCOPE: Final = "opentelemetry.instrumentation."
_TRACELOOP_CONVENTIONS: Final = "opentelemetry-semantic-conventions-ai"
_REQUIREMENT_NAME: Final = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _is_openllmetry(scope_name: str) -> bool:
    """Whether `opentelemetry.instrumentation.X...` is the scope of an OpenLLMetry package."""
    package = scope_name[len(_CONTRIB_SCOPE) :].split(".", 1)[0]
    if not package:
        return False
    try:
        requires = importlib.metadata.requires(
            "opentelemetry-instrumentation-" + package.replace("_", "-")
        )
    except importlib.metadata.PackageNotFoundError:
        return False
    for requirement in requires or ():
        name = _REQUIREMENT_NAME.match(requirement)
        if name and re.sub(r"[-_.]+", "-", name.group(1)).lower() == _TRACELOOP_CONVENTIONS:
            return True
    return False


class ScopeFilter:
    """Keeps the spans of OpenInference and/or Traceloop instrumentations out of the export.

    Called on the export thread for every span; the verdict is cached per scope name (a handful
    per process), so only the first span of each scope pays for looking at package metadata.
    """

    _MAX_CACHED: Final = 4096

    def __init__(self, *, openinference: bool, traceloop: bool) -> None:
        self._openinference = openinference
        self._traceloop = traceloop
        self._verdicts: dict[str, bool] = {}

    def __call__(self, span: ReadableSpan) -> bool:
        scope = span.instrumentation_scope
        name = scope.name if scope is not None else ""
        verdict = self._verdicts.get(name)
        if verdict is None:
            try:
                verdict = not self._filtered(name)
            except Exception:  # unreadable package metadata: keep the span
                verdict = True
            if len(self._verdicts) < self._MAX_CACHED:
                self._verdicts[name] = verdict
        return verdict

    def _filtered(self, name: str) -> bool:
        if self._openinference and name.startswith(_OPENINFERENCE_SCOPE):
            return True
        if not self._traceloop:
            return False
        return name.startswith(_TRACELOOP_SCOPE) or (
            name.startswith(_CONTRIB_SCOPE) and _is_openllmetry(name)
        )


class ContextSetter(Protocol):
    """`Brixo.begin_context` / `update_context` / `end_context`: the vendor SDK's arguments,
    and `message_id`, which makes the interaction a rateable message."""

    def __call__(
        self,
        account: object = None,
        user: object = None,
        session_id: str | None = None,
        metadata: Mapping[str, object] | None = None,
        input: str | None = None,
        output: str | None = None,
        message_id: str | None = None,
    ) -> None: ...


def _context_setter(call: str, doc: str) -> ContextSetter:
    """One of the three `*_context` calls: they differ only in the name an error log gives."""

    def set_context(
        account: object = None,
        user: object = None,
        session_id: str | None = None,
        metadata: Mapping[str, object] | None = None,
        input: str | None = None,
        output: str | None = None,
        message_id: str | None = None,
    ) -> None:
        Brixo._set_context(call, account, user, session_id, metadata, input, output, message_id)

    set_context.__name__ = set_context.__qualname__ = call
    set_context.__doc__ = doc
    return set_context


class Brixo:
    """Class of static methods, as in the vendor SDK."""

    _init_arguments: ClassVar[tuple[Any, ...] | None] = None

    interaction = staticmethod(interaction)

    @staticmethod
    def init(
        app_name: str,
        environment: str,
        api_key: str | None = None,
        agent_version: str | None = None,
        filter_openinference_spans: bool = True,
        filter_traceloop_spans: bool = True,
        link_secret: str | bytes | None = None,
    ) -> None:
        """Configure once per process; a later call with other arguments is ignored, as in
        the vendor SDK, with a warning.

        Content passed to `begin_context(input=..., output=...)` is recorded, as the vendor SDK
        always did (set `BRIXO_CAPTURE_CONTENT=false` to keep it off the spans).
        `filter_openinference_spans` / `filter_traceloop_spans` keep those instrumentations'
        spans out of the trace export to Brixo. `link_secret` signs link tokens (see
        `brixo_otel.link_token`), and says interactions are to be rated: one that ends
        without a message id is then warned about, on stderr if the app has no logging.
        """
        arguments = (
            app_name,
            environment,
            api_key,
            agent_version,
            filter_openinference_spans,
            filter_traceloop_spans,
            link_secret,
        )
        if Brixo._init_arguments is not None and current() is not None:
            if arguments != Brixo._init_arguments:
                logger.warning("brixo_otel: Brixo.init() was already called; new arguments ignored")
            return
        client = configure(
            app_name=app_name,
            environment=environment,
            api_key=api_key,
            agent_version=agent_version,
            capture_content=None if _capture_content_from_environment() else True,
            link_secret=link_secret,
        )
        Brixo._init_arguments = arguments
        export = getattr(client, "_trace_export", None)
        if export is not None and (filter_openinference_spans or filter_traceloop_spans):
            export.filter_spans(
                ScopeFilter(
                    openinference=bool(filter_openinference_spans),
                    traceloop=bool(filter_traceloop_spans),
                )
            )
        if client.settings.link_secret is not None:  # given here or by BRIXO_LINK_SECRET
            expect_rated_interactions()
        if not client.settings.has_api_key:
            logger.error(
                "brixo_otel: Brixo.init() found no API key (pass api_key= or set BRIXO_API_KEY); "
                "traces are not exported to Brixo"
            )

    begin_context = staticmethod(
        _context_setter(
            "begin_context",
            "Set the interaction's account, user, session, metadata and content attributes.",
        )
    )
    update_context = staticmethod(
        _context_setter("update_context", "Mid-flight update of the interaction's attributes.")
    )
    end_context = staticmethod(
        _context_setter(
            "end_context", "Final update of the interaction's attributes (typically the output)."
        )
    )

    @staticmethod
    def _set_context(
        call: str,
        account: object,
        user: object,
        session_id: str | None,
        metadata: Mapping[str, object] | None,
        input_text: str | None,
        output_text: str | None,
        message_id: object = None,
    ) -> None:
        scope = current_interaction()
        if scope is None:
            log_rate_limited(
                logging.ERROR,
                f"compat:{call}:outside",
                "brixo_otel: Brixo.%s() was called outside an @Brixo.interaction; ignored",
                call,
            )
            return
        values: dict[str, AttributeValue] = {}
        for key, value in _fields(account, _ACCOUNT_KEYS).items():
            values[attrs.ACCOUNT_PREFIX + key] = _attribute_value(value)
        for key, value in _fields(user, _USER_KEYS).items():
            values[attrs.USER_PREFIX + key] = _attribute_value(value)
        if session_id is not None:
            values[attrs.SESSION_ID] = str(session_id)
            values[attrs.GEN_AI_CONVERSATION_ID] = str(session_id)
            scope.conversation_id = str(session_id)  # spans started from now on carry it too
        for key, value in (metadata or {}).items():
            values[attrs.METADATA_PREFIX + str(key)] = _attribute_value(value)
        client = current()
        capture = client.settings.capture_content if client is not None else False
        if capture and input_text is not None:
            values[attrs.INPUT] = str(input_text)
        if capture and output_text is not None:
            values[attrs.OUTPUT] = str(output_text)
        scope.span.set_attributes(values)
        if message_id is not None:
            Brixo._bind_message_id(call, scope.message, message_id)

    @staticmethod
    def _bind_message_id(call: str, message: MessageScope | None, message_id: object) -> None:
        """Make the interaction the message `message_id` names: its root span carries the id
        and is indexed under it, and spans of it still open or started later carry it too."""
        if isinstance(message_id, int) and not isinstance(message_id, bool):
            message_id = str(message_id)
        if not isinstance(message_id, str) or not message_id:
            log_rate_limited(
                logging.ERROR,
                f"compat:{call}:message_id",
                "brixo_otel: Brixo.%s(message_id=...) takes a non-empty string, got %s; ignored",
                call,
                type(message_id).__name__,
            )
            return
        if message is not None:
            message.bind(message_id)


_CAPTURE_CONTENT_VARIABLE = FIELDS["capture_content"].metadata["env"]


def _capture_content_from_environment() -> bool:
    return _CAPTURE_CONTENT_VARIABLE in os.environ
