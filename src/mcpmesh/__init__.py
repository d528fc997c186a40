"""mcpmesh: supervise stdio MCP servers and serve each to many isolated clients over HTTP."""

__version__ = "0.1.0"
