"""Hand-made .npy and .zip bytes for the hostile-file tests: headers and zip directories that
say whatever the test wants (sizes no honest writer would produce), written field by field
from the ZIP specification (APPNOTE 4.3.7, 4.3.12, 4.3.16, 4.5.3) and the .npy format."""
from __future__ import annotations

import struct
import zlib

ZIP64_LIMIT = 0xFFFFFFFF


def npy_bytes(shape: tuple, descr: str = "<f4", data: bytes = b"", fortran_order: bool = False) -> bytes:
    """A version 1.0 .npy file whose header declares `shape` and `descr`, followed by `data`
    (which need not match the header)."""
    header = repr({"descr": descr, "fortran_order": fortran_order, "shape": tuple(shape)}).encode("latin1")
    pad = -(10 + len(header) + 1) % 64  # the header ends in a newline on a 64-byte boundary
    header += b" " * pad + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + data


def zip_bytes(members: list, deflate: bool = False) -> bytes:
    """A zip archive of `members`, each (name, payload bytes, declared uncompressed size or
    None for the true size). Sizes from 4 GiB up are written as ZIP64 extra fields."""
    out, central = bytearray(), bytearray()
    for name, payload, declared in members:
        raw = name.encode()
        crc = zlib.crc32(payload)
        if deflate:
            packer = zlib.compressobj(6, zlib.DEFLATED, -15)
            stored = packer.compress(payload) + packer.flush()
        else:
            stored = payload
        size = len(payload) if declared is None else declared
        zip64 = size >= ZIP64_LIMIT
        extra = struct.pack("<HHQQ", 1, 16, size, len(stored)) if zip64 else b""
        fields = (ZIP64_LIMIT, ZIP64_LIMIT) if zip64 else (len(stored), size)
        version = 45 if zip64 else 20
        method = 8 if deflate else 0
        offset = len(out)
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, version, 0, method, 0, 0x21, crc, *fields, len(raw),
                           len(extra)) + raw + extra + stored
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, version, version, 0, method, 0, 0x21, crc,
                               *fields, len(raw), len(extra), 0, 0, 0, 0, offset) + raw + extra
    cd_offset = len(out)
    out += central
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(central), cd_offset, 0)
    return bytes(out)
