/* edgeseq's bound push step as one C call: a CPython extension, compiled on first use (runtimes/fastpush.py).

   A StreamSession bound to its StepArena (runtimes/arena.py) steps a frame in three parts: the frame copied into the
   arena's free side, the runtime's bound call (which writes the output and the next state beside it), and the finite
   check of that whole side. From Python these are three numpy calls, each 0.4-0.7 us right after a runtime call
   (its work has evicted numpy's code); here they are one call. `Side(frame, call, side)(x)`:

   - copies x into `frame` (a C-contiguous float32 or int64 array) where x exposes a C-contiguous buffer of the
     same length, else assigns `frame[...] = x` (numpy's own assignment: strided arrays, a Python int token id);
   - calls `call()` (an exception from it propagates unchanged);
   - returns True when every float32 of `side` is finite, False otherwise (the session then looks at the arrays
     one by one, to refuse the input or name the state tensor).

   The check reads each float's bits as an integer: an exponent field of all ones is NaN or Inf. A token id written
   as int64 reads as two tiny finite floats (ids are range-checked, far below 2**23, before they are written). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    PyObject_HEAD
    PyObject *frame, *call, *side;  /* kept alive with the object */
    void *frame_at;
    Py_ssize_t frame_bytes;
    const uint32_t *side_at;
    Py_ssize_t side_floats;
    vectorcallfunc vectorcall;
} Side;

static int c_buffer(PyObject *obj, Py_buffer *view, int writable) {
    return PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0));
}

static int all_finite(const uint32_t *bits, Py_ssize_t n) {
    uint32_t bad = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        bad |= (uint32_t)((bits[i] & 0x7f800000u) == 0x7f800000u);
    }
    return bad == 0;
}

static PyObject *side_step(Side *self, PyObject *x) {
    Py_buffer view;
    if (c_buffer(x, &view, 0) == 0) {
        int same = view.len == self->frame_bytes;
        if (same) {
            memcpy(self->frame_at, view.buf, (size_t)view.len);
        }
        PyBuffer_Release(&view);
        if (!same && PyObject_SetItem(self->frame, Py_Ellipsis, x) < 0) {
            return NULL;
        }
    } else {
        PyErr_Clear();  /* not a C-contiguous buffer (a strided view, an int): numpy assigns it */
        if (PyObject_SetItem(self->frame, Py_Ellipsis, x) < 0) {
            return NULL;
        }
    }
    PyObject *r = PyObject_CallNoArgs(self->call);
    if (r == NULL) {
        return NULL;
    }
    Py_DECREF(r);
    return PyBool_FromLong(all_finite(self->side_at, self->side_floats));
}

static PyObject *side_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    Py_ssize_t n = PyVectorcall_NARGS(nargsf);
    if (n != 1 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0)) {
        PyErr_SetString(PyExc_TypeError, "Side(x): one positional argument");
        return NULL;
    }
    return side_step((Side *)callable, args[0]);
}

static int side_init(Side *self, PyObject *args, PyObject *kwds) {
    PyObject *frame, *call, *side;
    static char *kwlist[] = {"frame", "call", "side", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOO", kwlist, &frame, &call, &side)) {
        return -1;
    }
    if (!PyCallable_Check(call)) {
        PyErr_SetString(PyExc_TypeError, "Side: call must be callable");
        return -1;
    }
    Py_buffer fv, sv;
    if (c_buffer(frame, &fv, 1) < 0) {
        return -1;
    }
    if (c_buffer(side, &sv, 0) < 0) {
        PyBuffer_Release(&fv);
        return -1;
    }
    /* the arrays stay alive (references below) and never resize: their addresses hold */
    self->frame_at = fv.buf;
    self->frame_bytes = fv.len;
    self->side_at = (const uint32_t *)sv.buf;
    self->side_floats = sv.len / 4;
    PyBuffer_Release(&fv);
    PyBuffer_Release(&sv);
    Py_INCREF(frame);
    Py_INCREF(call);
    Py_INCREF(side);
    Py_XSETREF(self->frame, frame);
    Py_XSETREF(self->call, call);
    Py_XSETREF(self->side, side);
    self->vectorcall = side_vectorcall;
    return 0;
}

static int side_traverse(Side *self, visitproc visit, void *arg) {
    Py_VISIT(self->frame);
    Py_VISIT(self->call);
    Py_VISIT(self->side);
    return 0;
}

static int side_clear(Side *self) {
    Py_CLEAR(self->frame);
    Py_CLEAR(self->call);
    Py_CLEAR(self->side);
    return 0;
}

static void side_dealloc(Side *self) {
    PyObject_GC_UnTrack(self);
    side_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject SideType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "edgeseq_fastpush.Side",
    .tp_basicsize = sizeof(Side),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "Side(frame, call, side): calling it with x copies x into frame, calls call(), returns whether side is "
              "all finite.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)side_init,
    .tp_call = PyVectorcall_Call,  /* a call with a tuple goes through the vectorcall too */
    .tp_vectorcall_offset = offsetof(Side, vectorcall),
    .tp_traverse = (traverseproc)side_traverse,
    .tp_clear = (inquiry)side_clear,
    .tp_dealloc = (destructor)side_dealloc,
};


/* Relay(ins, call, outs, keep=None): calling it copies each (dst, src) pair of `ins`, calls call(), then copies
   each pair of `outs`. ExecuTorch's bound step (runtimes/et.py) moves the frame and the state into the program's
   fixed inputs and its outputs out to the arena this way: one C call where numpy took one per array (0.5-3 us each
   right after a step). Every buffer is C-contiguous, its pair of the same length, and in place while the Relay
   lives; `keep` (any object, held with the arrays) keeps alive what they belong to. */
typedef struct {
    void *dst;
    const void *src;
    size_t bytes;
} Copy;

typedef struct {
    PyObject_HEAD
    PyObject *keep, *call;  /* keep: (ins, outs, keep) as given: what the buffers belong to */
    Copy *copies;           /* the ins, then the outs */
    Py_ssize_t n_in, n_out;
    vectorcallfunc vectorcall;
} Relay;

static void copy_all(const Copy *copies, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) {
        memcpy(copies[i].dst, copies[i].src, copies[i].bytes);
    }
}

static PyObject *relay_run(Relay *self) {
    copy_all(self->copies, self->n_in);
    PyObject *r = PyObject_CallNoArgs(self->call);
    if (r == NULL) {
        return NULL;
    }
    Py_DECREF(r);
    copy_all(self->copies + self->n_in, self->n_out);
    Py_RETURN_NONE;
}

static PyObject *relay_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    (void)args;
    if (PyVectorcall_NARGS(nargsf) != 0 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0)) {
        PyErr_SetString(PyExc_TypeError, "Relay(): no arguments");
        return NULL;
    }
    return relay_run((Relay *)callable);
}

/* one (dst, src) pair of a sequence into *out; -1 with an exception set on a bad pair */
static int relay_pair(PyObject *pair, Copy *out) {
    PyObject *dst, *src;
    if (!PyTuple_Check(pair) || !PyArg_ParseTuple(pair, "OO", &dst, &src)) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_TypeError, "Relay: each copy is a (dst, src) tuple");
        }
        return -1;
    }
    Py_buffer dv, sv;
    if (c_buffer(dst, &dv, 1) < 0) {
        return -1;
    }
    if (c_buffer(src, &sv, 0) < 0) {
        PyBuffer_Release(&dv);
        return -1;
    }
    int same = dv.len == sv.len;
    out->dst = dv.buf;
    out->src = sv.buf;
    out->bytes = (size_t)dv.len;
    PyBuffer_Release(&dv);
    PyBuffer_Release(&sv);
    if (!same) {
        PyErr_SetString(PyExc_ValueError, "Relay: a copy's dst and src differ in length");
        return -1;
    }
    return 0;
}

static int relay_init(Relay *self, PyObject *args, PyObject *kwds) {
    PyObject *ins, *call, *outs, *extra = Py_None;
    static char *kwlist[] = {"ins", "call", "outs", "keep", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!OO!|O", kwlist, &PyTuple_Type, &ins, &call, &PyTuple_Type, &outs,
                                     &extra)) {
        return -1;
    }
    if (!PyCallable_Check(call)) {
        PyErr_SetString(PyExc_TypeError, "Relay: call must be callable");
        return -1;
    }
    Py_ssize_t n_in = PyTuple_GET_SIZE(ins), n_out = PyTuple_GET_SIZE(outs);
    Copy *copies = PyMem_Calloc((size_t)(n_in + n_out) + 1, sizeof(Copy));
    if (copies == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n_in + n_out; i++) {
        PyObject *pair = i < n_in ? PyTuple_GET_ITEM(ins, i) : PyTuple_GET_ITEM(outs, i - n_in);
        if (relay_pair(pair, &copies[i]) < 0) {
            PyMem_Free(copies);
            return -1;
        }
    }
    PyObject *keep = PyTuple_Pack(3, ins, outs, extra);
    if (keep == NULL) {
        PyMem_Free(copies);
        return -1;
    }
    PyMem_Free(self->copies);
    self->copies = copies;
    self->n_in = n_in;
    self->n_out = n_out;
    Py_INCREF(call);
    Py_XSETREF(self->call, call);
    Py_XSETREF(self->keep, keep);
    self->vectorcall = relay_vectorcall;
    return 0;
}

static int relay_traverse(Relay *self, visitproc visit, void *arg) {
    Py_VISIT(self->keep);
    Py_VISIT(self->call);
    return 0;
}

static int relay_clear(Relay *self) {
    Py_CLEAR(self->keep);
    Py_CLEAR(self->call);
    return 0;
}

static void relay_dealloc(Relay *self) {
    PyObject_GC_UnTrack(self);
    relay_clear(self);
    PyMem_Free(self->copies);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject RelayType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "edgeseq_fastpush.Relay",
    .tp_basicsize = sizeof(Relay),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "Relay(ins, call, outs, keep=None): calling it copies the (dst, src) pairs of ins, calls call(), "
              "copies those of outs.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)relay_init,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(Relay, vectorcall),
    .tp_traverse = (traverseproc)relay_traverse,
    .tp_clear = (inquiry)relay_clear,
    .tp_dealloc = (destructor)relay_dealloc,
};

static PyObject *all_finite_py(PyObject *mod, PyObject *arg) {
    (void)mod;
    Py_buffer v;
    if (c_buffer(arg, &v, 0) < 0) {
        return NULL;
    }
    int ok = all_finite((const uint32_t *)v.buf, v.len / 4);
    PyBuffer_Release(&v);
    return PyBool_FromLong(ok);
}

static PyMethodDef methods[] = {
    {"all_finite", all_finite_py, METH_O, "all_finite(buffer): every float32 in a C-contiguous buffer is finite."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, .m_name = "edgeseq_fastpush", .m_size = -1, .m_methods = methods,
};

PyMODINIT_FUNC PyInit_edgeseq_fastpush(void) {
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    if (PyModule_AddType(m, &SideType) < 0 || PyModule_AddType(m, &RelayType) < 0) {  /* readies each type */
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
