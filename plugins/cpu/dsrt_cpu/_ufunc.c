/* A CPU kernel that applies a numpy ufunc to the host views of its operands, in C (an optional
 * extension; dsrt_cpu.kernels keeps the same kernel in Python and uses it where this is not built).
 *
 * UfuncKernel(ufunc, nin, slow, low_dtypes, host_view) is a kernel implementation with the
 * contract's signature (inputs, out, params, stream): if the first input's dtype is in `low_dtypes`
 * it calls `slow` (the numpy reference); otherwise it calls ufunc(*views, out=view), each view
 * being the array's cached native view (Array.native while Array.native_generation equals its
 * allocation's generation, as host_view checks) or host_view(array). Called on the launching
 * thread; it reads the Array's public slots (dtype, allocation, native, native_generation).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include "_cslots.h"

static Py_ssize_t a_dtype, a_allocation, a_native, a_native_gen, al_generation;
static PyTypeObject *array_type, *allocation_type;
static PyObject *kw_out;

#define SLOT DSRT_SLOT
#define MAX_OPERANDS 4

typedef struct {
    PyObject_HEAD
    PyObject *ufunc, *slow, *low, *host_view;
    Py_ssize_t nin;
    vectorcallfunc vectorcall;
} UfuncKernel;

/* The host view of `a` (new reference): its cached native view while current, else host_view(a). */
static PyObject *view_of(UfuncKernel *self, PyObject *a) {
    if (Py_TYPE(a) == array_type) {
        PyObject *native = SLOT(a, a_native), *alloc = SLOT(a, a_allocation), *ng = SLOT(a, a_native_gen);
        if (native != NULL && native != Py_None && alloc != NULL && ng != NULL && Py_TYPE(alloc) == allocation_type) {
            PyObject *gen = SLOT(alloc, al_generation);
            if (gen == ng) return Py_NewRef(native);
            if (gen != NULL) {
                int same = PyObject_RichCompareBool(gen, ng, Py_EQ);
                if (same < 0) return NULL;
                if (same) return Py_NewRef(native);
            }
        }
    }
    return PyObject_CallOneArg(self->host_view, a);
}

static PyObject *call(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    UfuncKernel *self = (UfuncKernel *)callable;
    if (PyVectorcall_NARGS(nargsf) != 4 || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "a kernel implementation takes (inputs, out, params, stream)");
        return NULL;
    }
    PyObject *inputs = args[0], *out = args[1];
    if (!PyTuple_CheckExact(inputs) || PyTuple_GET_SIZE(inputs) != self->nin)
        return PyObject_Vectorcall(self->slow, args, 4, NULL);
    PyObject *first = PyTuple_GET_ITEM(inputs, 0);
    PyObject *dtype = Py_TYPE(first) == array_type ? Py_XNewRef(SLOT(first, a_dtype)) : PyObject_GetAttrString(first, "dtype");
    if (dtype == NULL) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_AttributeError, "dtype");
        return NULL;
    }
    int low = PySet_Contains(self->low, dtype);
    Py_DECREF(dtype);
    if (low < 0) return NULL;
    if (low) return PyObject_Vectorcall(self->slow, args, 4, NULL);
    PyObject *views[MAX_OPERANDS] = {NULL, NULL, NULL, NULL}, *result = NULL;
    for (Py_ssize_t k = 0; k < self->nin; k++)
        if ((views[k] = view_of(self, PyTuple_GET_ITEM(inputs, k))) == NULL) goto done;
    if ((views[self->nin] = view_of(self, out)) == NULL) goto done;
    result = PyObject_Vectorcall(self->ufunc, views, (size_t)self->nin, kw_out);
done:
    for (Py_ssize_t i = 0; i < MAX_OPERANDS; i++) Py_XDECREF(views[i]);
    if (result == NULL) return NULL;
    Py_DECREF(result);
    Py_RETURN_NONE;
}

static PyObject *kernel_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    PyObject *ufunc, *slow, *low, *host_view;
    Py_ssize_t nin;
    if (array_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "dsrt_cpu._ufunc.configure(Array, Allocation) first");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "OnOO!O:UfuncKernel", &ufunc, &nin, &slow, &PyFrozenSet_Type, &low, &host_view))
        return NULL;
    if (nin < 1 || nin >= MAX_OPERANDS) {
        PyErr_SetString(PyExc_ValueError, "UfuncKernel: 1 to 3 inputs");
        return NULL;
    }
    UfuncKernel *self = (UfuncKernel *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    self->ufunc = Py_NewRef(ufunc);
    self->slow = Py_NewRef(slow);
    self->low = Py_NewRef(low);
    self->host_view = Py_NewRef(host_view);
    self->nin = nin;
    self->vectorcall = call;
    return (PyObject *)self;
}

static int kernel_traverse(UfuncKernel *self, visitproc visit, void *arg) {
    Py_VISIT(self->ufunc); Py_VISIT(self->slow); Py_VISIT(self->low); Py_VISIT(self->host_view);
    return 0;
}

static int kernel_clear(UfuncKernel *self) {
    Py_CLEAR(self->ufunc); Py_CLEAR(self->slow); Py_CLEAR(self->low); Py_CLEAR(self->host_view);
    return 0;
}

static void kernel_dealloc(UfuncKernel *self) {
    PyObject_GC_UnTrack(self);
    kernel_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *kernel_repr(UfuncKernel *self) {
    return PyUnicode_FromFormat("<UfuncKernel %R, %zd inputs>", self->ufunc, self->nin);
}

static PyTypeObject UfuncKernelType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "dsrt_cpu._ufunc.UfuncKernel",
    .tp_basicsize = sizeof(UfuncKernel),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "UfuncKernel(ufunc, nin, slow, low_dtypes, host_view): a CPU kernel implementation calling a numpy"
              " ufunc on its operands' host views (the numpy reference `slow` for the dtypes in low_dtypes).",
    .tp_new = kernel_new,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(UfuncKernel, vectorcall),
    .tp_traverse = (traverseproc)kernel_traverse,
    .tp_clear = (inquiry)kernel_clear,
    .tp_dealloc = (destructor)kernel_dealloc,
    .tp_repr = (reprfunc)kernel_repr,
};

static PyObject *configure(PyObject *mod, PyObject *args) {
    PyObject *arr, *alloc;
    if (!PyArg_ParseTuple(args, "O!O!", &PyType_Type, &arr, &PyType_Type, &alloc)) return NULL;
    PyTypeObject *at = (PyTypeObject *)arr, *lt = (PyTypeObject *)alloc;
    if (dsrt_slot_offset(at, "dtype", &a_dtype) || dsrt_slot_offset(at, "allocation", &a_allocation) ||
        dsrt_slot_offset(at, "native", &a_native) || dsrt_slot_offset(at, "native_generation", &a_native_gen) ||
        dsrt_slot_offset(lt, "generation", &al_generation))
        return NULL;
    Py_XSETREF(array_type, (PyTypeObject *)Py_NewRef(arr));
    Py_XSETREF(allocation_type, (PyTypeObject *)Py_NewRef(alloc));
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"configure", configure, METH_VARARGS, "configure(Array, Allocation): the classes whose public slots kernels read"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "dsrt_cpu._ufunc", "CPU ufunc kernels in C (see dsrt_cpu.kernels).", -1, module_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__ufunc(void) {
    if (PyType_Ready(&UfuncKernelType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL) return NULL;
    PyObject *out_name = PyUnicode_InternFromString("out");
    if (out_name == NULL || (kw_out = PyTuple_Pack(1, out_name)) == NULL) return NULL;
    Py_DECREF(out_name);
    Py_INCREF(&UfuncKernelType);
    if (PyModule_AddObject(m, "UfuncKernel", (PyObject *)&UfuncKernelType) < 0) return NULL;
    return m;
}
