/* The hit path of Device.launch in C (dsrt/device.py installs it as Device.launch).
 *
 * A launch whose signature is cached, on a device with a pool, an implementation in its table, no
 * tracer and no launch observer runs here: signature key, cache lookup, output allocation (through
 * the pool's Python allocate), the Array built from its slots, IN_USE registration, the pool's
 * lock-free hold, the implementation call. Everything else (a first launch, validation errors,
 * tracing, the JIT's capture, a spilled operand's fetch, a pool that must take its lock) is handed
 * to the Python launch unchanged, which is the reference: this file only skips interpreter work and
 * never decides anything the Python path would decide differently.
 *
 * The module imports nothing: dsrt.device passes every object it needs to configure().
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include "_cslots.h"
#include <string.h>

/* Objects handed over by configure(); strong references kept for the life of the process. */
static PyTypeObject *array_type;   /* dsrt.array.Array (exact type only) */
static PyObject *in_use;           /* dsrt.memory.in_use.IN_USE (a dict) */
static PyObject *use_clock;        /* dsrt.memory.base._use_clock (itertools.count) */
static PyObject *device_globals;   /* dsrt.device.__dict__ (for launch_observer) */
static PyObject *slow_launch;      /* the Python Device.launch */
static PyObject *launch_failed;    /* f(device, kernel, inputs, exc) -> raises the translated error */
static PyObject *keyed_types;      /* frozenset of parameter types keyed by value */
static PyObject *kernel_specs;     /* dsrt.kernels.KERNELS (name -> KernelSpec), read live */

/* Byte offsets of slots, read from the classes' member descriptors. */
static Py_ssize_t a_device, a_shape, a_dtype, a_strides, a_allocation, a_byte_offset, a_native, a_native_gen;
static Py_ssize_t al_handle, al_last_use, al_offset, al_nbytes, al_pool_data, al_generation, b_host_view;
static PyTypeObject *allocation_type, *block_type, *caching_pool_type;
static Py_ssize_t cp_moving;  /* offset of CachingPool's `_moving` slot */
static int caching_lock_free;  /* CachingPool.lock_free_hold (a class-level constant) */

static PyObject *s_signatures, *s_pool, *s_default_stream, *s_tracer, *s_launch_observer, *s_allocate, *s_hold,
    *s_lock_free_hold, *s_moving, *s_out, *s_stream, *small_zero, *small_minus_one;

#define SLOT DSRT_SLOT

/* Replace an object slot's value (steals `value`). */
static inline void set_slot(PyObject *obj, Py_ssize_t off, PyObject *value) {
    PyObject *old = SLOT(obj, off);
    SLOT(obj, off) = value;
    Py_XDECREF(old);
}

static inline PyObject *dict_get(PyObject *dict, PyObject *key) {  /* borrowed or NULL (no error set) */
    return PyDict_GetItemWithError(dict, key);
}

static PyObject *launch(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames);
static PyMethodDef launch_def = {"launch", NULL, METH_FASTCALL | METH_KEYWORDS, NULL};

static PyObject *configure(PyObject *mod, PyObject *args) {
    PyObject *arr, *alloc, *device_type, *block, *caching;
    const char *doc;
    if (array_type != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "dsrt._fastlaunch is configured once per process");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "O!O!O!O!O!O!OO!OOO!O!s", &PyType_Type, &device_type, &PyType_Type, &arr, &PyType_Type,
                          &alloc, &PyType_Type, &block, &PyType_Type, &caching, &PyDict_Type, &in_use, &use_clock,
                          &PyDict_Type, &device_globals, &slow_launch, &launch_failed, &PyFrozenSet_Type, &keyed_types,
                          &PyDict_Type, &kernel_specs, &doc))
        return NULL;
    PyObject *lock_free = PyObject_GetAttrString(caching, "lock_free_hold");
    if (lock_free == NULL) return NULL;
    caching_lock_free = PyObject_IsTrue(lock_free);
    Py_DECREF(lock_free);
    if (caching_lock_free < 0 || dsrt_slot_offset((PyTypeObject *)caching, "_moving", &cp_moving)) return NULL;
    caching_pool_type = (PyTypeObject *)caching;
    Py_INCREF(caching);
    block_type = (PyTypeObject *)block;
    Py_INCREF(block);
    array_type = (PyTypeObject *)arr;
    allocation_type = (PyTypeObject *)alloc;
    Py_INCREF(arr); Py_INCREF(alloc); Py_INCREF(in_use); Py_INCREF(use_clock); Py_INCREF(device_globals);
    Py_INCREF(slow_launch); Py_INCREF(launch_failed); Py_INCREF(keyed_types); Py_INCREF(kernel_specs);
    if (dsrt_slot_offset(array_type, "device", &a_device) || dsrt_slot_offset(array_type, "shape", &a_shape) ||
        dsrt_slot_offset(array_type, "dtype", &a_dtype) || dsrt_slot_offset(array_type, "strides", &a_strides) ||
        dsrt_slot_offset(array_type, "allocation", &a_allocation) || dsrt_slot_offset(array_type, "byte_offset", &a_byte_offset) ||
        dsrt_slot_offset(array_type, "native", &a_native) || dsrt_slot_offset(array_type, "native_generation", &a_native_gen) ||
        dsrt_slot_offset(allocation_type, "handle", &al_handle) || dsrt_slot_offset(allocation_type, "last_use", &al_last_use) ||
        dsrt_slot_offset(allocation_type, "offset", &al_offset) || dsrt_slot_offset(allocation_type, "pool_data", &al_pool_data) ||
        dsrt_slot_offset(allocation_type, "generation", &al_generation) || dsrt_slot_offset(allocation_type, "nbytes", &al_nbytes) ||
        dsrt_slot_offset(block_type, "host_view", &b_host_view))
        return NULL;
    char *doc_copy = PyMem_RawMalloc(strlen(doc) + 1);  /* kept: a method definition outlives this call */
    if (doc_copy == NULL) return PyErr_NoMemory();
    strcpy(doc_copy, doc);
    launch_def.ml_meth = (PyCFunction)(void (*)(void))launch;
    launch_def.ml_doc = doc_copy;
    return PyDescr_NewMethod((PyTypeObject *)device_type, &launch_def);
}

/* The next tick of the shared use clock (new reference), or NULL with an error set. */
static inline PyObject *next_tick(void) {
    PyObject *tick = PyIter_Next(use_clock);
    if (tick == NULL && !PyErr_Occurred()) PyErr_SetString(PyExc_RuntimeError, "dsrt: the use clock stopped");
    return tick;
}

/* Stamp `alloc.last_use` with `tick` (borrowed: items used together share one tick). */
static inline void stamp(PyObject *alloc, PyObject *tick) {
    set_slot(alloc, al_last_use, Py_NewRef(tick));
}

/* The cache key of a launch, exactly as the Python launch builds it (the cache is shared); NULL
   with no error set where the Python path must decide (a missing slot, a parameter type not keyed). */
static PyObject *signature(PyObject *kernel, PyObject *const *inputs, Py_ssize_t n, PyObject *params) {
    PyObject *sig;
    if (n == 1 || n == 2) {
        sig = PyTuple_New(1 + 3 * n);
        if (sig == NULL) return NULL;
        PyTuple_SET_ITEM(sig, 0, Py_NewRef(kernel));
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *x = inputs[i], *dev = SLOT(x, a_device), *shape = SLOT(x, a_shape), *dtype = SLOT(x, a_dtype);
            if (dev == NULL || shape == NULL || dtype == NULL) { Py_DECREF(sig); return NULL; }
            PyTuple_SET_ITEM(sig, 1 + 3 * i, Py_NewRef(dev));
            PyTuple_SET_ITEM(sig, 2 + 3 * i, Py_NewRef(shape));
            PyTuple_SET_ITEM(sig, 3 + 3 * i, Py_NewRef(dtype));
        }
    } else {
        sig = PyTuple_New(2 + n);
        if (sig == NULL) return NULL;
        PyTuple_SET_ITEM(sig, 0, Py_NewRef(kernel));
        PyObject *count = PyLong_FromSsize_t(n);
        if (count == NULL) { Py_DECREF(sig); return NULL; }
        PyTuple_SET_ITEM(sig, 1, count);
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *x = inputs[i], *dev = SLOT(x, a_device), *shape = SLOT(x, a_shape), *dtype = SLOT(x, a_dtype);
            if (dev == NULL || shape == NULL || dtype == NULL) { Py_DECREF(sig); return NULL; }
            PyObject *t = PyTuple_Pack(3, dev, shape, dtype);
            if (t == NULL) { Py_DECREF(sig); return NULL; }
            PyTuple_SET_ITEM(sig, 2 + i, t);
        }
    }
    if (params == NULL) return sig;
    /* _param_key: (sig, (name, type, value), ...) */
    Py_ssize_t pos = 0, j = 1;
    PyObject *name, *value, *full = PyTuple_New(1 + PyDict_GET_SIZE(params));
    if (full == NULL) { Py_DECREF(sig); return NULL; }
    PyTuple_SET_ITEM(full, 0, sig);
    while (PyDict_Next(params, &pos, &name, &value)) {
        PyObject *t = (PyObject *)Py_TYPE(value);
        int keyed = PySet_Contains(keyed_types, t);
        if (keyed <= 0) { Py_DECREF(full); return NULL; }  /* keyed < 0 leaves its error set */
        PyObject *item = PyTuple_Pack(3, name, t, value);
        if (item == NULL) { Py_DECREF(full); return NULL; }
        PyTuple_SET_ITEM(full, j++, item);
    }
    return full;
}

/* 0 where allocations `x` and `y` (distinct) certainly hold no common byte, else 1 (or -1 with an
   error set): dsrt.array.may_share_memory at allocation level, whose caller, the Python launch,
   decides what a possible overlap needs. */
static int allocations_may_overlap(PyObject *x, PyObject *y) {
    PyObject *hx = SLOT(x, al_handle), *hy = SLOT(y, al_handle);
    if (hx == NULL || hy == NULL) return 1;
    if (hx != hy) {
        if (!PyLong_CheckExact(hx) || !PyLong_CheckExact(hy)) return 0;
        int same = PyObject_RichCompareBool(hx, hy, Py_EQ);
        if (same <= 0) return same;
    }
    PyObject *ox = SLOT(x, al_offset), *nx = SLOT(x, al_nbytes), *oy = SLOT(y, al_offset), *ny = SLOT(y, al_nbytes);
    if (ox == NULL || nx == NULL || oy == NULL || ny == NULL) return 1;
    Py_ssize_t a = PyLong_AsSsize_t(ox), an = PyLong_AsSsize_t(nx), b = PyLong_AsSsize_t(oy), bn = PyLong_AsSsize_t(ny);
    if ((a == -1 || an == -1 || b == -1 || bn == -1) && PyErr_Occurred()) return -1;
    return a < b + bn && b < a + an;
}

/* 1 where `x` is exactly `out`'s elements (one allocation, same byte offset, shape, strides and
   dtype) and `kernel` is elementwise, so the kernel may read one while writing the other; else 0. */
static int exact_elementwise_alias(PyObject *kernel, PyObject *x, PyObject *out) {
    static const Py_ssize_t *fields[] = {&a_byte_offset, &a_shape, &a_strides, &a_dtype};
    for (int i = 0; i < 4; i++) {
        PyObject *p = SLOT(x, *fields[i]), *q = SLOT(out, *fields[i]);
        if (p == NULL || q == NULL) return 0;
        if (p != q) {
            int same = PyObject_RichCompareBool(p, q, Py_EQ);
            if (same <= 0) { PyErr_Clear(); return 0; }
        }
    }
    PyObject *spec = PyDict_GetItemWithError(kernel_specs, kernel);  /* borrowed */
    if (spec == NULL) { PyErr_Clear(); return 0; }
    PyObject *flag = PyObject_GetAttrString(spec, "elementwise");
    if (flag == NULL) { PyErr_Clear(); return 0; }
    int yes = flag == Py_True;
    Py_DECREF(flag);
    return yes;
}

/* Settle `held` for the kernel: CachingPool.hold's lock-free barrier (read _moving after the
   listing; stamp last_use), or the pool's own hold where an operand is spilled or a move is under
   way. 0 on success. */
static int hold(PyObject *pool, PyObject *held) {
    int fast = 0;
    if (Py_TYPE(pool) == caching_pool_type) {  /* its barrier state is a slot, its lock_free_hold a constant */
        fast = caching_lock_free && SLOT(pool, cp_moving) == Py_False;
        goto listed;
    }
    PyObject *pool_dict = PyObject_GenericGetDict(pool, NULL);
    if (pool_dict == NULL) {
        PyErr_Clear();
    } else {
        PyObject *lock_free = dict_get(pool_dict, s_lock_free_hold);
        PyObject *moving = lock_free == Py_True ? dict_get(pool_dict, s_moving) : NULL;
        fast = moving == Py_False;
        Py_DECREF(pool_dict);
        if (PyErr_Occurred()) return -1;
    }
listed:
    if (fast) {
        Py_ssize_t m = PyTuple_GET_SIZE(held);
        PyObject *tick = next_tick();
        if (tick == NULL) return -1;
        for (Py_ssize_t i = 0; i < m; i++) {
            PyObject *alloc = SLOT(PyTuple_GET_ITEM(held, i), a_allocation);
            if (alloc == NULL || Py_TYPE(alloc) != allocation_type || SLOT(alloc, al_handle) == NULL ||
                SLOT(alloc, al_handle) == Py_None) {
                fast = 0;
                break;
            }
            stamp(alloc, tick);
        }
        Py_DECREF(tick);
    }
    if (!fast) {
        PyObject *hargs[2] = {pool, held};
        PyObject *r = PyObject_VectorcallMethod(s_hold, hargs, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
        if (r == NULL) return -1;
        Py_DECREF(r);
    }
    return 0;
}

/* The host view cached on the pool block under `alloc` if it describes exactly the entry's layout
   at the allocation's start (dsrt.memory.hostmem.host_view's block cache, checked the same way:
   handle, offset, dtype, shape, strides); borrowed, or NULL. Only host_view fills that cache, so
   blocks of devices whose memory is not host memory never have one. */
static PyObject *cached_block_view(PyObject *alloc, PyObject *entry) {
    PyObject *block = SLOT(alloc, al_pool_data);
    if (block == NULL || Py_TYPE(block) != block_type) return NULL;
    PyObject *c = SLOT(block, b_host_view);
    if (c == NULL || !PyTuple_CheckExact(c) || PyTuple_GET_SIZE(c) != 6) return NULL;
    if (PyTuple_GET_ITEM(c, 0) != SLOT(alloc, al_handle) || PyTuple_GET_ITEM(c, 2) != PyTuple_GET_ITEM(entry, 1))
        return NULL;
    PyObject *pairs[3][2] = {{PyTuple_GET_ITEM(c, 1), SLOT(alloc, al_offset)},
                             {PyTuple_GET_ITEM(c, 3), PyTuple_GET_ITEM(entry, 0)},
                             {PyTuple_GET_ITEM(c, 4), PyTuple_GET_ITEM(entry, 4)}};
    for (int i = 0; i < 3; i++) {
        if (pairs[i][1] == NULL) return NULL;
        int same = PyObject_RichCompareBool(pairs[i][0], pairs[i][1], Py_EQ);
        if (same <= 0) { PyErr_Clear(); return NULL; }
    }
    return PyTuple_GET_ITEM(c, 5);
}

/* A fresh output Array of the entry's layout over `alloc` (stolen), built as dsrt.array.fresh_array
   does, with its native view taken from the block's cache where that describes it. */
static PyObject *fresh_array(PyObject *device, PyObject *entry, PyObject *alloc) {
    PyObject *a = array_type->tp_alloc(array_type, 0);
    if (a == NULL) { Py_DECREF(alloc); return NULL; }
    PyObject *view = cached_block_view(alloc, entry), *gen = SLOT(alloc, al_generation);
    SLOT(a, a_device) = Py_NewRef(device);
    SLOT(a, a_shape) = Py_NewRef(PyTuple_GET_ITEM(entry, 0));
    SLOT(a, a_dtype) = Py_NewRef(PyTuple_GET_ITEM(entry, 1));
    SLOT(a, a_strides) = Py_NewRef(PyTuple_GET_ITEM(entry, 4));
    SLOT(a, a_allocation) = alloc;
    SLOT(a, a_byte_offset) = Py_NewRef(small_zero);
    if (view != NULL && gen != NULL) {
        SLOT(a, a_native) = Py_NewRef(view);
        SLOT(a, a_native_gen) = Py_NewRef(gen);
    } else {
        SLOT(a, a_native) = Py_NewRef(Py_None);
        SLOT(a, a_native_gen) = Py_NewRef(small_minus_one);
    }
    return a;
}

/* Run the kernel with `held` listed in IN_USE; on an error, unlist and raise what the Python launch
   raises (launch_failed translates it). Returns 0 on success. */
static int run_listed(PyObject *self, PyObject *kernel, PyObject *pool, PyObject *impl, PyObject *held,
                      Py_ssize_t n, PyObject *out, PyObject *bound, PyObject *s) {
    PyObject *key = PyLong_FromVoidPtr(held), *inputs = NULL;
    if (key == NULL) return -1;
    if (PyDict_SetItem(in_use, key, held) < 0) { Py_DECREF(key); return -1; }
    int rc = -1;
    inputs = PyTuple_GetSlice(held, 0, n);
    if (inputs != NULL && hold(pool, held) == 0) {
        PyObject *iargs[4] = {inputs, out, bound, s};
        PyObject *r = PyObject_Vectorcall(impl, iargs, 4, NULL);
        if (r != NULL) { Py_DECREF(r); rc = 0; }
    }
    PyObject *type = NULL, *value = NULL, *tb = NULL;
    if (rc < 0) PyErr_Fetch(&type, &value, &tb);
    if (PyDict_DelItem(in_use, key) < 0) PyErr_Clear();  /* cannot fail: the key was set above */
    Py_DECREF(key);
    if (rc < 0) {
        PyErr_NormalizeException(&type, &value, &tb);
        if (tb != NULL) PyException_SetTraceback(value, tb);
        if (inputs != NULL && value != NULL) {
            PyObject *fargs[4] = {self, kernel, inputs, value};
            PyObject *r = PyObject_Vectorcall(launch_failed, fargs, 4, NULL);  /* raises */
            if (r != NULL) { Py_DECREF(r); PyErr_Restore(type, value, tb); type = value = tb = NULL; }
        } else {
            PyErr_Restore(type, value, tb);
            type = value = tb = NULL;
        }
        Py_XDECREF(type); Py_XDECREF(value); Py_XDECREF(tb);
    }
    Py_XDECREF(inputs);
    return rc;
}

/* Device.launch(kernel, *inputs, out=None, stream=None, **params), as a method descriptor of Device. */
static PyObject *launch(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0, n = nargs - 1;
    if (n < 1 || array_type == NULL) goto python;
    PyObject *kernel = args[0];
    PyObject *const *inputs = args + 1;
    for (Py_ssize_t i = 0; i < n; i++)
        if (Py_TYPE(inputs[i]) != array_type) goto python;

    PyObject *out = NULL, *stream = NULL, *params = NULL, *sig = NULL, *dict = NULL, *entry = NULL, *pool = NULL;
    PyObject *bound = NULL, *s = NULL, *held = NULL, *result = NULL;
    int fallback = 0;
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, k), *value = args[nargs + k];
        if (name == s_out || PyUnicode_Compare(name, s_out) == 0) {
            out = value;
        } else if (name == s_stream || PyUnicode_Compare(name, s_stream) == 0) {
            stream = value;
        } else {
            if (params == NULL && (params = PyDict_New()) == NULL) goto done;
            if (PyDict_SetItem(params, name, value) < 0) goto done;
        }
    }
    if (out == Py_None) out = NULL;
    if (stream == Py_None) stream = NULL;

    fallback = 1;
    sig = signature(kernel, inputs, n, params);
    if (sig == NULL) goto done;
    dict = PyObject_GenericGetDict(self, NULL);
    if (dict == NULL) goto done;
    PyObject *sigs = dict_get(dict, s_signatures);
    if (sigs == NULL || !PyDict_CheckExact(sigs)) goto done;
    entry = Py_XNewRef(dict_get(sigs, sig));
    if (entry == NULL || !PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) != 6) goto done;
    PyObject *impl = PyTuple_GET_ITEM(entry, 5);
    PyObject *tracer = dict_get(dict, s_tracer);
    PyObject *observer = dict_get(device_globals, s_launch_observer);
    pool = Py_XNewRef(dict_get(dict, s_pool));
    s = Py_XNewRef(stream != NULL ? stream : dict_get(dict, s_default_stream));
    if (impl == Py_None || PyTuple_GET_ITEM(entry, 0) == Py_None || (tracer != NULL && tracer != Py_None) ||
        (observer != NULL && observer != Py_None) || pool == NULL || pool == Py_None || s == NULL)
        goto done;
    if (out != NULL) {  /* the Python launch raises the ShapeError of a mismatch */
        if (Py_TYPE(out) != array_type || SLOT(out, a_device) != self || SLOT(out, a_shape) == NULL ||
            SLOT(out, a_dtype) == NULL)
            goto done;
        int same = PyObject_RichCompareBool(SLOT(out, a_shape), PyTuple_GET_ITEM(entry, 0), Py_EQ);
        if (same > 0) same = PyObject_RichCompareBool(SLOT(out, a_dtype), PyTuple_GET_ITEM(entry, 1), Py_EQ);
        if (same <= 0) goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *alloc = SLOT(inputs[i], a_allocation);
        if (alloc == NULL || Py_TYPE(alloc) != allocation_type) goto done;
    }
    if (out != NULL) {  /* out sharing memory with an input: the Python launch decides (exact, or a temporary) */
        PyObject *oa = SLOT(out, a_allocation);
        if (oa == NULL || Py_TYPE(oa) != allocation_type) goto done;
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *ia = SLOT(inputs[i], a_allocation);
            if (ia == oa) {
                if (!exact_elementwise_alias(kernel, inputs[i], out)) goto done;
                continue;
            }
            int overlap = allocations_may_overlap(ia, oa);
            if (overlap < 0) PyErr_Clear();
            if (overlap != 0) goto done;
        }
    }
    fallback = 0;  /* from here on the launch is ours: errors are raised, not handed over */

    if (params != NULL) {  /* {**entry[2], **params}: the caller's own values are passed */
        bound = PyDict_Copy(PyTuple_GET_ITEM(entry, 2));
        if (bound == NULL || PyDict_Update(bound, params) < 0) goto done;
    } else {
        bound = Py_NewRef(PyTuple_GET_ITEM(entry, 2));
    }
    if (out == NULL) {
        PyObject *tick = next_tick();  /* most recently used: allocating spills others first */
        if (tick == NULL) goto done;
        for (Py_ssize_t i = 0; i < n; i++) stamp(SLOT(inputs[i], a_allocation), tick);
        Py_DECREF(tick);
        PyObject *margs[3] = {pool, PyTuple_GET_ITEM(entry, 3), s};
        PyObject *alloc = PyObject_VectorcallMethod(s_allocate, margs, 3 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
        if (alloc == NULL) goto done;
        out = fresh_array(self, entry, alloc);
        if (out == NULL) goto done;
    } else {
        Py_INCREF(out);
    }
    held = PyTuple_New(n + 1);
    if (held == NULL) { Py_DECREF(out); goto done; }
    for (Py_ssize_t i = 0; i < n; i++) PyTuple_SET_ITEM(held, i, Py_NewRef(inputs[i]));
    PyTuple_SET_ITEM(held, n, Py_NewRef(out));
    if (run_listed(self, kernel, pool, impl, held, n, out, bound, s) == 0)
        result = Py_NewRef(out);
    Py_DECREF(out);

done:
    if (fallback && PyErr_Occurred()) {
        /* an unhashable key, an object that is no array: the Python path decides, as it does */
        if (PyErr_ExceptionMatches(PyExc_TypeError) || PyErr_ExceptionMatches(PyExc_AttributeError)) PyErr_Clear();
        else fallback = 0;
    }
    Py_XDECREF(held); Py_XDECREF(s); Py_XDECREF(bound); Py_XDECREF(pool); Py_XDECREF(entry);
    Py_XDECREF(dict); Py_XDECREF(sig); Py_XDECREF(params);
    if (!fallback) return result;
python:
    return dsrt_call_with_first(slow_launch, self, args, nargs, kwnames);
}

static PyMethodDef module_methods[] = {
    {"configure", configure, METH_VARARGS,
     "configure(Device, Array, Allocation, Block, CachingPool, IN_USE, use_clock, dsrt.device globals, python_launch,"
     " launch_failed,"
     " keyed_types, doc) -> the method descriptor to install as Device.launch"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "dsrt._fastlaunch", "The hit path of Device.launch in C (see dsrt.device).", -1,
    module_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fastlaunch(void) {
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL) return NULL;
#define INTERN(var, text) if ((var = PyUnicode_InternFromString(text)) == NULL) return NULL
    INTERN(s_signatures, "_signatures");
    INTERN(s_pool, "_pool");
    INTERN(s_default_stream, "default_stream");
    INTERN(s_tracer, "tracer");
    INTERN(s_launch_observer, "launch_observer");
    INTERN(s_allocate, "allocate");
    INTERN(s_hold, "hold");
    INTERN(s_lock_free_hold, "lock_free_hold");
    INTERN(s_moving, "_moving");
    INTERN(s_out, "out");
    INTERN(s_stream, "stream");
#undef INTERN
    small_zero = PyLong_FromLong(0);
    small_minus_one = PyLong_FromLong(-1);
    if (small_zero == NULL || small_minus_one == NULL) return NULL;
    return m;
}
