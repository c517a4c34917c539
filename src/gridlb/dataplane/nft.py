"""A thin ctypes door to libnftables: run one nft script as one atomic transaction, or list as JSON.

libnftables (Debian `libnftables1`, installed with `nftables`) is the library the `nft` program is
built on; calling it in-process saves a fork per transaction, which matters when every new
connection of the `dr` dataplane adds a map element. A context works in the network namespace of
the process that created it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import threading
from typing import Any

#: Output flags of nft_ctx_output_set_flags (include/nftables/libnftables.h).
NFT_CTX_OUTPUT_JSON = 1 << 4
NFT_CTX_OUTPUT_NUMERIC_ALL = (1 << 7) | (1 << 8) | (1 << 9) | (1 << 10)
NFT_CTX_OUTPUT_TERSE = 1 << 11  # omit set elements


class NftError(RuntimeError):
    """The kernel or libnftables refused a transaction; the message is nft's own."""


def find_library() -> str | None:
    """Return the path or name of libnftables, or None when it is not installed."""
    return ctypes.util.find_library("nftables")


class Nft:
    """One libnftables context; `run` applies a script atomically, `list_json` reads a table."""

    def __init__(self, library: str | None = None) -> None:
        name = library or find_library()
        if name is None:
            raise NftError("libnftables is not installed (Debian package nftables / libnftables1)")
        lib = ctypes.CDLL(name)
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
        lib.nft_ctx_output_get_flags.restype = ctypes.c_uint
        lib.nft_ctx_output_get_flags.argtypes = [ctypes.c_void_p]
        lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        self._lib = lib
        self._lock = threading.Lock()  # a context is not thread-safe
        ctx = lib.nft_ctx_new(0)
        if not ctx:
            raise NftError("nft_ctx_new failed")
        self._ctx: int | None = ctx
        lib.nft_ctx_buffer_output(ctx)
        lib.nft_ctx_buffer_error(ctx)
        self._base_flags = lib.nft_ctx_output_get_flags(ctx)

    def run(self, script: str, *, json_output: bool = False, terse: bool = False) -> str:
        """Run `script` (nft syntax, many commands = one transaction); return the output text.

        `terse` leaves set elements out of listings (libnftables then skips fetching them).
        """
        with self._lock:
            ctx = self._ctx
            if ctx is None:
                raise NftError("the nft context is closed")
            extra = NFT_CTX_OUTPUT_JSON | NFT_CTX_OUTPUT_NUMERIC_ALL if json_output else 0
            flags = self._base_flags | extra | (NFT_CTX_OUTPUT_TERSE if terse else 0)
            self._lib.nft_ctx_output_set_flags(ctx, flags)
            rc = self._lib.nft_run_cmd_from_buffer(ctx, script.encode())
            out = (self._lib.nft_ctx_get_output_buffer(ctx) or b"").decode(errors="replace")
            err = (self._lib.nft_ctx_get_error_buffer(ctx) or b"").decode(errors="replace")
        if rc != 0:
            raise NftError(_first_error(err) or f"nft failed (rc={rc})")
        return out

    def list_json(self, what: str, *, terse: bool = False) -> list[dict[str, Any]]:
        """Return the objects of `list WHAT` (e.g. `set netdev gridlb_dr fin4`) as nft's JSON items."""
        text = self.run(f"list {what}", json_output=True, terse=terse)
        data = json.loads(text) if text.strip() else {"nftables": []}
        items: list[dict[str, Any]] = data.get("nftables", [])
        return items

    def close(self) -> None:
        """Free the context."""
        with self._lock:
            if self._ctx is not None:
                self._lib.nft_ctx_free(self._ctx)
                self._ctx = None


def _first_error(text: str) -> str:
    """Return nft's error message without the echo of the script and the caret line."""
    lines = [line for line in text.splitlines() if "Error:" in line]
    return (lines[0].split("Error:", 1)[1].strip() if lines else text.strip())[:500]


__all__ = ["Nft", "NftError", "find_library"]
