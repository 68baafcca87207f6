"""Pack and unpack stream payloads, derived from the Amaranth layouts in ``rtl/layouts.py``.

A payload port in the generated Verilog is one packed vector whose fields sit as
``data.Layout.cast(layout)`` places them (first field at bit 0). Nothing here
names a bit position: every offset and width is read from the layout, so a field
moved in ``rtl/layouts.py`` moves here too.

``pack(layout, {"tag": 3, "access": "WRITE", ...}) -> int`` and
``unpack(layout, value) -> dict``. Enum fields accept a member of the layout's
enum, any enum with the same value (``models.arch.Access.WRITE``), a member
name or a plain int; they unpack to plain ints (compare them with
``int(enum_member)``). Nested layouts pack from and unpack to nested dicts.

On top, the conversions the testbench needs between the models' types
(``models.transaction.Request``/``Response``, ``models.arch.FaultRecord``) and
the translation, fault-report and invalidation payloads.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from functools import cache

from amaranth.hdl import Shape
from amaranth.lib import data

from models import arch
from models.transaction import Request, Response, Status
from models.translate import MrifTarget
from rtl import layouts


@dataclass(frozen=True)
class FieldInfo:
    name: str
    offset: int
    width: int
    enum: type[enum.Enum] | None  # the layout's enum for enum-shaped fields
    layout: data.Layout | None  # for nested struct/union fields


@cache
def _fields_of(layout: data.Layout) -> tuple[FieldInfo, ...]:
    out = []
    for name, field in layout:
        shape = field.shape
        nested = None
        enum_cls = None
        if isinstance(shape, type) and issubclass(shape, enum.Enum):
            enum_cls = shape
        elif isinstance(shape, data.Layout) or (
                isinstance(shape, type) and issubclass(shape, data.View)):
            nested = data.Layout.cast(shape)
        elif not isinstance(Shape.cast(shape), Shape):  # pragma: no cover - defensive
            raise TypeError(f"field {name!r} has an unsupported shape {shape!r}")
        out.append(FieldInfo(name, field.offset, field.width, enum_cls, nested))
    return tuple(out)


def fields(layout) -> tuple[FieldInfo, ...]:
    """The fields of ``layout`` (anything ``data.Layout.cast`` accepts), in layout order."""
    return _fields_of(data.Layout.cast(layout))


def width(layout) -> int:
    return data.Layout.cast(layout).size


def _enum_value(info: FieldInfo, value) -> int:
    if isinstance(value, str):
        try:
            return int(info.enum[value].value)
        except KeyError:
            raise ValueError(f"field {info.name!r}: {value!r} is not one of "
                             f"{', '.join(info.enum.__members__)}") from None
    if isinstance(value, enum.Enum):
        value = value.value
    value = int(value)
    if value not in {int(m.value) for m in info.enum}:
        raise ValueError(f"field {info.name!r}: {value} is not a value of {info.enum.__name__}")
    return value


def pack(layout, values: dict) -> int:
    """The packed integer for ``values`` (missing fields are 0; unknown names are an error)."""
    layout = data.Layout.cast(layout)
    infos = _fields_of(layout)
    known = {f.name for f in infos}
    unknown = set(values) - known
    if unknown:
        raise KeyError(f"no field(s) {', '.join(sorted(unknown))} in layout; it has "
                       f"{', '.join(f.name for f in infos)}")
    word = 0
    for info in infos:
        if info.name not in values:
            continue
        value = values[info.name]
        if info.layout is not None:
            raw = pack(info.layout, value) if isinstance(value, dict) else int(value)
        elif info.enum is not None:
            raw = _enum_value(info, value)
        else:
            raw = int(value)
        if raw < 0 or raw >> info.width:
            raise ValueError(f"field {info.name!r}: {raw:#x} does not fit {info.width} bits")
        word |= raw << info.offset
    return word


def unpack(layout, word: int) -> dict:
    """The fields of the packed integer ``word`` as a dict of ints (nested dicts for structs)."""
    layout = data.Layout.cast(layout)
    word = int(word)
    out = {}
    for info in _fields_of(layout):
        raw = (word >> info.offset) & ((1 << info.width) - 1)
        out[info.name] = unpack(info.layout, raw) if info.layout is not None else raw
    return out


# --------------------------------------------------------------------------- #
# The models' types <-> payloads
# --------------------------------------------------------------------------- #
def request_payload(request: Request, tag_bits: int) -> int:
    """A ``models.transaction.Request`` as a ``translation_request`` payload."""
    return pack(layouts.translation_request(tag_bits), {
        "tag": request.tag,
        "device_id": request.device_id,
        "process_id": request.process_id if request.pv else 0,
        "pv": int(bool(request.pv)),
        "priv": int(request.priv),
        "access": int(request.access),
        "addr_type": int(request.addr_type),
        "iova": request.iova,
    })


def request_from_payload(word: int, tag_bits: int) -> Request:
    f = unpack(layouts.translation_request(tag_bits), word)
    return Request(device_id=f["device_id"], iova=f["iova"], access=arch.Access(f["access"]),
                   process_id=f["process_id"], pv=bool(f["pv"]), priv=arch.Priv(f["priv"]),
                   addr_type=arch.AddrType(f["addr_type"]), tag=f["tag"])


def response_fields(word: int, tag_bits: int) -> dict:
    return unpack(layouts.translation_response(tag_bits), word)


def response_from_payload(word: int, tag_bits: int) -> Response:
    """A ``translation_response`` payload as a ``models.transaction.Response``.

    ``size_log2`` becomes ``page_size``; the fields that only mean something on
    success are dropped from a fault (the RTL zeroes them, the model leaves them out).
    """
    f = response_fields(word, tag_bits)
    if f["fault"]:
        return Response(Status.FAULT, tag=f["tag"], cause=f["cause"])
    mrif = None
    if f["mrif"]:
        notice = f["notice"]
        mrif = MrifTarget(mrif_address=f["spa"],
                          notice_address=notice["ppn"] << arch.PAGE_SHIFT,
                          notice_data=notice["nid"])
    return Response(Status.SUCCESS, tag=f["tag"], spa=f["spa"], page_size=1 << f["size_log2"],
                    r=bool(f["r"]), w=bool(f["w"]), x=bool(f["x"]), u=bool(f["u"]),
                    g=bool(f["g"]), pbmt=f["pbmt"], msi=mrif is not None, mrif=mrif)


def response_payload(response: Response, tag_bits: int) -> int:
    """The payload a correct core would send for ``response`` (for stubs and tests)."""
    if not response.ok:
        return pack(layouts.translation_response(tag_bits),
                    {"tag": response.tag, "fault": 1, "cause": response.cause})
    return pack(layouts.translation_response(tag_bits), {
        "tag": response.tag, "fault": 0, "spa": response.spa,
        "size_log2": response.page_size.bit_length() - 1,
        "r": int(response.r), "w": int(response.w), "x": int(response.x),
        "u": int(response.u), "g": int(response.g), "pbmt": response.pbmt,
        "mrif": int(response.mrif is not None),
        "notice": {"ppn": response.mrif.notice_address >> arch.PAGE_SHIFT,
                   "nid": response.mrif.notice_data} if response.mrif else {"ppn": 0, "nid": 0},
    })


def fault_record_from_payload(word: int) -> arch.FaultRecord:
    f = unpack(layouts.FaultReport, word)
    return arch.FaultRecord(cause=f["cause"], ttyp=f["ttyp"], device_id=f["device_id"],
                            process_id=f["process_id"], pv=bool(f["pv"]),
                            priv=bool(f["priv"]), iotval=f["iotval"], iotval2=f["iotval2"])


def fault_record_payload(record: arch.FaultRecord) -> int:
    return pack(layouts.FaultReport, {
        "cause": record.cause, "ttyp": record.ttyp, "device_id": record.device_id,
        "process_id": record.process_id, "pv": int(record.pv), "priv": int(record.priv),
        "iotval": record.iotval, "iotval2": record.iotval2,
    })


def invalidation_payload(**operands) -> int:
    """An ``Invalidation`` payload: ``kind`` ("IOTINVAL_VMA", ...) plus its operands."""
    return pack(layouts.Invalidation, operands)
