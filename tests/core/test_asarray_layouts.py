"""Host data of any layout and byte order reaches every device as its own values and shape."""

from __future__ import annotations

import numpy as np
import pytest

import dsrt

BASE = np.arange(24, dtype=np.float32).reshape(4, 6) * 0.5 - 3
LAYOUTS = {
    "big-endian": BASE.astype(">f4"),
    "fortran": np.asfortranarray(BASE),
    "strided": BASE[:, ::2],
    "transposed": BASE.T,
    "reversed": BASE[::-1],
    "0-d": np.array(2.5, np.float32),
    "big-endian 0-d": np.array(-1.25, ">f8"),
}


@pytest.fixture(scope="module")
def exact_devices():
    rt = dsrt.Runtime()
    return [d for d in rt.devices if not d.info.simulated and "float32" in d.info.dtypes]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_asarray_keeps_values_and_shape_on_every_device(exact_devices, layout):
    host = LAYOUTS[layout]
    native = host.astype(host.dtype.newbyteorder("="))
    for dev in exact_devices:
        if native.dtype.name not in dev.info.dtypes:
            continue
        a = dev.asarray(host)
        assert a.shape == host.shape and a.dtype == native.dtype, (dev.id, a.shape, a.dtype)
        np.testing.assert_array_equal(a.numpy(), native, err_msg=dev.id)
        if native.dtype.name in dev.info.kernels.get("add", ()):
            np.testing.assert_array_equal(dev.launch("add", a, a).numpy(), native + native, err_msg=dev.id)


def test_copy_from_host_takes_another_byte_order_and_refuses_another_dtype(cpu):
    dst = cpu.empty((4, 6), "float32")
    cpu.copy_from_host(dst, BASE.astype(">f4"))
    np.testing.assert_array_equal(dst.numpy(), BASE)
    with pytest.raises(dsrt.ShapeError, match=r"cannot copy host float64\(4, 6\) into float32\(4, 6\)"):
        cpu.copy_from_host(dst, BASE.astype(np.float64))
