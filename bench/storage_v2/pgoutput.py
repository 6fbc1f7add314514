"""A minimal reader of pgoutput's binary messages (protocol version 1, ``binary 'true'``): Begin, Relation, Insert
and Commit, which is all an insert-only publication produces. Column values arrive in their types' binary send
format; the ones the outbox table uses are decoded, anything else stays bytes."""

from __future__ import annotations

import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_I8 = struct.Struct(">q")
_I2 = struct.Struct(">h")
_I4 = struct.Struct(">i")


def _ts(b: bytes) -> datetime:
    return _EPOCH + timedelta(microseconds=_I8.unpack(b)[0])


# type oid -> decoder of the binary send format
DECODERS: dict[int, Callable[[bytes], Any]] = {
    20: lambda b: _I8.unpack(b)[0],  # int8
    21: lambda b: _I2.unpack(b)[0],  # int2
    23: lambda b: _I4.unpack(b)[0],  # int4
    25: lambda b: b.decode(),  # text
    17: bytes,  # bytea
    2950: lambda b: uuid.UUID(bytes=b),  # uuid
    1184: _ts,  # timestamptz
    3802: lambda b: b[1:].decode(),  # jsonb: a version byte, then the text
    5069: lambda b: _I8.unpack(b)[0],  # xid8
}


@dataclass
class Relation:
    names: list[str]
    decoders: list[Callable[[bytes], Any]]


@dataclass
class Transaction:
    xid: int
    commit_lsn: int = 0
    end_lsn: int = 0
    inserts: list[dict[str, Any]] = field(default_factory=list)


def _cstr(data: bytes, pos: int) -> tuple[str, int]:
    end = data.index(b"\0", pos)
    return data[pos:end].decode(), end + 1


class Reader:
    """Feed it the ``data`` of each row of ``pg_logical_slot_*_binary_changes``; it returns each transaction
    once its Commit arrives."""

    def __init__(self) -> None:
        self.relations: dict[int, Relation] = {}
        self._txn: Transaction | None = None

    def feed(self, data: bytes) -> Transaction | None:
        kind = data[:1]
        if kind == b"B":
            self._txn = Transaction(xid=_I4.unpack_from(data, 17)[0])
        elif kind == b"R":
            rel = _I4.unpack_from(data, 1)[0]
            _, pos = _cstr(data, 5)  # namespace
            _, pos = _cstr(data, pos)  # relation name
            pos += 1  # replica identity
            ncols = _I2.unpack_from(data, pos)[0]
            pos += 2
            names, decoders = [], []
            for _ in range(ncols):
                pos += 1  # flags
                name, pos = _cstr(data, pos)
                oid = _I4.unpack_from(data, pos)[0]
                pos += 8  # type oid, typmod
                names.append(name)
                decoders.append(DECODERS.get(oid, bytes))
            self.relations[rel] = Relation(names, decoders)
        elif kind == b"I":
            assert self._txn is not None
            rel = self.relations[_I4.unpack_from(data, 1)[0]]
            pos = 6  # 'I', relation id, 'N'
            ncols = _I2.unpack_from(data, pos)[0]
            pos += 2
            row: dict[str, Any] = {}
            for i in range(ncols):
                k = data[pos:pos + 1]
                pos += 1
                if k in (b"b", b"t"):
                    n = _I4.unpack_from(data, pos)[0]
                    pos += 4
                    row[rel.names[i]] = rel.decoders[i](data[pos:pos + n]) if k == b"b" else data[pos:pos + n]
                    pos += n
                else:  # 'n' null, 'u' unchanged TOAST (never in an insert)
                    row[rel.names[i]] = None
            self._txn.inserts.append(row)
        elif kind == b"C":
            assert self._txn is not None
            txn, self._txn = self._txn, None
            txn.commit_lsn = _I8.unpack_from(data, 2)[0]
            txn.end_lsn = _I8.unpack_from(data, 10)[0]
            return txn
        return None
