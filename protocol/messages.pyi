# Types for protocol/messages.py: the message classes and their codec.
# Field attributes follow each class's KINDS: U32/I32/U64 -> int, U32N/I32N -> int | None,
# TEXT -> str, BYTES -> bytes, U32A -> Sequence[int], CFG -> dict[int, int | list[int]].
# protocol/tests/test_stubs.py checks them against the run-time FIELDS and KINDS.
from collections.abc import Sequence
from typing import ClassVar, Final, TypeAlias

from protocol.cbor import Writer

_ReadBuf: TypeAlias = bytes | bytearray | memoryview

VERSION_NUMBER: Final = 1

HELLO: Final = 1
FLOOD: Final = 2
TRAFFIC: Final = 3
ALARM: Final = 4
HEALTH: Final = 5
ACK: Final = 16
TIME: Final = 17
CONFIG: Final = 18

# Field kinds (values of Message.KINDS)
U32: Final = 0  # unsigned, < 2**32
I32: Final = 1  # signed, -2**31 .. 2**31-1
U32N: Final = 2  # U32 or None (not measured)
I32N: Final = 3  # I32 or None
TEXT: Final = 4  # str, at most 32 bytes of UTF-8
BYTES: Final = 5  # bytes, at most 32
U32A: Final = 6  # list or tuple of at most 16 U32
U64: Final = 7  # unsigned, < 2**64
CFG: Final = 8  # dict: key 1..255 -> I32 or list of at most 16 I32

FLAG_RANGE: Final = 0x001
FLAG_BLIP: Final = 0x002
FLAG_BOX: Final = 0x004
FLAG_GRADIENT: Final = 0x008
FLAG_SHORT: Final = 0x010
FLAG_ZERO: Final = 0x020
FLAG_MINRANGE: Final = 0x040
FLAG_NOECHO: Final = 0x080
FLAG_NOTEMP: Final = 0x100
FLAG_INVALID: Final = 0x200

ALARM_CROSSED: Final = 1
ALARM_PREDICTED: Final = 2
ALARM_CLEARED: Final = 3
ALARM_RATE: Final = 4

TIME_FREE: Final = 0
TIME_NTP: Final = 1
TIME_GNSS: Final = 2

UNIX_MIN: Final = 1000000000

class Message:
    TYPE: ClassVar[int]
    NAME: ClassVar[str]
    UPLINK: ClassVar[bool]
    FIELDS: ClassVar[tuple[str, ...]]
    KINDS: ClassVar[tuple[int, ...]]  # field kinds (U32 ... CFG), one per FIELDS entry
    __hash__: ClassVar[None]  # type: ignore[assignment]  # __eq__ without __hash__
    node: int
    boot: int
    seq: int
    # Generic form (used through type[Message]); the subclasses spell out their fields.
    def __init__(self, node: int, boot: int, seq: int, *body: object, **named: object) -> None: ...
    def values(self) -> tuple[object, ...]: ...
    def __eq__(self, other: object) -> bool: ...

class Hello(Message):
    fw: str
    board: str
    reset_cause: int
    cfg_hash: bytes
    cfg_error: str
    def __init__(
        self,
        node: int,
        boot: int,
        seq: int,
        fw: str,
        board: str,
        reset_cause: int,
        cfg_hash: bytes,
        cfg_error: str,
    ) -> None: ...

class Flood(Message):
    t: int
    depth_mm: int
    range_mm: int
    temp_cc: int | None
    flags: int
    q: int
    def __init__(
        self,
        node: int,
        boot: int,
        seq: int,
        t: int,
        depth_mm: int,
        range_mm: int,
        temp_cc: int | None,
        flags: int,
        q: int,
    ) -> None: ...

class Traffic(Message):
    t: int
    window_s: int
    count: int
    occupancy_pm: int
    speed_mms: int | None
    samples: int
    def __init__(
        self,
        node: int,
        boot: int,
        seq: int,
        t: int,
        window_s: int,
        count: int,
        occupancy_pm: int,
        speed_mms: int | None,
        samples: int,
    ) -> None: ...

class Alarm(Message):
    t: int
    alarm: int
    level_mm: int
    depth_mm: int
    rate_ums: int
    eta_s: int | None
    def __init__(
        self,
        node: int,
        boot: int,
        seq: int,
        t: int,
        alarm: int,
        level_mm: int,
        depth_mm: int,
        rate_ums: int,
        eta_s: int | None,
    ) -> None: ...

class Health(Message):
    t: int
    uptime_s: int
    heap_free: int
    heap_min: int
    resets: Sequence[int]  # list or tuple at run time (a decoded message has a list)
    battery_mv: int | None
    queue: int
    dropped: int
    link: Sequence[int]  # list or tuple at run time (a decoded message has a list)
    status: int
    def __init__(
        self,
        node: int,
        boot: int,
        seq: int,
        t: int,
        uptime_s: int,
        heap_free: int,
        heap_min: int,
        resets: Sequence[int],
        battery_mv: int | None,
        queue: int,
        dropped: int,
        link: Sequence[int],
        status: int,
    ) -> None: ...

class Ack(Message):
    acked_boot: int
    floor: int
    sack: int
    def __init__(
        self, node: int, boot: int, seq: int, acked_boot: int, floor: int, sack: int
    ) -> None: ...

class Time(Message):
    utc_ms: int
    quality: int
    def __init__(self, node: int, boot: int, seq: int, utc_ms: int, quality: int) -> None: ...

class Config(Message):
    cfg: dict[int, int | list[int]]
    def __init__(self, node: int, boot: int, seq: int, cfg: dict[int, int | list[int]]) -> None: ...

CLASSES: Final[tuple[type[Message], ...]]
BY_TYPE: Final[dict[int, type[Message]]]

def valid(kind: int, v: object) -> bool: ...  # v is a valid value of the field kind

# Both check every field first: ProtocolError(FIELD). encode_into raises
# ProtocolError(OVERSIZE) when w's buffer is full.
def encode_into(msg: Message, w: Writer) -> None: ...
def encode(msg: Message) -> bytes: ...
def peek_node(payload: _ReadBuf) -> int: ...
def decode(payload: _ReadBuf, uplink: bool = True) -> Message: ...
