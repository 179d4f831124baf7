"""The OpenAPI 3.1 document of a node's HTTP API (``GET /openapi.json``), in three modules.

Rule: ``schema`` holds the vocabulary (shared schemas, parameters, answers) and no path;
``ops`` the operational, backup, digest and Raft routes; ``document`` the key, batch and watch
routes and the document itself. Imports point one way, document → ops → schema, and every size
stated comes from the validators' own constants (``raftcache.server.validation``).
"""

from __future__ import annotations

from raftcache.server.openapi.document import openapi_document

__all__ = ["openapi_document"]
