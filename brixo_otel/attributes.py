"""Attribute names that brixo-otel puts on the wire.

One place for every name, so the instrumentation, the feedback emission, the tests and the docs
cannot drift apart. The `gen_ai.*` names follow the OpenTelemetry GenAI semantic conventions; the
`brixo.*` names are those the vendor's tracing SDK already sends, so existing Brixo dashboards keep
working.
"""

from __future__ import annotations

from typing import Final

# Ids that join traces and feedback.
MESSAGE_ID: Final = "brixo.message_id"
SESSION_ID: Final = "brixo.session_id"
GEN_AI_CONVERSATION_ID: Final = "gen_ai.conversation.id"
#: On a message span whose consumer went away before the message ended (a client disconnect, a
#: stream closed or dropped early): `true`, and why (`closed`, `cancelled`, `idle`, `abandoned`).
MESSAGE_CANCELLED: Final = "brixo.message.cancelled"
MESSAGE_CANCEL_REASON: Final = "brixo.message.cancel_reason"

# Interaction root span (vendor SDK compatible).
SPAN_KIND: Final = "brixo.span.kind"
SPAN_KIND_ROOT: Final = "ROOT"
ACCOUNT_PREFIX: Final = "brixo.account."
USER_PREFIX: Final = "brixo.user."
METADATA_PREFIX: Final = "brixo.metadata."
INPUT: Final = "brixo.input"
OUTPUT: Final = "brixo.output"

# Resource.
APP_NAME: Final = "brixo.app_name"
ENVIRONMENT: Final = "brixo.environment"
AGENT_VERSION: Final = "brixo.agent_version"
SDK_VERSION: Final = "brixo.sdk.version"

# Feedback span and event.
FEEDBACK_SPAN_NAME: Final = "brixo.feedback"
SIGNAL_NAME: Final = "brixo.signal.name"
SIGNAL_VALUE: Final = "brixo.signal.value"
SIGNAL_TARGET: Final = "brixo.signal.target"
SIGNAL_ID: Final = "brixo.signal.id"
SIGNAL_USER_MESSAGE: Final = "brixo.signal.user_message"
SIGNAL_SCORE: Final = "brixo.signal.score"
SIGNAL_REASONS: Final = "brixo.signal.reasons"

GEN_AI_EVALUATION_EVENT: Final = "gen_ai.evaluation.result"
GEN_AI_EVALUATION_NAME: Final = "gen_ai.evaluation.name"
GEN_AI_EVALUATION_SCORE_LABEL: Final = "gen_ai.evaluation.score.label"
GEN_AI_EVALUATION_SCORE_VALUE: Final = "gen_ai.evaluation.score.value"
GEN_AI_EVALUATION_EXPLANATION: Final = "gen_ai.evaluation.explanation"
USER_FEEDBACK_EVALUATION: Final = "user_feedback"

# Attributes of the rated span that feedback may be dimensioned by.
GEN_AI_REQUEST_MODEL: Final = "gen_ai.request.model"
GEN_AI_PROVIDER_NAME: Final = "gen_ai.provider.name"
GEN_AI_SYSTEM: Final = "gen_ai.system"
GEN_AI_RESPONSE_MODEL: Final = "gen_ai.response.model"
GEN_AI_RESPONSE_ID: Final = "gen_ai.response.id"
#: OpenInference's names for the same dimensions (Phoenix, Arize and their instrumentations).
LLM_MODEL_NAME: Final = "llm.model_name"
LLM_PROVIDER: Final = "llm.provider"

#: The rated message's dimensions on the feedback span live under this prefix
#: (`brixo.rated.gen_ai.request.model`): a bare `gen_ai.request.model` would make Phoenix, MLflow
#: and Langfuse count the feedback span as one more LLM call.
RATED_PREFIX: Final = "brixo.rated."
#: How Phoenix, MLflow and Langfuse classify a span; the feedback span is an `EVALUATOR`.
OPENINFERENCE_SPAN_KIND: Final = "openinference.span.kind"
EVALUATOR_KIND: Final = "EVALUATOR"
#: Whether the feedback span found the span it rates: `linked`, or `unresolved` when the link
#: window closed first (the ids are still on the span, so a backend can join on them).
LINK_STATUS: Final = "brixo.link.status"
