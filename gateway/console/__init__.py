"""The audit console: server-rendered pages for compliance staff on the API's app.

Decisions with the API's filters, "who could?", integrity (verify), policies and explain,
a per-DAG summary, and retention for admins. No script: HTML forms, a stylesheet, and
charts drawn as SVG by the server.
"""

from gateway.console.app import ConsoleState, mount_console

__all__ = ["ConsoleState", "mount_console"]
