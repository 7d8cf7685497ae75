from twisted.application.service import ServiceMaker

netd = ServiceMaker(
    "netd",
    "netd.tap",
    "A multi-service network daemon: echo, discard, http, chat.",
    "netd",
)
