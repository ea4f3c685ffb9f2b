"""The buffering both protocol decoders share (sans-I/O): the decode buffer, and the gathering of one
large value by itself.

Memory follows what a connection needs now, not the largest thing it ever sent. A buffer whose bytes
have all been decoded is let go (an idle decoder keeps at most :data:`KEEP_DECODED` bytes), and a
value of at least ``large_value`` bytes (:data:`LARGE_VALUE`) that spans reads is gathered by itself:
first as the pieces that arrive, then, once half of it is here, in one buffer of exactly its length,
whose unfilled part ``direct_buffer`` offers to read straight into. Receiving such a value peaks at
1.5 times its size, and never holds more than twice what has arrived: a header alone announcing
16 MiB allocates nothing.
"""

from __future__ import annotations

from typing import Final

#: A value at least this long that is not complete in the buffer is gathered by itself (see above)
#: rather than in the decode buffer: no copy of the frame, no slice of it, nothing kept afterwards.
LARGE_VALUE: Final = 64 * 1024
#: A decoded buffer up to this size may stay referenced until the next read replaces it (letting
#: every small read go at once would cost the hot path two stores); a larger one is let go as soon
#: as it is all decoded.
KEEP_DECODED: Final = 4096


class _NeedData:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


#: Returned by ``next_event`` when the buffer holds no complete frame.
NEED_DATA: Final = _NeedData()


#: Spare bytes allocated behind a large value's buffer (see _feed_body).
ENVELOPE_HEADROOM = 17


def _append(buf: bytes | bytearray, pos: int, data: bytes) -> tuple[bytes | bytearray, int]:
    """The decode buffer after ``data`` arrives: ``(buffer, position of the first undecoded byte)``.

    Called only when a partial frame is left (when everything was decoded, the new bytes simply become
    the buffer, uncopied). The partial frame moves to a bytearray that then grows in place, so a frame
    arriving in many reads is copied once, not once per read. (Large values do not come this way: see
    :meth:`_Receiver._begin_body`.)
    """
    if type(buf) is bytearray:
        if pos:
            del buf[:pos]
        buf += data
        return buf, 0
    grown = bytearray(buf[pos:])
    grown += data
    return grown, 0


def _held(buf: bytes | bytearray) -> int:
    """Bytes of memory behind a buffer: a bytearray's allocation, a bytes object's length."""
    return buf.__alloc__() if type(buf) is bytearray else len(buf)


class _Receiver:
    """The buffering both decoders share: the decode buffer, and the gathering of one large value.

    Two states. *Framing*: ``_buf[_pos:]`` holds the undecoded bytes (``_pos >= 0``). *Gathering a
    value* of ``_size`` bytes whose header has been decoded: ``_pos`` is -1, so that the decoders'
    fast paths step aside; the value's first ``_filled`` bytes are in ``_chunks`` (the pieces as
    they arrived) or, on an :attr:`_exact_body` decoder once half of the value has arrived, at the
    start of ``_body`` (a buffer of exactly ``_size`` bytes, whose unfilled part is
    :attr:`direct_buffer`); bytes past the value wait in ``_after``. A decoder that yields ``bytes``
    never allocates ``_body``: it joins the pieces once, at the end.
    """

    __slots__ = (
        "_after",
        "_body",
        "_buf",
        "_chunks",
        "_filled",
        "_pos",
        "_size",
        "direct_buffer",
        "large_value",
    )

    #: Gather into one exactly-sized bytearray, handed over as the value (else join the pieces into
    #: a bytes object at the end).
    _exact_body = False

    def __init__(self, large_value: int) -> None:
        self.large_value = max(1, large_value)
        self._buf: bytes | bytearray = b""
        self._pos = 0
        self._size = 0
        self._filled = 0
        self._chunks: list[bytes] = []
        self._body: bytearray | None = None
        self._after: bytes | bytearray = b""
        #: None, or a writable memoryview: the part of a large value still to come, once the decoder
        #: holds the value's own buffer. A caller may read straight into it (``sock.recv_into``) and
        #: report the count with :meth:`direct_received`, instead of :meth:`feed`: the bytes are then
        #: never copied. Read into it at most its length (recv_into's default), so that only the
        #: value's bytes land there; whatever follows the value comes through :meth:`feed`.
        self.direct_buffer: memoryview | None = None

    @property
    def buffered(self) -> int:
        """Bytes received and not yet decoded (a value being gathered counts from its first byte)."""
        return len(self._buf) - self._pos if self._pos >= 0 else self._buffered_body()

    def feed(self, data: bytes) -> None:
        """Buffer ``data`` (the response decoders' way; the request decoder has its own, which also
        ignores input once closed)."""
        pos = self._pos
        if pos >= len(self._buf):
            self._buf = data
            self._pos = 0
        elif pos >= 0:
            self._buf, self._pos = _append(self._buf, pos, data)
        else:
            self._feed_body(data)

    def _buffered_body(self) -> int:
        return self._filled + len(self._after) if self._size else 0

    @property
    def buffered_capacity(self) -> int:
        """Bytes of memory this decoder holds: input not yet returned as an event, and the last
        buffer fed if it was small.

        At most :data:`KEEP_DECODED` once everything fed has been decoded (and :meth:`next_event` has
        said :data:`NEED_DATA`), whatever the size of what came before.
        """
        held = _held(self._buf) + _held(self._after) + sum(map(len, self._chunks))
        return held + (len(self._body) if self._body is not None else 0)

    def direct_received(self, count: int) -> None:
        """``count`` bytes were written at the start of :attr:`direct_buffer` (e.g. by recv_into)."""
        view = self.direct_buffer
        if view is None or not 0 <= count <= len(view):
            raise ValueError(f"direct_received({count}) without that much room in direct_buffer")
        self._filled += count
        self.direct_buffer = view[count:] if count < len(view) else None

    def _begin_body(self, buf: bytes | bytearray, start: int, size: int) -> _NeedData:
        """Gather the ``size``-byte value that starts at ``buf[start]`` and does not end in ``buf``."""
        self._size = size
        self._filled = 0
        self._buf = b""
        self._pos = -1
        self._feed_body(memoryview(buf)[start:])
        return NEED_DATA

    def _feed_body(self, data: bytes | bytearray | memoryview) -> None:
        """Bytes that arrive while a value is gathered: the value's part, then the rest to ``_after``."""
        size = self._size
        filled = self._filled
        count = len(data)
        take = min(count, size - filled)
        if take:
            room = self.direct_buffer  # the unfilled part of the value's buffer, once there is one
            if room is None and (not self._exact_body or 2 * (filled + take) < size):
                # A piece of its own (the caller's bytes object itself when it is all value).
                self._chunks.append(data if take == count and type(data) is bytes else bytes(data[:take]))
            else:
                if room is None:
                    # Half is here: from now on the value has its own buffer. Peak: the pieces (under
                    # half) and the buffer, for the time of this copy. Written through a memoryview:
                    # assigning to a slice of the bytearray itself would copy each piece first.
                    # Allocated with room for the 17-byte header the node puts in front of a stored
                    # value (funnelkvs.versions.pack_value): shrinking back to ``size`` keeps the
                    # allocation, so the header later goes in without a realloc that would grow the
                    # buffer by CPython's 12.5 % over-allocation (2 MiB held more per 16 MiB value).
                    self._body = bytearray(size + ENVELOPE_HEADROOM)
                    del self._body[size:]
                    view = memoryview(self._body)
                    at = 0
                    for chunk in self._chunks:
                        view[at : at + len(chunk)] = chunk
                        at += len(chunk)
                    self._chunks = []
                    room = view[filled:]
                room[:take] = data if take == count else memoryview(data)[:take]
                self.direct_buffer = room[take:] if filled + take < size else None
            self._filled = filled + take
        if take < count:
            rest = bytes(data[take:])
            self._after = rest if not self._after else _append(self._after, 0, rest)[0]

    def _partial(self, buf: bytes | bytearray, pos: int, end: int) -> _NeedData:
        """NEED_DATA for the incomplete frame at ``buf[pos:]``: keep its bytes only, not the whole
        read they end (a connection may stay idle there)."""
        if pos and end > KEEP_DECODED:
            if type(buf) is bytearray:
                del buf[:pos]
            else:
                self._buf = bytearray(memoryview(buf)[pos:])  # what the next feed would make of it
            self._pos = 0
        return NEED_DATA

    def _take_body(self) -> bytes | bytearray | None:
        """The gathered value once complete (the decoder back to framing what followed it), or None."""
        if self._filled < self._size:
            return None
        value: bytes | bytearray
        if self._body is not None:
            value = self._body
            self._body = None
        else:
            value = b"".join(self._chunks)
            self._chunks = []
        self._size = self._filled = 0
        self.direct_buffer = None
        self._buf = self._after
        self._after = b""
        self._pos = 0
        return value
