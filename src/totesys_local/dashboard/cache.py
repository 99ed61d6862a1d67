"""The dashboard's section results, cached per warehouse and data version (``queries.data_version``: the
last loaded batch id and the rollups' revision): a page whose warehouse has not changed since the last
render is served from memory, and the first page read after a new batch computes its figures again.
"""
import threading
from collections import OrderedDict
from typing import Any, Callable, Dict, Hashable, Tuple


class PageCache:
    """Results keyed by (warehouse URL, data version, section key), shared by every session of one
    dashboard server (thread-safe: the HTTP server answers each request in its own thread).

    A data version other than the one last seen for a URL drops that URL's entries of every other
    version (old figures are never served for a new version, and never kept). At most ``max_entries``
    are kept, the least recently used dropped first. ``hits`` and ``misses`` count the lookups.
    """

    def __init__(self, max_entries: int = 512) -> None:
        self.max_entries = max_entries
        self.hits = 0
        self.misses = 0
        self._entries: "OrderedDict[Tuple[str, Hashable, Hashable], Any]" = OrderedDict()
        self._versions: Dict[str, Hashable] = {}
        self._lock = threading.Lock()

    def get(self, url: str, version: Hashable, key: Hashable, compute: Callable[[], Any]) -> Any:
        """The cached result of ``key`` for ``url`` at ``version``, else ``compute()``'s (then kept)."""
        entry = (url, version, key)
        with self._lock:
            if self._versions.get(url) != version:
                self._versions[url] = version
                for stale in [cached for cached in self._entries
                              if cached[0] == url and cached[1] != version]:
                    del self._entries[stale]
            if entry in self._entries:
                self._entries.move_to_end(entry)
                self.hits += 1
                return self._entries[entry]
            self.misses += 1
        value = compute()
        with self._lock:
            if self._versions.get(url) == version:
                self._entries[entry] = value
                while len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)
        return value
