"""Content codings for large HTTP bodies: ``gzip`` (stdlib) and ``zstd`` (optional library).

Rule: a body is compressed only when the sender chose to compress, the body is at least the
threshold, and the receiver said it can decode the coding (HTTP ``Accept-Encoding`` sent *in
its responses*, as RFC 7694 describes); otherwise it travels as ``identity``. So a node without
zstd, or an older node that knows no coding at all, still interoperates: it advertises less and
is sent less.

``zstd`` is used when one of these imports: ``compression.zstd`` (Python 3.14),
``backports.zstd``, ``zstandard``. Decompression is bounded: a body that would inflate beyond
the receiver's limit is refused (``BodyTooLargeError``) after producing at most ``limit + 1`` bytes,
so a small compressed body cannot make a node allocate gigabytes.
"""

from __future__ import annotations

import importlib
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

__all__ = [
    "DEFAULT_THRESHOLD",
    "IDENTITY",
    "BodyTooLarge",
    "BodyTooLargeError",
    "Codec",
    "DecompressionError",
    "available",
    "codec",
    "format_accept_encoding",
    "parse_accept_encoding",
]

IDENTITY = "identity"
DEFAULT_THRESHOLD = 64 * 1024
"""Bodies smaller than this travel uncompressed: heartbeats and small batches pay nothing."""


class DecompressionError(ValueError):
    """A body that does not decode with the coding its Content-Encoding names."""


class BodyTooLargeError(ValueError):
    """A body that inflates beyond the receiver's limit."""


@dataclass(frozen=True, slots=True)
class Codec:
    """One content coding: ``compress(data, level)`` and a bounded ``decompress``."""

    name: str
    default_level: int
    compress_fn: Callable[[bytes, int], bytes]
    decompress_fn: Callable[[bytes, int], bytes]

    def compress(self, data: bytes, level: int | None = None) -> bytes:
        return self.compress_fn(data, self.default_level if level is None else level)

    def decompress(self, data: bytes, limit: int) -> bytes:
        """The decoded body, at most ``limit`` bytes.

        Raises:
            BodyTooLarge: it would inflate beyond ``limit``.
            DecompressionError: ``data`` is not a valid, complete stream of this coding.
        """
        try:
            out = self.decompress_fn(data, limit + 1)
        except (BodyTooLargeError, DecompressionError):
            raise
        except Exception as exc:  # each library has its own error class
            raise DecompressionError(f"invalid {self.name} body: {exc}") from None
        if len(out) > limit:
            raise BodyTooLargeError(f"{self.name} body inflates beyond {limit} bytes")
        return out


def _gzip_compress(data: bytes, level: int) -> bytes:
    c = zlib.compressobj(level, zlib.DEFLATED, 31)  # wbits 31: a gzip header and trailer
    return c.compress(data) + c.flush()


def _gzip_decompress(data: bytes, max_length: int) -> bytes:
    d = zlib.decompressobj(31)
    out = d.decompress(data, max_length)
    if len(out) < max_length and not d.eof:
        raise DecompressionError("truncated gzip body")
    return out


def _zstd_codec() -> Codec | None:
    """The first zstd library that imports, wrapped; None when there is none."""
    for name in ("compression.zstd", "backports.zstd"):
        module = _try_import(name)
        if module is not None:
            return _stdlib_style_zstd(module)
    module = _try_import("zstandard")
    return None if module is None else _zstandard_codec(module)


def _try_import(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _stdlib_style_zstd(zstd: Any) -> Codec:
    def compress(data: bytes, level: int) -> bytes:
        result: bytes = zstd.compress(data, level)
        return result

    def decompress(data: bytes, max_length: int) -> bytes:
        d = zstd.ZstdDecompressor()
        out: bytes = d.decompress(data, max_length)
        if len(out) < max_length and not d.eof:
            raise DecompressionError("truncated zstd body")
        return out

    return Codec("zstd", 3, compress, decompress)


def _zstandard_codec(zstandard: Any) -> Codec:
    def compress(data: bytes, level: int) -> bytes:
        result: bytes = zstandard.ZstdCompressor(level=level).compress(data)
        return result

    def decompress(data: bytes, max_length: int) -> bytes:
        # Our senders write the content size into the frame header: check it before allocating.
        # Without one, max_output_size bounds the buffer (and overflowing it is an error).
        size = zstandard.frame_content_size(data)
        if size >= max_length:
            raise BodyTooLargeError(f"zstd body declares {size} bytes")
        out: bytes = zstandard.ZstdDecompressor().decompress(
            data, max_output_size=max_length, allow_extra_data=False
        )
        return out

    return Codec("zstd", 3, compress, decompress)


_CODECS: dict[str, Codec] = {"gzip": Codec("gzip", 1, _gzip_compress, _gzip_decompress)}
_zstd = _zstd_codec()
if _zstd is not None:
    _CODECS["zstd"] = _zstd

KNOWN = ("zstd", "gzip")
"""Every coding this module knows, best first (zstd: better ratio at a higher speed)."""


def available() -> tuple[str, ...]:
    """The codings this process can encode and decode, best first."""
    return tuple(name for name in KNOWN if name in _CODECS)


def codec(name: str) -> Codec:
    """The codec of ``name`` (KeyError when it is not available here)."""
    return _CODECS[name]


def parse_accept_encoding(header: str | None) -> frozenset[str]:
    """The codings an ``Accept-Encoding`` value allows (``q=0`` excluded, lower-cased)."""
    if not header:
        return frozenset()
    accepted = set()
    for item in header.split(","):
        name, _, params = item.strip().partition(";")
        q = params.strip().lower()
        if q.startswith("q=") and _zero(q[2:]):
            continue
        if name.strip():
            accepted.add(name.strip().lower())
    return frozenset(accepted)


def _zero(value: str) -> bool:
    try:
        return float(value) == 0.0
    except ValueError:
        return False


def format_accept_encoding(names: Iterable[str]) -> str:
    """An ``Accept-Encoding`` value listing ``names`` and ``identity``."""
    return ", ".join([*names, IDENTITY])


# The names before the ``…Error`` convention (ruff's N818), kept working: the same classes.
BodyTooLarge = BodyTooLargeError
