"""The node's event loop: one thread, one epoll selector, timers, futures.

The loop polls ``select.epoll`` itself rather than through ``selectors.EpollSelector``: that layer
costs about a microsecond and a half per ready socket (a SelectorKey lookup and a list of tuples),
which is a measurable share of a small GET. Registration is the same idea: a file descriptor, an
event mask, and the callback that receives the ready mask.

Everything a node does runs here: client connections, outbound connections to other nodes, and the
timers that will drive Chord maintenance. Nothing in it knows about the protocol.

Rules the loop keeps:
- A callback that raises is logged with its traceback and contained; the loop never dies of it.
  Periodic timers (:meth:`EventLoop.call_every`) skip the failed round and stay scheduled.
- Other threads and signal handlers talk to the loop only through :meth:`call_soon_threadsafe`, which
  wakes ``select`` through a socketpair (trio's wake-up socketpair).
- At the end of every pass the loop runs its pass-end hooks: the node group-commits writes there,
  before any answer to them leaves the process.
"""

from __future__ import annotations

import collections
import errno
import heapq
import itertools
import logging
import select
import socket
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from funnelkvs.errors import InvalidStateError, NodeUnreachable, RequestTimeout

log = logging.getLogger("funnelkvs.loop")

T = TypeVar("T")

EVENT_READ: int = select.EPOLLIN
EVENT_WRITE: int = select.EPOLLOUT
#: Hang-up and error are always reported; a reader should treat them as "readable" (recv tells why).
EVENT_READ_ANY: int = select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR

#: What a registered socket's callback receives: the ready-event mask.
EventCallback = Callable[[int], None]


class Future(Generic[T]):
    """The outcome of an operation on the loop. Not thread-safe: resolve and read it on the loop.

    Done-callbacks run right away when the future resolves (or at once if it already has), on the
    loop thread; one that raises is logged and does not stop the others.
    """

    __slots__ = ("_callbacks", "_done", "_exception", "_result")

    def __init__(self) -> None:
        self._done = False
        self._result: T | None = None
        self._exception: BaseException | None = None
        self._callbacks: list[Callable[[Future[T]], None]] = []

    def done(self) -> bool:
        return self._done

    def result(self) -> T:
        if not self._done:
            raise InvalidStateError("future is not done")
        if self._exception is not None:
            raise self._exception
        return self._result  # type: ignore[return-value]

    def exception(self) -> BaseException | None:
        if not self._done:
            raise InvalidStateError("future is not done")
        return self._exception

    def set_result(self, result: T) -> None:
        if self._done:
            raise InvalidStateError("future already resolved")
        self._result = result
        self._resolve()

    def set_exception(self, exc: BaseException) -> None:
        if self._done:
            raise InvalidStateError("future already resolved")
        self._exception = exc
        self._resolve()

    def add_done_callback(self, callback: Callable[[Future[T]], None]) -> None:
        if self._done:
            _run_contained(callback, self)
        else:
            self._callbacks.append(callback)

    def _resolve(self) -> None:
        self._done = True
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            _run_contained(callback, self)


def _run_contained(callback: Callable[..., Any], *args: Any) -> None:
    try:
        callback(*args)
    except Exception:
        log.exception("callback %r failed", callback)


class TimerHandle:
    __slots__ = ("args", "callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        # Lazy deletion: the heap entry stays and is skipped when it comes due.
        self.cancelled = True


class PeriodicTimer:
    """A repeating timer; see :meth:`EventLoop.call_every`."""

    __slots__ = ("_handle", "_loop", "args", "callback", "interval")

    def __init__(self, loop: EventLoop, interval: float, callback: Callable[..., Any], args: tuple[Any, ...]):
        self._loop = loop
        self.interval = interval
        self.callback = callback
        self.args = args
        self._handle: TimerHandle | None = loop.call_later(interval, self._fire)

    def _fire(self) -> None:
        try:
            self.callback(*self.args)
        except Exception:
            log.exception("periodic timer %r failed; this round is skipped", self.callback)
        finally:
            if self._handle is not None:  # not cancelled from inside the callback
                self._handle = self._loop.call_later(self.interval, self._fire)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class EventLoop:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.time = clock
        self._epoll = select.epoll()
        self._handlers: dict[int, EventCallback] = {}
        self._timers: list[tuple[float, int, TimerHandle]] = []
        self._timer_seq = itertools.count()
        self._ready: collections.deque[tuple[Callable[..., Any], tuple[Any, ...]]] = collections.deque()
        self._pass_end: list[Callable[[], None]] = []
        self._running = False
        self._closed = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.register(self._wake_r, EVENT_READ, self._drain_wakeup)

    # --- scheduling --------------------------------------------------------------------------------

    def call_soon(self, callback: Callable[..., Any], *args: Any) -> None:
        self._ready.append((callback, args))

    def call_soon_threadsafe(self, callback: Callable[..., Any], *args: Any) -> None:
        """Schedule from another thread or a signal handler; wakes ``select``."""
        self._ready.append((callback, args))  # deque.append is atomic
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, InterruptedError):
            pass  # the pipe is full, so a wake-up is already pending
        except OSError:
            pass  # closed during shutdown

    def call_at(self, when: float, callback: Callable[..., Any], *args: Any) -> TimerHandle:
        handle = TimerHandle(when, callback, args)
        heapq.heappush(self._timers, (when, next(self._timer_seq), handle))
        return handle

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> TimerHandle:
        return self.call_at(self.time() + delay, callback, *args)

    def call_every(self, interval: float, callback: Callable[..., Any], *args: Any) -> PeriodicTimer:
        """Run ``callback`` every ``interval`` seconds, first after one interval. A round that raises is
        logged and skipped; the timer stays scheduled (the supervision the reference roadmap asks for)."""
        return PeriodicTimer(self, interval, callback, args)

    def add_pass_end_hook(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` after every pass of the loop (after I/O callbacks, timers and ready calls)."""
        self._pass_end.append(hook)

    # --- sockets -----------------------------------------------------------------------------------

    def register(self, sock: socket.socket, events: int, callback: EventCallback) -> None:
        fd = sock.fileno()
        self._epoll.register(fd, events)
        self._handlers[fd] = callback

    def modify(self, sock: socket.socket, events: int, callback: EventCallback | None = None) -> None:
        fd = sock.fileno()
        self._epoll.modify(fd, events)
        if callback is not None:
            self._handlers[fd] = callback

    def unregister(self, sock: socket.socket) -> None:
        """Forget a socket; call it before closing the socket. Harmless when not registered."""
        fd = sock.fileno()
        if self._handlers.pop(fd, None) is not None:
            try:
                self._epoll.unregister(fd)
            except (OSError, ValueError):
                pass

    def open_connection(self, address: tuple[str, int], timeout: float) -> Future[socket.socket]:
        """Connect without blocking. The future gets a connected non-blocking socket, or
        :class:`NodeUnreachable` (refused, unroutable, or not connected within ``timeout`` seconds)."""
        future: Future[socket.socket] = Future()
        label = f"{address[0]}:{address[1]}"
        try:
            # A numeric address only: resolving a name here would block the loop (addresses of
            # other nodes are resolved before they reach the loop).
            family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as exc:
            future.set_exception(NodeUnreachable(f"{label}: cannot create a socket: {exc}"))
            return future
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            code = sock.connect_ex(address)
        except OSError as exc:  # gaierror for a name or a malformed address
            sock.close()
            future.set_exception(NodeUnreachable(f"{label}: {exc}"))
            return future
        if code not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
            sock.close()
            future.set_exception(NodeUnreachable(f"{label}: {errno.errorcode.get(code, code)}"))
            return future

        def give_up() -> None:
            self.unregister(sock)
            sock.close()
            if not future.done():
                future.set_exception(NodeUnreachable(f"{address[0]}:{address[1]}: connect timed out"))

        deadline = self.call_later(timeout, give_up)

        def on_writable(mask: int) -> None:
            deadline.cancel()
            self.unregister(sock)
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                sock.close()
                future.set_exception(
                    NodeUnreachable(f"{address[0]}:{address[1]}: {errno.errorcode.get(err, err)}")
                )
            else:
                future.set_result(sock)

        self.register(sock, EVENT_WRITE, on_writable)
        return future

    # --- running -----------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._running

    def stop(self) -> None:
        """Make :meth:`run_forever` return after the current pass."""
        self._running = False

    def run_forever(self) -> None:
        if self._closed:
            raise RuntimeError("event loop is closed")
        self._running = True
        try:
            while self._running:
                self._run_once()
        finally:
            self._running = False

    def run_until(self, future: Future[Any], timeout: float) -> None:
        """Run until ``future`` is done or ``timeout`` seconds pass (for tools and tests)."""
        deadline = self.time() + timeout
        self._running = True
        try:
            while not future.done() and self.time() < deadline and self._running:
                self._run_once(max_wait=max(0.0, deadline - self.time()))
        finally:
            self._running = False
        if not future.done():
            future.set_exception(RequestTimeout(f"not done within {timeout} s"))

    def _run_once(self, max_wait: float | None = None) -> None:
        timeout: float | None
        if self._ready:
            timeout = 0.0
        elif self._timers:
            timeout = max(0.0, self._timers[0][0] - self.time())
        else:
            timeout = None
        if max_wait is not None:
            timeout = max_wait if timeout is None else min(timeout, max_wait)
        handlers = self._handlers
        try:
            ready = self._epoll.poll(-1 if timeout is None else timeout)
        except InterruptedError:
            ready = []
        for fd, mask in ready:
            handler = handlers.get(fd)
            if handler is None:
                continue  # unregistered by an earlier callback of this pass
            try:
                handler(mask)
            except Exception:
                log.exception("I/O callback %r failed", handler)
        if self._timers:
            now = self.time()
            timers = self._timers
            while timers and timers[0][0] <= now:
                handle = heapq.heappop(timers)[2]
                if not handle.cancelled:
                    self._ready.append((handle.callback, handle.args))
        # Only what is ready now runs in this pass; callbacks scheduled by these run in the next.
        for _ in range(len(self._ready)):
            callback, args = self._ready.popleft()
            try:
                callback(*args)
            except Exception:
                log.exception("callback %r failed", callback)
        for hook in self._pass_end:
            try:
                hook()
            except Exception:
                log.exception("pass-end hook %r failed", hook)

    def _drain_wakeup(self, mask: int) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._epoll.close()
        self._wake_r.close()
        self._wake_w.close()
