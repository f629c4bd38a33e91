/*
 * dsrt_plugin.h - the C ABI of a dsrt backend (ABI 1.0).
 *
 * A backend library exports one function,
 *
 *     const DsrtPluginApi* dsrt_plugin_get_api(void);
 *
 * that returns a table of function pointers. The table is owned by the library and stays valid
 * until the process exits. dsrt (the "core") loads the library with dlopen, calls
 * dsrt_plugin_get_api once, checks the table's struct_size and ABI version, then calls the
 * entries. See docs/c-abi.md for the threading, ownership and versioning rules.
 *
 * Conventions:
 *   - Every fallible entry returns DsrtError*: NULL on success, else an error object that the
 *     library allocated and owns. The core reads it with error_code()/error_message() and hands
 *     it back with error_destroy() exactly once.
 *   - Sizes and offsets are bytes. Times are seconds. Devices are numbered 0..count-1.
 *   - Memory is named by DsrtHandle values the library chooses (an index, a key...): the core
 *     never dereferences them, and never passes 0 (0 is "no handle").
 *   - DsrtStream 0 is the device's default stream; other streams come from stream_create.
 *   - Strings the library returns are NUL-terminated UTF-8 and stay valid as stated per entry.
 *   - An entry may be NULL where marked optional; the core then does without it.
 *
 * Versions: entries are only ever appended. A library built against ABI 1.x sets struct_size to
 * sizeof(DsrtPluginApi) of its header; a core reads entries that lie within struct_size and
 * treats the rest as NULL, and ignores entries past the end of its own table. A different
 * abi_major is refused.
 */
#ifndef DSRT_PLUGIN_H
#define DSRT_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* BEGIN CDEF: the block up to END CDEF is read by the core's cffi loader; plain declarations only. */

#define DSRT_ABI_MAJOR 1
#define DSRT_ABI_MINOR 0

/* Error codes (DsrtError's code). */
#define DSRT_ERR_UNKNOWN 1          /* anything else */
#define DSRT_ERR_INVALID_ARGUMENT 2 /* a bad handle, offset, shape, dtype or parameter */
#define DSRT_ERR_OUT_OF_MEMORY 3    /* the device cannot hold the allocation */
#define DSRT_ERR_UNSUPPORTED 4      /* a kernel, dtype or operation this library does not do */
#define DSRT_ERR_DEVICE_LOST 5      /* the device stopped answering */
#define DSRT_ERR_UNAVAILABLE 6      /* no usable device here (initialize only) */
#define DSRT_ERR_INTERNAL 7         /* a bug or a broken invariant in the library */

/* DsrtDeviceDesc.flags */
#define DSRT_DEVICE_SYNCHRONOUS 1   /* every entry has finished its work when it returns */

/* Parameter kinds (DsrtParam.kind). */
#define DSRT_PARAM_NONE 0           /* Python None (e.g. reduce_sum's axis=None) */
#define DSRT_PARAM_BOOL 1           /* value in i: 0 or 1 */
#define DSRT_PARAM_INT 2            /* value in i */
#define DSRT_PARAM_FLOAT 3          /* value in f */
#define DSRT_PARAM_STRING 4         /* value in s (a dtype name...) */
#define DSRT_PARAM_INTS 5           /* ints[0..count-1] (a shape...) */

typedef struct DsrtError DsrtError; /* opaque; defined by the library */
typedef uint64_t DsrtHandle;
typedef uint64_t DsrtStream;
typedef uint64_t DsrtEvent;

/* One kernel a device runs, and the dsrt dtype names it runs it for ("float32", "float16"...). */
typedef struct DsrtKernelClaim {
    const char* name;
    const char* const* dtypes;
    size_t num_dtypes;
} DsrtKernelClaim;

/* A device's description. Owned by the library, valid until shutdown. Grows like the API table:
 * the core reads fields within struct_size only. */
typedef struct DsrtDeviceDesc {
    size_t struct_size;
    const char* name;
    const char* vendor;
    uint64_t memory_bytes;          /* capacity the core may allocate, bytes */
    uint32_t compute_units;
    uint32_t flags;                 /* DSRT_DEVICE_* bits */
    const char* const* dtypes;      /* dtype names the device can hold */
    size_t num_dtypes;
    const DsrtKernelClaim* kernels;
    size_t num_kernels;
    double peak_flops;              /* estimated float32 operations per second, 0 if unknown */
    double memory_bandwidth;        /* estimated bytes per second, 0 if unknown */
} DsrtDeviceDesc;

/* One array operand of a launch. shape and strides (bytes) have ndim entries; the pointers are
 * valid for the duration of the launch call only. */
typedef struct DsrtOperand {
    DsrtHandle handle;
    uint64_t offset;                /* bytes from the start of handle's memory to element 0 */
    int32_t ndim;
    const int64_t* shape;
    const int64_t* strides;         /* bytes; C-contiguous unless the library claims otherwise */
    const char* dtype;              /* dsrt dtype name */
} DsrtOperand;

/* One kernel parameter (gemm's alpha, reduce_sum's axis...); valid for the launch call only. */
typedef struct DsrtParam {
    const char* name;
    int32_t kind;                   /* DSRT_PARAM_* */
    int64_t i;
    double f;
    const char* s;
    const int64_t* ints;
    size_t count;
} DsrtParam;

typedef struct DsrtPluginApi {
    size_t struct_size;             /* sizeof(DsrtPluginApi) as the library was built */
    uint32_t abi_major;             /* DSRT_ABI_MAJOR as the library was built */
    uint32_t abi_minor;             /* DSRT_ABI_MINOR as the library was built */

    /* Errors: never NULL. The message stays valid until error_destroy(err). */
    int32_t (*error_code)(const DsrtError* err);
    const char* (*error_message)(const DsrtError* err);
    void (*error_destroy)(DsrtError* err);

    /* Lifecycle. initialize (optional) is called once, before any other entry except the error
     * entries; an error with DSRT_ERR_UNAVAILABLE means "no usable device on this machine".
     * shutdown (optional) is called at most once, at process exit; nothing is called after it. */
    DsrtError* (*initialize)(void);
    void (*shutdown)(void);

    /* Devices. */
    DsrtError* (*device_count)(int32_t* count);
    DsrtError* (*device_describe)(int32_t device, const DsrtDeviceDesc** desc);

    /* Memory. allocate may be asked for 0 bytes and must return a handle then too. */
    DsrtError* (*allocate)(int32_t device, uint64_t nbytes, DsrtHandle* handle);
    DsrtError* (*free)(int32_t device, DsrtHandle handle);
    /* src may be reused by the core as soon as copy_h2d returns. */
    DsrtError* (*copy_h2d)(int32_t device, DsrtStream stream, DsrtHandle dst, uint64_t dst_offset,
                           const void* src, uint64_t nbytes);
    /* dst stays valid until the stream reaches this point (the core synchronizes before reading). */
    DsrtError* (*copy_d2h)(int32_t device, DsrtStream stream, void* dst, DsrtHandle src,
                           uint64_t src_offset, uint64_t nbytes);
    /* Optional: a copy within one device (src_device == device) or between two devices of this
     * library. DSRT_ERR_UNSUPPORTED makes the core stage the bytes through host memory. */
    DsrtError* (*copy_d2d)(int32_t device, DsrtStream stream, DsrtHandle dst, uint64_t dst_offset,
                           int32_t src_device, DsrtHandle src, uint64_t src_offset, uint64_t nbytes);
    /* Block until all work queued on stream has finished. Optional for synchronous devices. */
    DsrtError* (*synchronize)(int32_t device, DsrtStream stream);

    /* Kernels: run kernel `name` (a dsrt kernel name) on inputs into the preallocated output.
     * The core has already checked arity, shapes, dtypes and the device's claim. */
    DsrtError* (*launch)(int32_t device, DsrtStream stream, const char* kernel,
                         const DsrtOperand* inputs, size_t num_inputs, const DsrtOperand* output,
                         const DsrtParam* params, size_t num_params);

    /* Streams and events: optional, all or none. Events are recorded on a stream and destroyed
     * by the core once it no longer needs them. */
    DsrtError* (*stream_create)(int32_t device, DsrtStream* stream);
    DsrtError* (*stream_destroy)(int32_t device, DsrtStream stream);
    DsrtError* (*event_record)(int32_t device, DsrtStream stream, DsrtEvent* event);
    DsrtError* (*event_query)(int32_t device, DsrtEvent event, int32_t* done);
    DsrtError* (*event_synchronize)(int32_t device, DsrtEvent event);
    DsrtError* (*event_elapsed)(int32_t device, DsrtEvent start, DsrtEvent end, double* seconds);
    DsrtError* (*event_destroy)(int32_t device, DsrtEvent event);
} DsrtPluginApi;

/* The one symbol a backend library exports. */
const DsrtPluginApi* dsrt_plugin_get_api(void);

/* END CDEF */

#ifdef __cplusplus
}
#endif

#endif /* DSRT_PLUGIN_H */
