# Types for protocol/show.py: host-side names, dict conversion and one-line text for messages.
from collections.abc import Mapping
from typing import Final

from protocol.messages import Message

BY_NAME: Final[dict[str, type[Message]]]  # Message.NAME -> class
CONFIG_KEYS: Final[tuple[str, ...]]  # config map key -> name; index 0 unused ("")
FLAG_NAMES: Final[tuple[str, ...]]  # flood flag bit i -> name
ALARM_NAMES: Final[tuple[str, ...]]  # ALARM_* -> name; index 0 unused ("")
RESET_NAMES: Final[tuple[str, ...]]  # Hello.reset_cause -> name
TIME_QUALITY_NAMES: Final[tuple[str, ...]]  # TIME_* -> name

# {"type": NAME, "node", "boot", "seq", then each of FIELDS}
def to_dict(msg: Message) -> dict[str, object]: ...

# Inverse of to_dict; bytes fields may also be hex text, config keys decimal text. Raises
# ProtocolError(TYPE) for an unknown type name or a missing field.
def from_dict(d: Mapping[str, object]) -> Message: ...
def flag_names(flags: int) -> list[str]: ...
def describe(msg: Message) -> str: ...  # "flood 1042/17#40321 t=... depth_mm=412 ..."
