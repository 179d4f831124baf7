"""The lean front: the httptools fast path in front of the aiohttp application.

Rule: the package owns no behaviour of the API. ``front`` is the listener and builds, once the
application is frozen, the same middleware chain aiohttp runs for each hot route; ``routes``
says which routes are hot; ``protocol`` is the connection (httptools parses, hot requests are
answered here, anything else is handed with the whole connection to aiohttp); ``request`` is
the request object the handlers see; ``wire`` writes a finished response as one HTTP/1.x
answer. httptools is a dependency, but the node must still run where it cannot be imported
(the aiohttp-only fallback): importing this package imports none of its modules, and
``front.lean_available()`` says whether the fast path can run.
"""
