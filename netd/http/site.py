# -*- test-case-name: tests.test_http -*-
"""
netd's bundled page: what an http service without a C{root} serves.

The page (C{netd/http/www/index.html}, package data) says what netd is and
lists the services running in this process, rendered once at start-up from
L{ServiceContext.instances<netd.servicetype.ServiceContext.instances>}.
"""

from __future__ import annotations

import html
import os
from importlib import resources

from netd import __version__
from netd.http.files import FileEntry, memoryEntry
from netd.servicetype import ServiceContext


def bundledRoot() -> str:
    """
    The directory of the bundled page, as a document root.

    @return: Its path.
    """
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "www")


def renderPage(context: ServiceContext, extra: bytes, now: float) -> FileEntry:
    """
    Render the bundled page with the services running now.

    @param context: The http service's context (its C{instances} are every
        service of the process).
    @param extra: Header lines every response carries.
    @param now: The current time (the page's modification time).
    @return: The page, as an in-memory entry.
    """
    template = (
        resources.files("netd.http").joinpath("www/index.html").read_text("utf-8")
    )
    rows = []
    mounted = context.settings.get("chat")
    for name, other in sorted(context.instances.items()):
        listeners = ", ".join(
            f"<code>{html.escape(listener.description)}</code>"
            for listener in other.config.listeners
        )
        if name == mounted:
            path = html.escape(context.settings["chat_path"], quote=True)
            listeners += f', <a href="{path}">in the browser: <code>{path}</code></a>'
        rows.append(
            f"<tr><td>{html.escape(name)}</td>"
            f"<td>{html.escape(other.config.type)}</td><td>{listeners}</td></tr>"
        )
    page = template.replace("@@SERVICES@@", "\n".join(rows)).replace(
        "@@VERSION@@", html.escape(__version__)
    )
    return memoryEntry(page.encode("utf-8"), b"text/html; charset=utf-8", extra, now)
