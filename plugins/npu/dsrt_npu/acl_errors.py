"""ACL return codes and how they become dsrt errors.

Codes and meanings follow the aclError list of the CANN application development documentation
(pyACL, CANN 7.0/8.0 "aclError" and "runtime return codes" tables). Codes map by range:

=================  ===================================  ==========================================
range              ACL meaning                          dsrt error
=================  ===================================  ==========================================
100000 - 199999    parameter or usage check failed      :class:`AclInvalidArgumentError`
200000, 207001     memory allocation failed             :class:`AclOutOfMemoryError`
other 2xxxxx       resource or feature unavailable      :class:`AclDeviceUnavailableError`
300000 - 399999    storage over limit                   :class:`AclOutOfMemoryError`
500000 - 599999    internal, driver or device failure   :class:`AclDeviceFaultError`
=================  ===================================  ==========================================

Every error carries ``code`` and ``meaning``.
"""

from __future__ import annotations

from dsrt.errors import DeviceError, DeviceLostError, DeviceUnavailableError, DsrtError, OutOfMemoryError

__all__ = [
    "ACL_SUCCESS",
    "MEANINGS",
    "AclError",
    "AclInvalidArgumentError",
    "AclOutOfMemoryError",
    "AclDeviceUnavailableError",
    "AclDeviceFaultError",
    "acl_error",
    "check",
]

ACL_SUCCESS = 0

#: Documented meanings of the codes dsrt is most likely to meet.
MEANINGS: dict[int, str] = {
    100000: "ACL_ERROR_INVALID_PARAM: a parameter is invalid",
    100001: "ACL_ERROR_UNINITIALIZE: acl.init has not been called",
    100002: "ACL_ERROR_REPEAT_INITIALIZE: acl.init was called twice",
    100004: "ACL_ERROR_INVALID_FILE: invalid file",
    100010: "ACL_ERROR_INVALID_DEVICE: invalid device id",
    107000: "ACL_ERROR_RT_PARAM_INVALID: runtime parameter invalid",
    107001: "ACL_ERROR_RT_INVALID_DEVICEID: invalid device id",
    107002: "ACL_ERROR_RT_CONTEXT_NULL: no context set",
    107003: "ACL_ERROR_RT_STREAM_CONTEXT: stream does not belong to the current context",
    200000: "ACL_ERROR_BAD_ALLOC: memory allocation failed",
    200001: "ACL_ERROR_API_NOT_SUPPORT: API not supported",
    200002: "ACL_ERROR_INVALID_DEVICE: device is invalid or not available",
    200003: "ACL_ERROR_MEMORY_ADDRESS_UNALIGNED: memory address not aligned",
    207000: "ACL_ERROR_RT_FEATURE_NOT_SUPPORT: feature not supported",
    207001: "ACL_ERROR_RT_MEMORY_ALLOCATION: device memory allocation failed",
    300000: "ACL_ERROR_STORAGE_OVER_LIMIT: storage over limit",
    500000: "ACL_ERROR_INTERNAL_ERROR: internal error",
    500001: "ACL_ERROR_FAILURE: operation failed",
    500002: "ACL_ERROR_GE_FAILURE: graph engine failure",
    500003: "ACL_ERROR_RT_FAILURE: runtime failure",
    500004: "ACL_ERROR_DRV_FAILURE: driver failure",
    507000: "ACL_ERROR_RT_INTERNAL_ERROR: runtime internal error",
    507010: "ACL_ERROR_RT_LOST_HEARTBEAT: the device stopped answering (heartbeat lost)",
    507011: "ACL_ERROR_RT_MODEL_EXECUTE: model execution failed",
    507015: "ACL_ERROR_RT_AICORE_EXCEPTION: AI Core exception",
    507899: "ACL_ERROR_RT_DRV_INTERNAL_ERROR: driver internal error",
}


def meaning_of(code: int) -> str:
    """The documented meaning of ``code``, or the meaning of its range."""
    known = MEANINGS.get(code)
    if known is not None:
        return known
    if 100000 <= code < 200000:
        return "parameter or usage check failed"
    if 200000 <= code < 300000:
        return "resource or feature unavailable"
    if 300000 <= code < 400000:
        return "storage over limit"
    if 500000 <= code < 600000:
        return "internal, driver or device failure"
    return "unknown ACL error code"


class AclError(DsrtError):
    """Mixin data of every ACL-originated error: ``code`` and ``meaning``."""

    code: int
    meaning: str


class AclInvalidArgumentError(AclError, DeviceError):
    """ACL rejected a parameter or call sequence (1xxxxx)."""


class AclDeviceUnavailableError(AclError, DeviceUnavailableError):
    """ACL reports a resource or feature as unavailable (2xxxxx)."""


class AclDeviceFaultError(AclError, DeviceLostError):
    """ACL reports an internal, driver or device failure (5xxxxx)."""


class AclOutOfMemoryError(AclError, OutOfMemoryError):
    """ACL could not allocate (200000, 207001, 3xxxxx)."""


def acl_error(code: int, call: str, *, device: str | None = None, requested: int = 0, capacity: int = 0) -> AclError:
    """The dsrt error for ACL return ``code`` from ``call`` (e.g. ``'acl.rt.malloc'``)."""
    meaning = meaning_of(code)
    text = f"{call} returned {code} ({meaning})"
    where = device or "npu"
    err: AclError
    if code in (200000, 207001) or 300000 <= code < 400000:
        err = AclOutOfMemoryError(device=where, requested=requested, capacity=capacity, tried=[call], detail=text)
    elif 100000 <= code < 200000:
        err = AclInvalidArgumentError(f"{where}: {text}", device=where)
    elif 200000 <= code < 300000:
        err = AclDeviceUnavailableError(text, device=where)
    else:
        err = AclDeviceFaultError(f"{where}: {text}", device=where)
    err.code = code
    err.meaning = meaning
    return err


def check(ret: int, call: str, *, device: str | None = None, requested: int = 0, capacity: int = 0) -> None:
    """Raise the mapped dsrt error unless ``ret`` is ACL_SUCCESS."""
    if ret != ACL_SUCCESS:
        raise acl_error(int(ret), call, device=device, requested=requested, capacity=capacity)
