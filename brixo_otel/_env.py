"""Every environment variable brixo-otel reads, documented where it is defined.

An explicit argument to `configure()` always wins; a variable fills in what was not passed. A
malformed value is logged and ignored, never raised: the environment is not the app's code.
`docs/configuration.md` is generated from this module (`python -m brixo_otel._env`).
"""

from __future__ import annotations

from typing import Final

BRIXO_API_KEY: Final = "BRIXO_API_KEY"
"""The Brixo API key. Enables OTLP trace export to Brixo and signal delivery to the Signals API."""

BRIXO_BASE_URL: Final = "BRIXO_BASE_URL"
"""Base URL of the Signals API. Default `https://api.brixo.com`."""

BRIXO_OTLP_TRACES_ENDPOINT: Final = "BRIXO_OTLP_TRACES_ENDPOINT"
"""Where traces go by OTLP/HTTP. Default `https://otel.brixo.com:4318/v1/traces` when an API key
is set; `none` turns trace export off."""

BRIXO_APP_NAME: Final = "BRIXO_APP_NAME"
"""Resource attribute `brixo.app_name`."""

BRIXO_ENVIRONMENT: Final = "BRIXO_ENVIRONMENT"
"""Resource attribute `brixo.environment` (e.g. `production`)."""

BRIXO_AGENT_VERSION: Final = "BRIXO_AGENT_VERSION"
"""Resource attribute `brixo.agent_version`: the version of your agent or prompt set."""

BRIXO_OUTBOX_PATH: Final = "BRIXO_OUTBOX_PATH"
"""SQLite file that holds signals until delivered. Default
`$XDG_STATE_HOME/brixo-otel/outbox.db` (`~/.local/state/...`); `:memory:` opts out of
durability."""

BRIXO_CAPTURE_CONTENT: Final = "BRIXO_CAPTURE_CONTENT"
"""`true` records message content and user comments on spans. Default `false`."""

BRIXO_ALLOW_INSECURE_HTTP: Final = "BRIXO_ALLOW_INSECURE_HTTP"
"""`true` allows plain `http://` endpoints on hosts other than loopback. Default `false`."""

BRIXO_SPAN_INDEX: Final = "BRIXO_SPAN_INDEX"
"""Where message span contexts are kept for linking feedback: `memory` (default),
`sqlite:///path.db` (the processes of one host) or `redis://host:6379/0` (any host)."""

BRIXO_LINK_SECRET: Final = "BRIXO_LINK_SECRET"
"""Secret (at least 16 bytes) that signs link tokens, shared by every process that accepts them.
Several, comma-separated, rotate it: the first signs, all are accepted."""

ALL: Final = (
    BRIXO_API_KEY,
    BRIXO_BASE_URL,
    BRIXO_OTLP_TRACES_ENDPOINT,
    BRIXO_APP_NAME,
    BRIXO_ENVIRONMENT,
    BRIXO_AGENT_VERSION,
    BRIXO_OUTBOX_PATH,
    BRIXO_CAPTURE_CONTENT,
    BRIXO_ALLOW_INSECURE_HTTP,
    BRIXO_SPAN_INDEX,
    BRIXO_LINK_SECRET,
)


def markdown_table() -> str:
    """The configuration table of the docs, built from the docstrings above."""
    import ast
    import inspect
    import itertools
    import sys

    tree = ast.parse(inspect.getsource(sys.modules[__name__]))
    docs: dict[str, str] = {}
    body = tree.body
    for node, following in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
        ):
            docs[node.target.id] = " ".join(str(following.value.value).split())
    rows = ["| variable | meaning |", "| --- | --- |"]
    rows += [f"| `{name}` | {docs[name]} |" for name in ALL]
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
