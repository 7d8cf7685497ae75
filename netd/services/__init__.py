# -*- test-case-name: tests.test_config -*-
"""
The service types netd can run, one module each.
"""

from __future__ import annotations

from collections.abc import Mapping

from netd.servicetype import ServiceType


def serviceTypes() -> Mapping[str, ServiceType]:
    """
    The registry of service types, by C{type = "..."} name.

    @return: A mapping from name to L{ServiceType}.
    """
    from netd.services import chargen, chat, daytime, discard, echo, http
    from netd.services import exec as exec_, forward, timeservice

    return {
        serviceType.name: serviceType
        for serviceType in (
            echo.echo,
            discard.discard,
            chat.chat,
            http.http,
            chargen.chargen,
            daytime.daytime,
            timeservice.timeService,
            forward.forward,
            exec_.exec_,
        )
    }
