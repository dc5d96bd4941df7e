/* CRC-32 (zlib's) of many short byte strings in one call: the compiled path of
 * seqvault/crc_many.py, which stays the pure-Python (numpy) reference and decides when to call
 * this (tests/format/test_crc_many.py checks both against zlib.crc32).
 *
 * Why compiled: a flush or merge of a million small users checksums eight short strings per
 * segment (the header and one per column). crc_many's GF(2) table trick does it in whole-array
 * numpy steps, but a ~270-byte header has ~100 byte positions that differ between users, each
 * one a gather over every row: about 4 us per segment here, where zlib's crc32 over the same
 * bytes in a C loop costs ~0.2 us (docs/design/realtime.md, "Many-user batches").
 *
 * Plain C against the CPython buffer protocol and zlib; no NumPy C API. Bad arguments (a range
 * past the buffer, buffers of the wrong size) raise ValueError and write nothing.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <zlib.h>

/* Below this many input bytes the GIL is kept: taking it back can cost more than the work. */
#define GIL_RELEASE_BYTES (1 << 20)

static int need_size(Py_buffer *b, Py_ssize_t want, const char *name) {
    if (b->len != want) {
        PyErr_Format(PyExc_ValueError, "%s: %zd bytes, expected %zd", name, b->len, want);
        return -1;
    }
    return 0;
}

/* crc_rows(buf, n, length, out): out[i] = crc32(buf[i*length : (i+1)*length]), uint32 each. */
static PyObject *crc_rows(PyObject *self, PyObject *args) {
    Py_buffer buf, out;
    Py_ssize_t n, length;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*nnw*", &buf, &n, &length, &out)) return NULL;
    PyObject *ret = NULL;
    if (n < 0 || length < 0 || (length > 0 && n > PY_SSIZE_T_MAX / length)) {
        PyErr_SetString(PyExc_ValueError, "crc_rows: bad row count or length");
        goto done;
    }
    if (need_size(&buf, n * length, "crc_rows buf") || need_size(&out, n * 4, "crc_rows out"))
        goto done;
    {
        const Bytef *p = (const Bytef *)buf.buf;
        uint32_t *o = (uint32_t *)out.buf;
        uLong base = crc32(0L, Z_NULL, 0);
        int release = n * length >= GIL_RELEASE_BYTES;
        PyThreadState *ts = release ? PyEval_SaveThread() : NULL;
        for (Py_ssize_t i = 0; i < n; i++)
            o[i] = (uint32_t)crc32(base, p + i * length, (uInt)length);
        if (release) PyEval_RestoreThread(ts);
    }
    ret = Py_None;
    Py_INCREF(ret);
done:
    PyBuffer_Release(&buf);
    PyBuffer_Release(&out);
    return ret;
}

/* crc_ranges(buf, starts, lengths, out): out[i] = crc32(buf[starts[i] : starts[i] + lengths[i]]);
 * starts and lengths are int64 arrays of one size, out a uint32 array of that size. */
static PyObject *crc_ranges(PyObject *self, PyObject *args) {
    Py_buffer buf, starts, lengths, out;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*y*w*", &buf, &starts, &lengths, &out)) return NULL;
    PyObject *ret = NULL;
    Py_ssize_t n = starts.len / 8;
    if (starts.len % 8 || need_size(&lengths, starts.len, "crc_ranges lengths") ||
        need_size(&out, n * 4, "crc_ranges out")) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "crc_ranges: starts is not an int64 array");
        goto done;
    }
    {
        const int64_t *s = (const int64_t *)starts.buf;
        const int64_t *l = (const int64_t *)lengths.buf;
        int64_t total = 0;
        for (Py_ssize_t i = 0; i < n; i++) {
            if (s[i] < 0 || l[i] < 0 || l[i] > UINT32_MAX || s[i] > buf.len - l[i]) {
                PyErr_Format(PyExc_ValueError,
                             "crc_ranges: range %zd (%lld + %lld) is outside the %zd-byte buffer",
                             i, (long long)s[i], (long long)l[i], buf.len);
                goto done;
            }
            total += l[i];
        }
        const Bytef *p = (const Bytef *)buf.buf;
        uint32_t *o = (uint32_t *)out.buf;
        uLong base = crc32(0L, Z_NULL, 0);
        int release = total >= GIL_RELEASE_BYTES;
        PyThreadState *ts = release ? PyEval_SaveThread() : NULL;
        for (Py_ssize_t i = 0; i < n; i++)
            o[i] = (uint32_t)crc32(base, p + s[i], (uInt)l[i]);
        if (release) PyEval_RestoreThread(ts);
    }
    ret = Py_None;
    Py_INCREF(ret);
done:
    PyBuffer_Release(&buf);
    PyBuffer_Release(&starts);
    PyBuffer_Release(&lengths);
    PyBuffer_Release(&out);
    return ret;
}

/* copy_ranges(src, starts, lengths, dst, at): dst[at[i] : at[i] + lengths[i]] =
 * src[starts[i] : starts[i] + lengths[i]] for every i (int64 arrays). Gathers many segments'
 * bytes out of one large read (seqvault/fold.py read_segments): a slice and a join per
 * segment cost ~1 us each in Python, a million of them per many-user flush. Every range is
 * checked against both buffers before anything is copied. */
static PyObject *copy_ranges(PyObject *self, PyObject *args) {
    Py_buffer src, starts, lengths, dst, at;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*y*w*y*", &src, &starts, &lengths, &dst, &at)) return NULL;
    PyObject *ret = NULL;
    Py_ssize_t n = starts.len / 8;
    if (starts.len % 8 || need_size(&lengths, starts.len, "copy_ranges lengths") ||
        need_size(&at, starts.len, "copy_ranges at")) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "copy_ranges: starts is not an int64 array");
        goto done;
    }
    {
        const int64_t *s = (const int64_t *)starts.buf;
        const int64_t *l = (const int64_t *)lengths.buf;
        const int64_t *a = (const int64_t *)at.buf;
        int64_t total = 0;
        for (Py_ssize_t i = 0; i < n; i++) {
            if (s[i] < 0 || l[i] < 0 || a[i] < 0 || s[i] > src.len - l[i] ||
                a[i] > dst.len - l[i]) {
                PyErr_Format(PyExc_ValueError,
                             "copy_ranges: range %zd (%lld + %lld to %lld) is outside the "
                             "%zd-byte source or the %zd-byte destination",
                             i, (long long)s[i], (long long)l[i], (long long)a[i], src.len,
                             dst.len);
                goto done;
            }
            total += l[i];
        }
        const char *p = (const char *)src.buf;
        char *q = (char *)dst.buf;
        int release = total >= GIL_RELEASE_BYTES;
        PyThreadState *ts = release ? PyEval_SaveThread() : NULL;
        for (Py_ssize_t i = 0; i < n; i++) memcpy(q + a[i], p + s[i], (size_t)l[i]);
        if (release) PyEval_RestoreThread(ts);
    }
    ret = Py_None;
    Py_INCREF(ret);
done:
    PyBuffer_Release(&src);
    PyBuffer_Release(&starts);
    PyBuffer_Release(&lengths);
    PyBuffer_Release(&dst);
    PyBuffer_Release(&at);
    return ret;
}

/* record(payload, rec_type, seq, events_before, events): one version-2 log record
 * (docs/format/wal.md, "Record"): crc32 | u32 len | u8 type | u64 seq | u64 events_before |
 * u32 events | payload, little-endian, the crc over everything after it. The Python reference
 * is wal.py's `_record`; both give identical bytes (tests/format/test_wal_records.py). One C
 * call instead of two struct packs, two crc32 calls and a join: ~0.4 us less per append. */
static void le(uint8_t *o, uint64_t v, int n) {
    for (int i = 0; i < n; i++) o[i] = (uint8_t)(v >> (8 * i));
}

static PyObject *record(PyObject *self, PyObject *args) {
    Py_buffer payload;
    PyObject *fields[4];
    (void)self;
    if (!PyArg_ParseTuple(args, "y*O!O!O!O!", &payload, &PyLong_Type, &fields[0], &PyLong_Type,
                          &fields[1], &PyLong_Type, &fields[2], &PyLong_Type, &fields[3]))
        return NULL;
    PyObject *out = NULL;
    unsigned long long v[4]; /* type, seq, events before, events: OverflowError below 0 */
    for (int i = 0; i < 4; i++)
        if ((v[i] = PyLong_AsUnsignedLongLong(fields[i])) == (unsigned long long)-1 &&
            PyErr_Occurred())
            goto done;
    unsigned long long rec_type = v[0], seq = v[1], before = v[2], events = v[3];
    if (payload.len > 0xFFFFFFFFLL || rec_type > 0xFF || events > 0xFFFFFFFFULL) {
        PyErr_SetString(PyExc_ValueError, "record: a field is out of range");
        goto done;
    }
    out = PyBytes_FromStringAndSize(NULL, 29 + payload.len);
    if (!out) goto done;
    uint8_t *o = (uint8_t *)PyBytes_AS_STRING(out);
    le(o + 4, (uint64_t)payload.len, 4);
    o[8] = (uint8_t)rec_type;
    le(o + 9, seq, 8);
    le(o + 17, before, 8);
    le(o + 25, events, 4);
    memcpy(o + 29, payload.buf, (size_t)payload.len);
    le(o, crc32_z(0L, o + 4, (size_t)(25 + payload.len)), 4);
done:
    PyBuffer_Release(&payload);
    return out;
}

static PyMethodDef methods[] = {
    {"record", record, METH_VARARGS,
     "record(payload, rec_type, seq, events_before, events) -> bytes: one version-2 log record "
     "(docs/format/wal.md), byte-identical to wal.py's Python `_record`."},
    {"crc_rows", crc_rows, METH_VARARGS,
     "crc_rows(buf, n, length, out) -> None: zlib CRC-32 of each of the n rows of `length` "
     "bytes of buf into out (uint32 each)."},
    {"crc_ranges", crc_ranges, METH_VARARGS,
     "crc_ranges(buf, starts, lengths, out) -> None: zlib CRC-32 of buf[starts[i] : starts[i] + "
     "lengths[i]] into out[i] (starts, lengths int64; out uint32)."},
    {"copy_ranges", copy_ranges, METH_VARARGS,
     "copy_ranges(src, starts, lengths, dst, at) -> None: copy src[starts[i] : starts[i] + "
     "lengths[i]] to dst[at[i] : ...] for every i (int64 arrays)."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "native_crc",
                                    "CRC-32 of many short strings (seqvault/crc_many.py).", -1,
                                    methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit_native_crc(void) { return PyModule_Create(&module); }
