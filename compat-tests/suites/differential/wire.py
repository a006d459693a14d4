"""AMQP 0-9-1 field values with their type tags, both ways, for the differential suite.

py-amqp maps Python values to a few field types of its choosing on the way out and drops type tags
on the way in (short, long and unsigned ints all come back as int). Scenarios need both exact:

- `Typed(tag, value)`: a field value sent with exactly that type tag. `install()` teaches
  py-amqp's table writer to emit it, in message headers and in method arguments alike.
- `decode_basic_properties(raw)`: the basic properties of a received content header, read from the
  raw bytes (which `install()` makes py-amqp keep on every message as `_compat_raw_props`), with
  every field-table value as `[tag, value]`.

Tags follow RabbitMQ's reading of 0-9-1 (its errata): t bool, b int8, B uint8, s int16, u uint16,
I int32, i uint32, l int64, f float32, d float64, D decimal, S long string, x byte array,
A array, T timestamp, F table, V void.
"""

import struct

import amqp.serialization as _ser

_FMT = {"b": ">b", "B": ">B", "s": ">h", "u": ">H", "I": ">i", "i": ">I", "l": ">q", "L": ">q",
        "f": ">f", "d": ">d", "T": ">Q"}


class Typed:
    __slots__ = ("tag", "value")

    def __init__(self, tag, value):
        self.tag, self.value = tag, value

    def __repr__(self):
        return f"Typed({self.tag!r}, {self.value!r})"


def encode_value(v):
    """Bytes of one field value (tag included)."""
    if isinstance(v, Typed):
        t, x = v.tag, v.value
        if t in _FMT:
            return t.encode() + struct.pack(_FMT[t], x)
        if t == "t":
            return b"t" + struct.pack(">B", 1 if x else 0)
        if t in ("S", "x"):
            data = x.encode() if isinstance(x, str) else bytes(x)
            return t.encode() + struct.pack(">I", len(data)) + data
        if t == "D":
            scale, unscaled = x
            return b"D" + struct.pack(">Bi", scale, unscaled)
        if t == "F":
            return b"F" + encode_table(x)
        if t == "A":
            return b"A" + encode_array(x)
        if t == "V":
            return b"V"
        raise ValueError(f"unknown field type {t!r}")
    out = []
    _ORIG_WRITE_ITEM(v, out.append, [])
    return b"".join(out)


def encode_table(d):
    body = b"".join(struct.pack(">B", len(k.encode())) + k.encode() + encode_value(v) for k, v in d.items())
    return struct.pack(">I", len(body)) + body


def encode_array(items):
    body = b"".join(encode_value(v) for v in items)
    return struct.pack(">I", len(body)) + body


_ORIG_WRITE_ITEM = _ser._write_item


def _write_item(v, write, bits):
    if isinstance(v, Typed):
        write(encode_value(v))
    else:
        _ORIG_WRITE_ITEM(v, write, bits)


def _text(b):
    try:
        return bytes(b).decode("utf-8")
    except UnicodeDecodeError:
        return {"hex": bytes(b).hex()}


def _decode_value(buf, off):
    t = chr(buf[off])
    off += 1
    if t in _FMT:
        size = struct.calcsize(_FMT[t])
        (x,) = struct.unpack_from(_FMT[t], buf, off)
        return [t, x], off + size
    if t == "t":
        return [t, bool(buf[off])], off + 1
    if t in ("S", "x"):
        (n,) = struct.unpack_from(">I", buf, off)
        data = bytes(buf[off + 4:off + 4 + n])
        return [t, _text(data) if t == "S" else {"hex": data.hex()}], off + 4 + n
    if t == "D":
        scale, unscaled = struct.unpack_from(">Bi", buf, off)
        return [t, [scale, unscaled]], off + 5
    if t == "F":
        d, off = decode_table(buf, off)
        return [t, d], off
    if t == "A":
        (n,) = struct.unpack_from(">I", buf, off)
        end, off, items = off + 4 + n, off + 4, []
        while off < end:
            item, off = _decode_value(buf, off)
            items.append(item)
        return [t, items], end
    if t == "V":
        return [t, None], off
    raise ValueError(f"unknown field type {t!r} at offset {off - 1}")


def decode_table(buf, off=0):
    """(dict of name -> [tag, value], next offset) for the table at buf[off:]."""
    (n,) = struct.unpack_from(">I", buf, off)
    end, off, out = off + 4 + n, off + 4, {}
    while off < end:
        klen = buf[off]
        key = _text(buf[off + 1:off + 1 + klen])
        off += 1 + klen
        out[key if isinstance(key, str) else repr(key)], off = _decode_value(buf, off)
    return out, end


_PROPS = [  # (flag bit, name, kind)
    (15, "content_type", "shortstr"), (14, "content_encoding", "shortstr"), (13, "headers", "table"),
    (12, "delivery_mode", "octet"), (11, "priority", "octet"), (10, "correlation_id", "shortstr"),
    (9, "reply_to", "shortstr"), (8, "expiration", "shortstr"), (7, "message_id", "shortstr"),
    (6, "timestamp", "timestamp"), (5, "type", "shortstr"), (4, "user_id", "shortstr"),
    (3, "app_id", "shortstr"), (2, "cluster_id", "shortstr"),
]


def decode_basic_properties(raw):
    """Dict of the properties present in a basic content header's property flags + list."""
    (flags,) = struct.unpack_from(">H", raw, 0)
    off, out = 2, {}
    if flags & 1:
        out["_more_flags"] = True  # a continuation flag word: not used by class basic
    for bit, name, kind in _PROPS:
        if not flags & (1 << bit):
            continue
        if kind == "shortstr":
            n = raw[off]
            out[name] = _text(raw[off + 1:off + 1 + n])
            off += 1 + n
        elif kind == "octet":
            out[name] = raw[off]
            off += 1
        elif kind == "timestamp":
            (out[name],) = struct.unpack_from(">Q", raw, off)
            off += 8
        else:
            out[name], off = decode_table(raw, off)
    if off != len(raw):
        out["_trailing_octets"] = len(raw) - off
    return out


def install():
    """Patch py-amqp (in this process only): Typed values in outgoing tables, and the raw property
    bytes of every incoming content header kept on the message."""
    if getattr(_ser, "_compat_installed", False):
        return
    _ser._write_item = _write_item
    def inbound_header(self, buf, offset=0):
        # As py-amqp's own, but a property list py-amqp cannot decode (e.g. a timestamp beyond
        # datetime's range) leaves .properties empty instead of failing: scenarios read the raw
        # bytes kept here.
        class_id, self.body_size = struct.unpack_from(">HxxQ", buf, offset)
        offset += 12
        self._compat_raw_props = bytes(buf[offset:])
        try:
            self._load_properties(class_id, buf, offset)
        except Exception:
            self.properties = {}
        if not self.body_size:
            self.ready = True
        return offset

    _ser.GenericContent.inbound_header = inbound_header
    _ser._compat_installed = True
