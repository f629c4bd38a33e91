/* The quick-cache paths of CachingPool in C (dsrt/memory/pool.py installs them; see there).
 *
 * allocate: a request of at most QUICK_MAX bytes whose rounded size has a block waiting in the quick
 * cache pops it, counts it and wraps it in an Allocation, under the pool's lock, exactly as the
 * Python allocate does; anything else (a miss, queued frees to drain, a large request, an odd
 * argument) calls the Python allocate, which is the reference.
 * free: the quick-cache keep of the pool's _free_locked (below quick_blocks waiting, so it never merges
 * an older block back), under the same lock; every other free is handed to _free_locked itself.
 * Allocation.__del__: gives the allocation back through pool.free, swallowing errors as the Python
 * finaliser does.
 *
 * The module imports nothing: dsrt.memory.pool passes every object it needs to configure().
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include "../_cslots.h"
#include <string.h>

static PyTypeObject *allocation_type, *block_type;
static PyObject *use_clock, *python_allocate;
static Py_ssize_t quick_max, quick_age, alignment;

/* Slot offsets. */
static Py_ssize_t b_alloc_ref, b_born, b_free, b_requested, b_segment, b_size, b_offset;
static Py_ssize_t s_handle_off;
static Py_ssize_t al_device, al_exported, al_generation, al_handle, al_last_use, al_nbytes, al_offset, al_pool,
    al_pool_data, al_stream;

static PyObject *k_lock, *k_deferred, *k_quick, *k_quick_serial, *k_quick_blocks, *k_sync,
    *k_counters, *k_device, *k_default_stream, *k_acquire, *k_release, *k_append, *k_free_locked,
    *k_free, *k_stream, *small_zero;

#define SLOT DSRT_SLOT

/* The pool's counters as C integers (the twin of dsrt.memory.stats.Counters, whose __slots__ it
   must match: configure() checks). Python reads and writes them as int attributes; the paths below
   update them in place. */
enum {
    K_ALLOCATED,
    K_CACHE_MISSES,
    K_COMPACTIONS,
    K_FETCHES,
    K_IDLE_TRIMS,
    K_MOVED_BYTES,
    K_MOVES,
    K_NUM_ALLOCS,
    K_NUM_FREES,
    K_OOMS,
    K_PEAK_ALLOCATED,
    K_PEAK_REQUESTED,
    K_PEAK_RESERVED,
    K_QUICK_BYTES,
    K_QUICK_COUNT,
    K_REQUESTED,
    K_RESERVED,
    K_RETRIES,
    K_SEGMENT_ALLOCS,
    K_SEGMENT_FREES,
    K_SPILLED_BYTES_TOTAL,
    K_SPILLED_LIVE,
    K_SPILLS,
    K_COUNT
};

typedef struct {
    PyObject_HEAD
    long long f[K_COUNT];
} CountersObject;

static PyMemberDef counters_members[] = {
    {"allocated", T_LONGLONG, offsetof(CountersObject, f) + K_ALLOCATED * sizeof(long long), 0, NULL},
    {"cache_misses", T_LONGLONG, offsetof(CountersObject, f) + K_CACHE_MISSES * sizeof(long long), 0, NULL},
    {"compactions", T_LONGLONG, offsetof(CountersObject, f) + K_COMPACTIONS * sizeof(long long), 0, NULL},
    {"fetches", T_LONGLONG, offsetof(CountersObject, f) + K_FETCHES * sizeof(long long), 0, NULL},
    {"idle_trims", T_LONGLONG, offsetof(CountersObject, f) + K_IDLE_TRIMS * sizeof(long long), 0, NULL},
    {"moved_bytes", T_LONGLONG, offsetof(CountersObject, f) + K_MOVED_BYTES * sizeof(long long), 0, NULL},
    {"moves", T_LONGLONG, offsetof(CountersObject, f) + K_MOVES * sizeof(long long), 0, NULL},
    {"num_allocs", T_LONGLONG, offsetof(CountersObject, f) + K_NUM_ALLOCS * sizeof(long long), 0, NULL},
    {"num_frees", T_LONGLONG, offsetof(CountersObject, f) + K_NUM_FREES * sizeof(long long), 0, NULL},
    {"ooms", T_LONGLONG, offsetof(CountersObject, f) + K_OOMS * sizeof(long long), 0, NULL},
    {"peak_allocated", T_LONGLONG, offsetof(CountersObject, f) + K_PEAK_ALLOCATED * sizeof(long long), 0, NULL},
    {"peak_requested", T_LONGLONG, offsetof(CountersObject, f) + K_PEAK_REQUESTED * sizeof(long long), 0, NULL},
    {"peak_reserved", T_LONGLONG, offsetof(CountersObject, f) + K_PEAK_RESERVED * sizeof(long long), 0, NULL},
    {"quick_bytes", T_LONGLONG, offsetof(CountersObject, f) + K_QUICK_BYTES * sizeof(long long), 0, NULL},
    {"quick_count", T_LONGLONG, offsetof(CountersObject, f) + K_QUICK_COUNT * sizeof(long long), 0, NULL},
    {"requested", T_LONGLONG, offsetof(CountersObject, f) + K_REQUESTED * sizeof(long long), 0, NULL},
    {"reserved", T_LONGLONG, offsetof(CountersObject, f) + K_RESERVED * sizeof(long long), 0, NULL},
    {"retries", T_LONGLONG, offsetof(CountersObject, f) + K_RETRIES * sizeof(long long), 0, NULL},
    {"segment_allocs", T_LONGLONG, offsetof(CountersObject, f) + K_SEGMENT_ALLOCS * sizeof(long long), 0, NULL},
    {"segment_frees", T_LONGLONG, offsetof(CountersObject, f) + K_SEGMENT_FREES * sizeof(long long), 0, NULL},
    {"spilled_bytes_total", T_LONGLONG, offsetof(CountersObject, f) + K_SPILLED_BYTES_TOTAL * sizeof(long long), 0, NULL},
    {"spilled_live", T_LONGLONG, offsetof(CountersObject, f) + K_SPILLED_LIVE * sizeof(long long), 0, NULL},
    {"spills", T_LONGLONG, offsetof(CountersObject, f) + K_SPILLS * sizeof(long long), 0, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyObject *counters_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    if (PyTuple_GET_SIZE(args) || (kwargs && PyDict_GET_SIZE(kwargs))) {
        PyErr_SetString(PyExc_TypeError, "Counters() takes no arguments");
        return NULL;
    }
    return type->tp_alloc(type, 0);  /* zeroed */
}

static PyTypeObject CountersType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "dsrt.memory._fastpool.Counters",
    .tp_basicsize = sizeof(CountersObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The pool's counters (see dsrt.memory.stats.Counters), held as C integers.",
    .tp_new = counters_new,
    .tp_members = counters_members,
};

#define CNT(c) (((CountersObject *)(c))->f)

/* Replace an object slot's value (steals `value`; NULL is an error already set). */
static inline int put(PyObject *obj, Py_ssize_t off, PyObject *value) {
    if (value == NULL) return -1;
    PyObject *old = SLOT(obj, off);
    SLOT(obj, off) = value;
    Py_XDECREF(old);
    return 0;
}

/* An int slot's value; -1 with an error set if it is no int (check PyErr_Occurred). */
static inline long long get_int(PyObject *obj, Py_ssize_t off) {
    PyObject *v = SLOT(obj, off);
    if (v == NULL) {
        PyErr_SetString(PyExc_AttributeError, "dsrt.memory._fastpool: an int slot is unset");
        return -1;
    }
    return PyLong_AsLongLong(v);
}

static inline int put_int(PyObject *obj, Py_ssize_t off, long long value) {
    return put(obj, off, PyLong_FromLongLong(value));
}

static int call_lock(PyObject *lock, PyObject *name, PyObject *arg, int *result) {
    PyObject *args[2] = {lock, arg};
    PyObject *r = PyObject_VectorcallMethod(name, args, (arg ? 2 : 1) | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    if (r == NULL) return -1;
    if (result != NULL) *result = PyObject_IsTrue(r);
    Py_DECREF(r);
    return 0;
}


/* A lock for the pool (the twin of threading.Lock: acquire(blocking=True, timeout=-1), release(),
   locked(), a context manager) that the paths below take and drop without a method call. A
   blocking acquire that must wait releases the GIL, and a signal's handler runs while it waits
   (KeyboardInterrupt interrupts it, as it does threading.Lock's). */
typedef struct {
    PyObject_HEAD
    PyThread_type_lock lock;
    char locked;
} LockObject;

static PyTypeObject LockType;

static int lock_take(LockObject *self, int blocking, double timeout) {  /* 1 taken, 0 not, -1 error */
    if (PyThread_acquire_lock(self->lock, NOWAIT_LOCK)) {
        self->locked = 1;
        return 1;
    }
    if (!blocking) return 0;
    PY_TIMEOUT_T us = timeout < 0 ? -1 : (PY_TIMEOUT_T)(timeout * 1e6);
    for (;;) {
        PyLockStatus r;
        Py_BEGIN_ALLOW_THREADS
        r = PyThread_acquire_lock_timed(self->lock, us, 1);
        Py_END_ALLOW_THREADS
        if (r == PY_LOCK_INTR) {
            if (Py_MakePendingCalls() < 0 || PyErr_CheckSignals() < 0) return -1;
            continue;  /* (a finite timeout restarts: the pool never waits with one) */
        }
        if (r == PY_LOCK_ACQUIRED) self->locked = 1;
        return r == PY_LOCK_ACQUIRED;
    }
}

static int lock_drop(LockObject *self) {
    if (!self->locked) {
        PyErr_SetString(PyExc_RuntimeError, "release unlocked lock");
        return -1;
    }
    self->locked = 0;
    PyThread_release_lock(self->lock);
    return 0;
}

static PyObject *lock_acquire(LockObject *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"blocking", "timeout", NULL};
    int blocking = 1;
    double timeout = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|pd:acquire", kwlist, &blocking, &timeout)) return NULL;
    int r = lock_take(self, blocking, timeout);
    if (r < 0) return NULL;
    return PyBool_FromLong(r);
}

static PyObject *lock_release(LockObject *self, PyObject *unused) {
    if (lock_drop(self) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *lock_exit(LockObject *self, PyObject *args) {
    if (lock_drop(self) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *lock_locked(LockObject *self, PyObject *unused) { return PyBool_FromLong(self->locked); }

static PyObject *lock_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    LockObject *self = (LockObject *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    if ((self->lock = PyThread_allocate_lock()) == NULL) {
        Py_DECREF(self);
        PyErr_SetString(PyExc_MemoryError, "cannot allocate a lock");
        return NULL;
    }
    return (PyObject *)self;
}

static void lock_dealloc(LockObject *self) {
    if (self->lock != NULL) {
        if (self->locked) PyThread_release_lock(self->lock);
        PyThread_free_lock(self->lock);
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef lock_methods[] = {
    {"acquire", (PyCFunction)(void (*)(void))lock_acquire, METH_VARARGS | METH_KEYWORDS,
     "acquire(blocking=True, timeout=-1) -> bool"},
    {"release", (PyCFunction)lock_release, METH_NOARGS, "release()"},
    {"locked", (PyCFunction)lock_locked, METH_NOARGS, "locked() -> bool"},
    {"__enter__", (PyCFunction)(void (*)(void))lock_acquire, METH_VARARGS | METH_KEYWORDS, "acquire()"},
    {"__exit__", (PyCFunction)lock_exit, METH_VARARGS, "release()"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject LockType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "dsrt.memory._fastpool.Lock",
    .tp_basicsize = sizeof(LockObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The pool's lock: threading.Lock's interface, taken by the C paths without a method call.",
    .tp_new = lock_new,
    .tp_dealloc = (destructor)lock_dealloc,
    .tp_methods = lock_methods,
};

/* Take / drop the pool's lock: directly for a Lock of this module, else through its methods. */
static int take_lock(PyObject *lock, int blocking, int *got) {
    if (Py_TYPE(lock) == &LockType) {
        int r = lock_take((LockObject *)lock, blocking, -1);
        if (r < 0) return -1;
        *got = r;
        return 0;
    }
    return call_lock(lock, k_acquire, blocking ? NULL : Py_False, got);
}

static inline int release(PyObject *lock) {
    /* Keeps an error already set (the caller's) and reports a failing release over it. */
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    int rc = Py_TYPE(lock) == &LockType ? lock_drop((LockObject *)lock) : call_lock(lock, k_release, NULL, NULL);
    if (rc == 0) PyErr_Restore(type, value, tb);
    else { Py_XDECREF(type); Py_XDECREF(value); Py_XDECREF(tb); }
    return rc;
}

static PyObject *fast_allocate(PyObject *pool, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames);
static PyObject *fast_free(PyObject *pool, PyObject *const *args, Py_ssize_t nargs);
static PyObject *fast_del(PyObject *alloc, PyObject *unused);
static PyMethodDef allocate_def = {"allocate", (PyCFunction)(void (*)(void))fast_allocate, METH_FASTCALL | METH_KEYWORDS,
                                   "CachingPool.allocate (the quick-cache hit in C; see dsrt.memory.pool)"};
static PyMethodDef free_def = {"free", (PyCFunction)(void (*)(void))fast_free, METH_FASTCALL,
                               "CachingPool.free (the quick-cache keep in C; see dsrt.memory.pool)"};
static PyMethodDef del_def = {"__del__", (PyCFunction)fast_del, METH_NOARGS,
                              "Give the bytes back to the pool (Allocation's finaliser, in C)."};

static PyObject *configure(PyObject *mod, PyObject *args) {
    PyObject *pool_type, *alloc, *block, *counters, *segment, *allocate;
    if (allocation_type != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "dsrt.memory._fastpool is configured once per process");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "O!O!O!O!O!OOnnn", &PyType_Type, &pool_type, &PyType_Type, &alloc, &PyType_Type,
                          &block, &PyType_Type, &counters, &PyType_Type, &segment, &use_clock, &allocate, &quick_max,
                          &quick_age, &alignment))
        return NULL;
    PyTypeObject *bt = (PyTypeObject *)block, *at = (PyTypeObject *)alloc;
    PyObject *slots = PyObject_GetAttrString(counters, "__slots__");
    if (slots == NULL) return NULL;
    PyObject *mine = PyTuple_New(K_COUNT);
    if (mine == NULL) { Py_DECREF(slots); return NULL; }
    for (int k = 0; k < K_COUNT; k++) PyTuple_SET_ITEM(mine, k, PyUnicode_FromString(counters_members[k].name));
    PyObject *theirs = PySequence_Tuple(slots);
    int same = theirs != NULL ? PyObject_RichCompareBool(mine, theirs, Py_EQ) : -1;
    Py_DECREF(slots); Py_DECREF(mine); Py_XDECREF(theirs);
    if (same < 0) return NULL;
    if (!same) {
        PyErr_SetString(PyExc_TypeError, "dsrt.memory._fastpool: Counters no longer matches stats.Counters.__slots__");
        return NULL;
    }
    if (        dsrt_slot_offset(bt, "alloc_ref", &b_alloc_ref) || dsrt_slot_offset(bt, "born", &b_born) ||
        dsrt_slot_offset(bt, "free", &b_free) || dsrt_slot_offset(bt, "requested", &b_requested) ||
        dsrt_slot_offset(bt, "segment", &b_segment) || dsrt_slot_offset(bt, "size", &b_size) ||
        dsrt_slot_offset(bt, "offset", &b_offset) ||
        dsrt_slot_offset((PyTypeObject *)segment, "handle", &s_handle_off) ||
        dsrt_slot_offset(at, "device", &al_device) || dsrt_slot_offset(at, "exported", &al_exported) ||
        dsrt_slot_offset(at, "generation", &al_generation) || dsrt_slot_offset(at, "handle", &al_handle) ||
        dsrt_slot_offset(at, "last_use", &al_last_use) || dsrt_slot_offset(at, "nbytes", &al_nbytes) ||
        dsrt_slot_offset(at, "offset", &al_offset) || dsrt_slot_offset(at, "pool", &al_pool) ||
        dsrt_slot_offset(at, "pool_data", &al_pool_data) || dsrt_slot_offset(at, "stream", &al_stream))
        return NULL;
    allocation_type = at;
    block_type = bt;
    Py_INCREF(at); Py_INCREF(bt); Py_INCREF(use_clock); Py_INCREF(allocate);
    python_allocate = allocate;

    PyObject *a = PyDescr_NewMethod((PyTypeObject *)pool_type, &allocate_def);
    PyObject *f = PyDescr_NewMethod((PyTypeObject *)pool_type, &free_def);
    PyObject *d = PyDescr_NewMethod(at, &del_def);
    if (a == NULL || f == NULL || d == NULL) { Py_XDECREF(a); Py_XDECREF(f); Py_XDECREF(d); return NULL; }
    return Py_BuildValue("(NNN)", a, f, d);
}

/* The Python allocate, called with the caller's arguments and the pool in front. */
static inline PyObject *python_fallback(PyObject *pool, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    return dsrt_call_with_first(python_allocate, pool, args, nargs, kwnames);
}

/* CachingPool.allocate(nbytes, stream=None) */
static PyObject *fast_allocate(PyObject *pool, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    PyObject *stream = NULL;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs < 1 || nargs > 2 || nargs + nkw > 2 || !PyLong_CheckExact(args[0]))
        return python_fallback(pool, args, nargs, kwnames);
    if (nargs == 2) stream = args[1];
    else if (nkw == 1) {
        if (PyUnicode_Compare(PyTuple_GET_ITEM(kwnames, 0), k_stream) != 0) return python_fallback(pool, args, nargs, kwnames);
        stream = args[1];
    }
    Py_ssize_t n = PyLong_AsSsize_t(args[0]);
    if (n == -1 && PyErr_Occurred()) { PyErr_Clear(); return python_fallback(pool, args, nargs, kwnames); }
    if (n > quick_max) return python_fallback(pool, args, nargs, kwnames);
    if (n < 0) n = 0;
    Py_ssize_t size = (n + alignment - 1) & ~(alignment - 1);
    if (size == 0) size = alignment;

    PyObject *dict = PyObject_GenericGetDict(pool, NULL);
    if (dict == NULL) { PyErr_Clear(); return python_fallback(pool, args, nargs, kwnames); }
    PyObject *lock = PyDict_GetItemWithError(dict, k_lock), *c = PyDict_GetItemWithError(dict, k_counters),
             *device = PyDict_GetItemWithError(dict, k_device);
    if (stream == NULL || stream == Py_None) stream = PyDict_GetItemWithError(dict, k_default_stream);
    if (lock == NULL || c == NULL || Py_TYPE(c) != &CountersType || device == NULL || stream == NULL) {
        Py_DECREF(dict);
        PyErr_Clear();
        return python_fallback(pool, args, nargs, kwnames);
    }
    Py_INCREF(lock); Py_INCREF(c); Py_INCREF(device); Py_INCREF(stream);
    PyObject *block = NULL, *alloc = NULL, *size_key = PyLong_FromSsize_t(size);
    int locked = 0, handed_over = 0;
    /* A blocking acquire lets other threads run: the pool's containers are read only once it is held
       (the miss path replaces _quick). */
    int got = 0;
    if (size_key == NULL || take_lock(lock, 1, &got) < 0) goto done;
    locked = 1;
    PyObject *deferred = PyDict_GetItemWithError(dict, k_deferred), *quick = PyDict_GetItemWithError(dict, k_quick);
    if (deferred == NULL || quick == NULL || !PyDict_CheckExact(quick)) {
        if (PyErr_Occurred()) goto done;
        handed_over = 1;
        goto done;
    }
    Py_ssize_t waiting = PyObject_Length(deferred);
    if (waiting < 0) goto done;
    PyObject *lst = waiting ? NULL : PyDict_GetItemWithError(quick, size_key);
    if (lst == NULL || !PyList_CheckExact(lst) || PyList_GET_SIZE(lst) == 0) {
        if (PyErr_Occurred()) goto done;
        handed_over = 1;  /* a miss, or frees to drain first: the Python allocate does it all */
        goto done;
    }
    Py_ssize_t len = PyList_GET_SIZE(lst);
    block = Py_NewRef(PyList_GET_ITEM(lst, len - 1));  /* a freed temporary of exactly this size, kept whole */
    if (PyList_SetSlice(lst, len - 1, len, NULL) < 0) goto done;
    if (len == 1 && PyDict_DelItem(quick, size_key) < 0) goto done;
    if (Py_TYPE(block) != block_type) { PyErr_SetString(PyExc_TypeError, "quick cache holds a non-block"); goto done; }
    {
        long long *f = CNT(c), bsize = get_int(block, b_size);
        if (PyErr_Occurred()) goto done;
        if (put(block, b_free, Py_NewRef(Py_False)) || put_int(block, b_requested, n) ||
            put_int(block, b_born, f[K_NUM_ALLOCS]))
            goto done;
        f[K_QUICK_BYTES] -= size;
        f[K_QUICK_COUNT] -= 1;
        f[K_ALLOCATED] += bsize;
        if (f[K_ALLOCATED] > f[K_PEAK_ALLOCATED]) f[K_PEAK_ALLOCATED] = f[K_ALLOCATED];
        f[K_REQUESTED] += n;
        if (f[K_REQUESTED] > f[K_PEAK_REQUESTED]) f[K_PEAK_REQUESTED] = f[K_REQUESTED];
        f[K_NUM_ALLOCS] += 1;
    }
    locked = 0;
    if (release(lock) < 0) goto done;
    /* Outside the lock: the block is live but has no alloc_ref yet, so no spill or compaction on
       another thread touches it (as in the Python allocate). */
    alloc = allocation_type->tp_alloc(allocation_type, 0);
    if (alloc == NULL) goto done;
    PyObject *segment = SLOT(block, b_segment), *tick = PyIter_Next(use_clock);
    if (segment == NULL || SLOT(segment, s_handle_off) == NULL || SLOT(block, b_offset) == NULL || tick == NULL) {
        Py_XDECREF(tick);
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_RuntimeError, "dsrt.memory._fastpool: a block without a place");
        Py_CLEAR(alloc);
        goto done;
    }
    SLOT(alloc, al_device) = Py_NewRef(device);
    SLOT(alloc, al_handle) = Py_NewRef(SLOT(segment, s_handle_off));
    SLOT(alloc, al_offset) = Py_NewRef(SLOT(block, b_offset));
    SLOT(alloc, al_nbytes) = PyLong_FromSsize_t(n);
    SLOT(alloc, al_pool) = Py_NewRef(pool);
    SLOT(alloc, al_stream) = Py_NewRef(stream);
    SLOT(alloc, al_generation) = Py_NewRef(small_zero);
    SLOT(alloc, al_exported) = Py_NewRef(Py_False);
    SLOT(alloc, al_last_use) = tick;
    SLOT(alloc, al_pool_data) = Py_NewRef(block);
    if (SLOT(alloc, al_nbytes) == NULL || put(block, b_alloc_ref, PyWeakref_NewRef(alloc, NULL)) < 0) Py_CLEAR(alloc);

done:
    if (locked && release(lock) < 0) Py_CLEAR(alloc);
    Py_XDECREF(block); Py_XDECREF(size_key);
    Py_DECREF(lock); Py_DECREF(c); Py_DECREF(device); Py_DECREF(stream); Py_DECREF(dict);
    if (handed_over) return python_fallback(pool, args, nargs, kwnames);
    return alloc;
}

/* The quick-cache keep of CachingPool.free, with the lock held: 1 kept, 0 not eligible, -1 error. */
static int quick_keep(PyObject *pool, PyObject *dict, PyObject *alloc) {
    PyObject *block = SLOT(alloc, al_pool_data), *c = PyDict_GetItemWithError(dict, k_counters);
    PyObject *sync = PyDict_GetItemWithError(dict, k_sync), *blocks = PyDict_GetItemWithError(dict, k_quick_blocks);
    PyObject *quick = PyDict_GetItemWithError(dict, k_quick);
    PyObject *serial_obj = PyDict_GetItemWithError(dict, k_quick_serial);
    if (block == NULL || Py_TYPE(block) != block_type || c == NULL || Py_TYPE(c) != &CountersType ||
        sync != Py_True || blocks == NULL ||
        quick == NULL || !PyDict_CheckExact(quick) || serial_obj == NULL)
        return PyErr_Occurred() ? -1 : 0;
    /* Borrowed from the pool's dict and the allocation; nothing below runs Python code. (The keep
       only happens below quick_blocks waiting, so it never has to merge an older one back.) */
    long long *f = CNT(c);
    long long size = get_int(block, b_size), born = get_int(block, b_born);
    long long limit = PyLong_AsLongLong(blocks);
    if (PyErr_Occurred()) return -1;
    if (!(f[K_QUICK_COUNT] < limit && size <= quick_max && f[K_NUM_ALLOCS] - born <= quick_age &&
          ((f[K_QUICK_BYTES] + size) << 5) <= f[K_RESERVED]))
        return 0;
    long long serial = PyLong_AsLongLong(serial_obj) + 1;
    long long breq = get_int(block, b_requested);
    if (PyErr_Occurred()) return -1;
    Py_INCREF(block);
    Py_INCREF(c);
    int rc = -1;
    PyObject *size_key = NULL, *serial_new = NULL;
    if (put(alloc, al_pool_data, Py_NewRef(Py_None)) || put(alloc, al_handle, Py_NewRef(Py_None)) ||
        put(block, b_alloc_ref, Py_NewRef(Py_None)))
        goto out;
    f[K_NUM_FREES] += 1;
    f[K_ALLOCATED] -= size;
    f[K_REQUESTED] -= breq;
    if ((serial_new = PyLong_FromLongLong(serial)) == NULL || PyDict_SetItem(dict, k_quick_serial, serial_new) < 0)
        goto out;
    if (put_int(block, b_requested, -serial)) goto out;  /* negative while cached whole */
    if ((size_key = PyLong_FromLongLong(size)) == NULL) goto out;
    PyObject *lst = PyDict_GetItemWithError(quick, size_key);
    if (lst == NULL) {
        if (PyErr_Occurred()) goto out;
        PyObject *fresh = PyList_New(1);
        if (fresh == NULL) goto out;
        PyList_SET_ITEM(fresh, 0, Py_NewRef(block));
        int bad = PyDict_SetItem(quick, size_key, fresh);
        Py_DECREF(fresh);
        if (bad) goto out;
    } else if (PyList_Append(lst, block) < 0) {
        goto out;
    }
    f[K_QUICK_BYTES] += size;
    f[K_QUICK_COUNT] += 1;
    rc = 1;
out:
    Py_DECREF(block); Py_DECREF(c); Py_XDECREF(size_key); Py_XDECREF(serial_new);
    return rc;
}

/* CachingPool.free(alloc) */
static PyObject *fast_free(PyObject *pool, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 1) {
        PyErr_SetString(PyExc_TypeError, "CachingPool.free takes one Allocation");
        return NULL;
    }
    PyObject *alloc = args[0];
    PyObject *dict = PyObject_GenericGetDict(pool, NULL);
    if (dict == NULL) return NULL;
    PyObject *lock = Py_XNewRef(PyDict_GetItemWithError(dict, k_lock));
    PyObject *result = NULL;
    int got;
    if (lock == NULL) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_AttributeError, "pool has no lock");
        goto done;
    }
    if (take_lock(lock, 0, &got) < 0) goto done;
    if (!got) {  /* busy (another thread, or a finaliser inside this pool's critical section): queue it */
        PyObject *deferred = PyDict_GetItemWithError(dict, k_deferred);
        if (deferred == NULL) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_AttributeError, "pool has no deferred queue");
            goto done;
        }
        PyObject *aargs[2] = {deferred, alloc};
        result = PyObject_VectorcallMethod(k_append, aargs, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
        goto done;
    }
    int kept = Py_TYPE(alloc) == allocation_type ? quick_keep(pool, dict, alloc) : 0;
    if (kept == 0) {
        PyObject *fargs[2] = {pool, alloc};
        result = PyObject_VectorcallMethod(k_free_locked, fargs, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    } else if (kept > 0) {
        result = Py_NewRef(Py_None);
    }
    if (release(lock) < 0) Py_CLEAR(result);
done:
    Py_XDECREF(lock);
    Py_DECREF(dict);
    return result;
}

/* Allocation.__del__ */
static PyObject *fast_del(PyObject *alloc, PyObject *unused) {
    if (Py_TYPE(alloc) != allocation_type && !PyObject_TypeCheck(alloc, allocation_type)) Py_RETURN_NONE;
    PyObject *pool = SLOT(alloc, al_pool);
    if (pool == NULL || pool == Py_None) Py_RETURN_NONE;
    SLOT(alloc, al_pool) = Py_NewRef(Py_None);  /* the reference moves to `pool` */
    PyObject *fargs[2] = {pool, alloc};
    PyObject *r = PyObject_VectorcallMethod(k_free, fargs, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    Py_DECREF(pool);
    if (r == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_Exception)) return NULL;
        PyErr_Clear();  /* interpreter shutdown: nothing left to tell (as the Python finaliser) */
        Py_RETURN_NONE;
    }
    Py_DECREF(r);
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"configure", configure, METH_VARARGS,
     "configure(CachingPool, Allocation, Block, Counters, Segment, use_clock, python_allocate, QUICK_MAX,"
     " QUICK_AGE, ALIGNMENT) -> (allocate, free, __del__) method descriptors"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "dsrt.memory._fastpool", "CachingPool's quick-cache paths in C (see dsrt.memory.pool).",
    -1, module_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fastpool(void) {
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL) return NULL;
#define INTERN(var, text) if ((var = PyUnicode_InternFromString(text)) == NULL) return NULL
    INTERN(k_lock, "_lock");
    INTERN(k_deferred, "_deferred");
    INTERN(k_quick, "_quick");
    INTERN(k_quick_serial, "_quick_serial");
    INTERN(k_quick_blocks, "quick_blocks");
    INTERN(k_sync, "_sync");
    INTERN(k_counters, "counters");
    INTERN(k_device, "device");
    INTERN(k_default_stream, "_default_stream");
    INTERN(k_acquire, "acquire");
    INTERN(k_release, "release");
    INTERN(k_append, "append");
    INTERN(k_free_locked, "_free_locked");
    INTERN(k_free, "free");
    INTERN(k_stream, "stream");
#undef INTERN
    if ((small_zero = PyLong_FromLong(0)) == NULL) return NULL;
    if (PyType_Ready(&CountersType) < 0 || PyType_Ready(&LockType) < 0) return NULL;
    Py_INCREF(&LockType);
    if (PyModule_AddObject(m, "Lock", (PyObject *)&LockType) < 0) return NULL;
    Py_INCREF(&CountersType);
    if (PyModule_AddObject(m, "Counters", (PyObject *)&CountersType) < 0) return NULL;
    return m;
}
