/* rvos_kit.trees._unfilter: undo the PNG row filters of an 8-bit, one-channel, non-interlaced
 * image in place (PNG specification, section 9: None, Sub, Up, Average, Paeth).
 *
 * Why compiled: pngcodec's numpy path costs ~0.42 ms per 720x1280 mask against a floor
 * (libdeflate inflate + one pass over the rows) of ~0.10 ms; the rest is numpy's per-call
 * cost on hundreds of Up/Paeth rows. This loop is one pass over the rows. It uses only
 * the buffer protocol (no numpy headers): pngcodec wraps the same memory as an array. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdlib.h>
#include <string.h>

/* 1 on success, 0 when a filter byte is not 0-4 (the buffer is then partly unfiltered). */
static int unfilter(unsigned char *buf, Py_ssize_t h, Py_ssize_t w)
{
    const Py_ssize_t stride = w + 1;
    const unsigned char *up = NULL; /* the row above, NULL above row 0 (all zeros) */
    for (Py_ssize_t y = 0; y < h; y++) {
        unsigned char *row = buf + y * stride;
        unsigned char *x = row + 1;
        switch (row[0]) {
        case 0:
            break;
        case 1:
            for (Py_ssize_t i = 1; i < w; i++)
                x[i] = (unsigned char)(x[i] + x[i - 1]);
            break;
        case 2:
            if (up)
                for (Py_ssize_t i = 0; i < w; i++)
                    x[i] = (unsigned char)(x[i] + up[i]);
            break;
        case 3:
            if (up) {
                x[0] = (unsigned char)(x[0] + (up[0] >> 1));
                for (Py_ssize_t i = 1; i < w; i++)
                    x[i] = (unsigned char)(x[i] + ((x[i - 1] + up[i]) >> 1));
            } else {
                for (Py_ssize_t i = 1; i < w; i++)
                    x[i] = (unsigned char)(x[i] + (x[i - 1] >> 1));
            }
            break;
        case 4:
            if (up) {
                x[0] = (unsigned char)(x[0] + up[0]); /* a = c = 0: predicts b */
                for (Py_ssize_t i = 1; i < w; i++) {
                    int a = x[i - 1], b = up[i], c = up[i - 1];
                    int pa = abs(b - c), pb = abs(a - c), pc = abs(a + b - 2 * c);
                    int pred = (pa <= pb && pa <= pc) ? a : (pb <= pc ? b : c);
                    x[i] = (unsigned char)(x[i] + pred);
                }
            } else { /* b = c = 0: predicts a, i.e. Sub */
                for (Py_ssize_t i = 1; i < w; i++)
                    x[i] = (unsigned char)(x[i] + x[i - 1]);
            }
            break;
        default:
            return 0;
        }
        up = x;
    }
    return 1;
}

PyDoc_STRVAR(unfilter_gray8_doc,
             "unfilter_gray8(buf, h, w) -> bool\n\n"
             "Undo the row filters of h rows of (filter byte + w bytes) in the writable "
             "buffer buf, in place; False when a filter byte is not 0-4.");

static PyObject *unfilter_gray8(PyObject *self, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t h, w;
    int ok;
    (void)self;
    if (!PyArg_ParseTuple(args, "w*nn", &view, &h, &w))
        return NULL;
    if (h < 0 || w < 1 || (h && w + 1 > PY_SSIZE_T_MAX / h) || view.len != h * (w + 1)) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "buffer size is not h * (w + 1)");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    ok = unfilter((unsigned char *)view.buf, h, w);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    return PyBool_FromLong(ok);
}

static PyMethodDef methods[] = {
    {"unfilter_gray8", unfilter_gray8, METH_VARARGS, unfilter_gray8_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_unfilter", "PNG row unfiltering at C speed (see pngcodec).", -1,
    methods,
};

PyMODINIT_FUNC PyInit__unfilter(void)
{
    return PyModule_Create(&module);
}
