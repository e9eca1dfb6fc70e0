"""`Brixo`: a stand-in for the vendor's tracing SDK (`from brixo import Brixo`, 0.1.6).

Same calls, same span and resource attributes, same OTLP endpoint and `Brixo-Auth` header, so the
vendor's quickstart runs with only its import line changed. Unlike the vendor SDK it joins an
existing TracerProvider instead of replacing it, handles sync generators, and pulls in no
auto-instrumentation (so its `filter_*_spans` flags have nothing to filter and are accepted only
for compatibility).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any, ClassVar, Protocol

from opentelemetry.util.types import AttributeValue

from brixo_otel import attributes as attrs
from brixo_otel._api import configure, current
from brixo_otel._instrument._decorators import interaction
from brixo_otel._instrument._scope import current_interaction
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


class ContextSetter(Protocol):
    """`Brixo.begin_context` / `update_context` / `end_context`: the vendor SDK's arguments."""

    def __call__(
        self,
        account: object = None,
        user: object = None,
        session_id: str | None = None,
        metadata: Mapping[str, object] | None = None,
        input: str | None = None,
        output: str | None = None,
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
    ) -> None:
        Brixo._set_context(call, account, user, session_id, metadata, input, output)

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
    ) -> None:
        """Configure once per process; a later call with other arguments is ignored, as in
        the vendor SDK, with a warning.

        Content passed to `begin_context(input=..., output=...)` is recorded, as the vendor SDK
        always did (set `BRIXO_CAPTURE_CONTENT=false` to keep it off the spans).
        """
        arguments = (app_name, environment, api_key, agent_version)
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
        )
        Brixo._init_arguments = arguments
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


_CAPTURE_CONTENT_VARIABLE = FIELDS["capture_content"].metadata["env"]


def _capture_content_from_environment() -> bool:
    return _CAPTURE_CONTENT_VARIABLE in os.environ
