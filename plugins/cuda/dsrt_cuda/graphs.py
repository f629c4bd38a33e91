"""The CUDA device's ``graph_replay`` capability (see :mod:`dsrt.jit.replay`): the JIT's runs of fused
steps captured once into a CUDA graph (``cupy.cuda.Graph``) and replayed with one ``cudaGraphLaunch``.

Only generated kernels (:mod:`dsrt_cuda.fusion`) are accepted: they allocate nothing and never wait
on the host. Unfused launches go through CuPy and cuBLAS, which may take workspace from CuPy's pool
(an address a graph would bake while the pool hands it to someone else) or synchronise, so they run
plainly between graphs. Capture uses ``cudaStreamCaptureModeThreadLocal``: a call on the capturing
thread that is unsafe while capturing (``cudaMalloc``, a synchronous copy) invalidates the capture,
which then raises :class:`~dsrt.errors.DeviceError` and the JIT replays those steps plainly; other
threads are not affected.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import cupy as cp

from dsrt.array import Array
from dsrt.device import Stream
from dsrt.errors import DeviceError, DsrtError

if TYPE_CHECKING:
    from dsrt.jit.graph import Step

__all__ = ["CudaGraphs"]

#: cudaStreamCaptureModeThreadLocal (the runtime's enum value where CuPy does not export it).
_THREAD_LOCAL = int(getattr(cp.cuda.runtime, "streamCaptureModeThreadLocal", 1))


class CudaGraphs:
    """Capture and launch CUDA graphs for one GPU. ``cp_device`` is the CuPy device; ``translate`` turns
    a vendor exception into a :class:`~dsrt.errors.DsrtError` (the device's own translation)."""

    #: Captured graphs the JIT keeps per run of steps (each holds a few KiB of driver memory).
    max_graphs = 8

    def __init__(self, device_id: str, cp_device: Any, translate: Callable[[BaseException, str], DsrtError]) -> None:
        self.device_id = device_id
        self.cp_device = cp_device
        self.translate = translate

    def accepts(self, step: Step) -> str:
        """``""`` for a generated kernel, else why the step is replayed plainly. Called when a graph is built."""
        if step.fused and step.ir is not None:
            return ""
        return (f"unfused launch '{step.name}' runs through CuPy/cuBLAS, which may allocate or wait on the host;"
                " not captured")

    def address(self, array: Array) -> int:
        """The device address a captured kernel reads or writes for ``array`` (resident and held)."""
        alloc = array.allocation
        return int(alloc.handle) + int(alloc.offset) + int(array.byte_offset)

    def capture(self, run: Callable[[], None], stream: Stream) -> Callable[[], None]:
        """Capture what ``run()`` enqueues on ``stream`` (nothing executes) and return its launcher.

        Called on the replaying thread. Raises DeviceError when the capture was invalidated; the
        stream is out of capture mode again either way. The launcher keeps only the graph."""
        native = stream.native
        with self.cp_device:
            native.begin_capture(mode=_THREAD_LOCAL)
            try:
                run()
            except BaseException as exc:
                try:
                    native.end_capture()
                except Exception:  # noqa: BLE001 - the capture is already invalid; the first error matters
                    pass
                raise DeviceError(f"{self.device_id}: CUDA graph capture of the JIT steps failed:"
                                  f" {type(exc).__name__}: {exc}", device=self.device_id) from exc
            try:
                graph = native.end_capture()
            except Exception as exc:  # CUDARuntimeError: invalidated by an unsafe call
                raise DeviceError(f"{self.device_id}: CUDA graph capture of the JIT steps was invalidated:"
                                  f" {exc}", device=self.device_id) from exc
        cp_device, translate = self.cp_device, self.translate

        def launch() -> None:
            try:
                with cp_device:
                    graph.launch(native)
            except DsrtError:
                raise
            except Exception as exc:  # vendor errors become DsrtError
                raise translate(exc, "launching a captured CUDA graph") from exc

        return launch
