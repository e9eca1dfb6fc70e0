"""Instrumentation: id scopes in the Context, decorators, and the span processor that tags."""
