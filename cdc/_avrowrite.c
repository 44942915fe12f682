/*
 * cdc._avrowrite: the C twin of cdc.schemas.fastwrite's compiled writers for flat Avro records.
 *
 * A writer is built once per schema from a plan that cdc/schemas/fastwrite.py derives from the
 * schema while it compiles its Python writer (the same decisions, made once: primitives,
 * [null, X] unions of them, enums, fixed and the logical types it models). Calling it with a
 * record returns the prefix + the Avro body, byte for byte what the Python writer returns, and
 * it raises where the Python writer raises, with the same exception class: the plan's
 * _Unmodelled for a value not modelled (the caller, cdc.schemas.wire.WireEncoder, then encodes
 * the record with fastavro), KeyError for a missing field, OverflowError for a double too large
 * for a float (struct.pack's error: both use PyFloat_Pack4), UnicodeEncodeError for a lone
 * surrogate. The unit tests run both writers on the same records, valid and invalid.
 *
 * Conversions whose exact semantics live in Python objects stay Python: the decimal encoders are
 * the plan's callables, str() of a uuid.UUID is its own __str__, and an aware datetime in a zone
 * other than the epoch's is subtracted from the epoch by datetime itself (its tzinfo's utcoffset,
 * fold included). Only integer arithmetic that datetime itself does is done here: the wall-clock
 * difference of two datetimes that share one tzinfo object (datetime ignores the offsets then),
 * a date's ordinal, a time's microseconds, and timedelta's floor division.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <datetime.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

enum kind {
    K_NULL = 0,
    K_BOOLEAN = 1,
    K_INT = 2,
    K_LONG = 3,
    K_FLOAT = 4,
    K_DOUBLE = 5,
    K_STRING = 6,
    K_UUID = 7,          /* a str, or a uuid.UUID written as str(v) */
    K_BYTES = 8,
    K_BYTES_DECIMAL = 9, /* bytes, or a Decimal through the field's encoder */
    K_FIXED = 10,
    K_FIXED_DECIMAL = 11, /* fixed, or a Decimal through the field's encoder */
    K_ENUM = 12,
    K_DATE = 13,        /* int: an int, or a date (exactly) */
    K_TIME_MILLIS = 14, /* int: an int, or a time */
    K_TIME_MICROS = 15, /* long: an int, or a time */
    K_TIMESTAMP_MILLIS = 16, /* long: an int, or an aware datetime */
    K_TIMESTAMP_MICROS = 17,
    K_LOCAL_TIMESTAMP_MILLIS = 18, /* long: an int, or any datetime's wall clock */
    K_LOCAL_TIMESTAMP_MICROS = 19,
    K_LAST = K_LOCAL_TIMESTAMP_MICROS,
};

typedef struct {
    PyObject *name;  /* the field's name: the dict key */
    int kind;        /* enum kind */
    int null_index;  /* -1: not a union; 0 or 1: the index of the null branch */
    Py_ssize_t size; /* a fixed's size */
    PyObject *extra; /* NULL, the decimal encoder (a callable) or the enum's symbols (a dict) */
} Field;

typedef struct {
    PyObject_VAR_HEAD
    vectorcallfunc vectorcall;
    PyObject *prefix;       /* bytes written first */
    PyObject *unmodelled;   /* the exception class that hands the record to fastavro */
    PyObject *uuid_type;    /* uuid.UUID */
    PyObject *decimal_type; /* decimal.Decimal */
    PyObject *epoch;        /* 1970-01-01 00:00 UTC, aware */
    PyObject *epoch_tzinfo; /* its tzinfo */
    int64_t epoch_wall_us;  /* its wall clock in microseconds since 0001-01-01 */
    int64_t days_shift;     /* date(1970, 1, 1).toordinal() */
    Field fields[1];
} Writer;

static const int64_t US_PER_DAY = 86400000000LL;

/* The output: a small buffer on the stack, moved to the heap when a record outgrows it. */
typedef struct {
    char *data;
    Py_ssize_t len;
    Py_ssize_t cap;
    char local[512];
} Out;

static int
out_reserve(Out *out, Py_ssize_t more)
{
    if (out->cap - out->len >= more) {
        return 0;
    }
    if (more > PY_SSIZE_T_MAX / 2 - out->len) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t cap = out->cap * 2;
    if (cap < out->len + more) {
        cap = out->len + more;
    }
    char *data;
    if (out->data == out->local) {
        data = PyMem_Malloc((size_t)cap);
        if (data != NULL) {
            memcpy(data, out->local, (size_t)out->len);
        }
    }
    else {
        data = PyMem_Realloc(out->data, (size_t)cap);
    }
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    out->data = data;
    out->cap = cap;
    return 0;
}

static int
out_write(Out *out, const char *bytes, Py_ssize_t n)
{
    if (out_reserve(out, n) < 0) {
        return -1;
    }
    memcpy(out->data + out->len, bytes, (size_t)n);
    out->len += n;
    return 0;
}

/* An unsigned varint (LEB128): the zig-zag of a long, a length shifted left, an enum index. */
static int
out_varint(Out *out, uint64_t n)
{
    if (out_reserve(out, 10) < 0) {
        return -1;
    }
    unsigned char *p = (unsigned char *)out->data + out->len;
    while (n >= 0x80) {
        *p++ = (unsigned char)((n & 0x7F) | 0x80);
        n >>= 7;
    }
    *p++ = (unsigned char)n;
    out->len = (char *)p - out->data;
    return 0;
}

static int
out_long(Out *out, int64_t v)
{
    /* (v << 1) ^ (v >> 63), in unsigned arithmetic */
    return out_varint(out, ((uint64_t)v << 1) ^ (uint64_t)(v >> 63));
}

static int
out_sized(Out *out, const char *bytes, Py_ssize_t n)
{
    if (out_varint(out, (uint64_t)n << 1) < 0) {
        return -1;
    }
    return out_write(out, bytes, n);
}

static int
unmodelled(Writer *self)
{
    PyErr_SetNone(self->unmodelled);
    return -1;
}

/* date.toordinal() of a proleptic Gregorian date: datetime's own arithmetic. */
static int64_t
ordinal(int y, int m, int d)
{
    static const int before_month[13] = {0, 0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334};
    int64_t years = y - 1;
    int64_t days = years * 365 + years / 4 - years / 100 + years / 400 + before_month[m] + d;
    if (m > 2 && (y % 4 == 0 && (y % 100 != 0 || y % 400 == 0))) {
        days += 1;
    }
    return days;
}

/* A datetime's wall clock (its tzinfo ignored) in microseconds since 0001-01-01. */
static int64_t
wall_us(PyObject *v)
{
    int64_t days = ordinal(PyDateTime_GET_YEAR(v), PyDateTime_GET_MONTH(v), PyDateTime_GET_DAY(v));
    int64_t seconds = (PyDateTime_DATE_GET_HOUR(v) * 60 + PyDateTime_DATE_GET_MINUTE(v)) * 60
                      + PyDateTime_DATE_GET_SECOND(v);
    return (days * 86400 + seconds) * 1000000 + PyDateTime_DATE_GET_MICROSECOND(v);
}

/* us // 1000, floored as timedelta // timedelta(milliseconds=1) floors. */
static int64_t
floor_millis(int64_t us)
{
    int64_t q = us / 1000;
    return us % 1000 < 0 ? q - 1 : q;
}

/* (v - epoch) in microseconds for an aware datetime. The same tzinfo object as the epoch's:
 * datetime subtracts the wall clocks (no utcoffset call), done here. Any other zone: datetime
 * subtracts (calling the zone's utcoffset, fold included), then the timedelta is counted here. */
static int
since_epoch_us(Writer *self, PyObject *v, int64_t *us)
{
    if (PyDateTime_DATE_GET_TZINFO(v) == self->epoch_tzinfo) {
        *us = wall_us(v) - self->epoch_wall_us;
        return 0;
    }
    PyObject *delta = PyNumber_Subtract(v, self->epoch);
    if (delta == NULL) {
        return -1;
    }
    if (!PyDelta_Check(delta)) {
        Py_DECREF(delta);
        PyErr_SetString(PyExc_TypeError, "datetime - datetime did not give a timedelta");
        return -1;
    }
    int64_t days = PyDateTime_DELTA_GET_DAYS(delta);
    int64_t seconds = PyDateTime_DELTA_GET_SECONDS(delta);
    int64_t micros = PyDateTime_DELTA_GET_MICROSECONDS(delta);
    Py_DECREF(delta);
    /* Two datetimes of years 1..9999 with offsets under a day are < 3.7 million days apart, so
     * this never overflows; were it to, the Python writer's int would not either: refuse. */
    int64_t total;
    if (__builtin_mul_overflow(days, US_PER_DAY, &total)
        || __builtin_add_overflow(total, seconds * 1000000 + micros, &total)) {
        PyErr_SetString(PyExc_OverflowError, "a datetime difference beyond 64 bits");
        return -1;
    }
    *us = total;
    return 0;
}

/* An exact int within [low, high]; 1: written, 0: not an int (the caller decides), -1: error. */
static int
write_int(Writer *self, Out *out, PyObject *v, int64_t low, int64_t high)
{
    if (!PyLong_CheckExact(v)) {
        return 0;
    }
    int overflow;
    long long n = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (n == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (overflow || n < low || n > high) {
        return unmodelled(self);
    }
    return out_long(out, (int64_t)n) < 0 ? -1 : 1;
}

/* A str as UTF-8 (str.encode()'s UnicodeEncodeError for a lone surrogate), length first. The
 * UTF-8 of a non-ASCII str is made and dropped, not cached in the str as PyUnicode_AsUTF8 does. */
static int
write_str(Out *out, PyObject *s)
{
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(s) < 0) { /* a legacy str; every str is ready from 3.12 on */
        return -1;
    }
#endif
    if (PyUnicode_IS_ASCII(s)) {
        return out_sized(out, (const char *)PyUnicode_DATA(s), PyUnicode_GET_LENGTH(s));
    }
    PyObject *b = PyUnicode_AsUTF8String(s);
    if (b == NULL) {
        return -1;
    }
    int r = out_sized(out, PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b));
    Py_DECREF(b);
    return r;
}

/* A Decimal through the field's Python encoder (which raises _Unmodelled itself); its bytes. */
static PyObject *
encode_decimal(const Field *f, PyObject *v)
{
    PyObject *b = PyObject_CallOneArg(f->extra, v);
    if (b != NULL && !PyBytes_Check(b)) {
        Py_DECREF(b);
        PyErr_SetString(PyExc_TypeError, "a decimal encoder must return bytes");
        return NULL;
    }
    return b;
}

static int
write_value(Writer *self, const Field *f, Out *out, PyObject *v)
{
    int r;
    switch (f->kind) {
    case K_NULL:
        return v == Py_None ? 0 : unmodelled(self);
    case K_BOOLEAN:
        if (v != Py_True && v != Py_False) {
            return unmodelled(self);
        }
        return out_write(out, v == Py_True ? "\1" : "\0", 1);
    case K_INT:
    case K_LONG:
        r = f->kind == K_INT ? write_int(self, out, v, INT32_MIN, INT32_MAX)
                             : write_int(self, out, v, INT64_MIN, INT64_MAX);
        return r == 0 ? unmodelled(self) : (r < 0 ? -1 : 0);
    case K_FLOAT:
    case K_DOUBLE: {
        if (!PyFloat_CheckExact(v)) {
            return unmodelled(self);
        }
        if (out_reserve(out, 8) < 0) {
            return -1;
        }
        double d = PyFloat_AS_DOUBLE(v);
        char *p = out->data + out->len;
        /* struct.pack("<f") is PyFloat_Pack4: the same bytes, the same OverflowError */
        if ((f->kind == K_FLOAT ? PyFloat_Pack4(d, p, 1) : PyFloat_Pack8(d, p, 1)) < 0) {
            return -1;
        }
        out->len += f->kind == K_FLOAT ? 4 : 8;
        return 0;
    }
    case K_STRING:
        return PyUnicode_CheckExact(v) ? write_str(out, v) : unmodelled(self);
    case K_UUID: {
        if (PyUnicode_CheckExact(v)) {
            return write_str(out, v);
        }
        if (Py_TYPE(v) != (PyTypeObject *)self->uuid_type) {
            return unmodelled(self);
        }
        PyObject *s = PyObject_Str(v);
        if (s == NULL) {
            return -1;
        }
        r = write_str(out, s);
        Py_DECREF(s);
        return r;
    }
    case K_BYTES:
        if (!PyBytes_CheckExact(v)) {
            return unmodelled(self);
        }
        return out_sized(out, PyBytes_AS_STRING(v), PyBytes_GET_SIZE(v));
    case K_BYTES_DECIMAL:
    case K_FIXED_DECIMAL:
        if (Py_TYPE(v) == (PyTypeObject *)self->decimal_type) {
            PyObject *b = encode_decimal(f, v);
            if (b == NULL) {
                return -1;
            }
            /* the fixed encoder gives exactly the size (or raises): written as is */
            r = f->kind == K_BYTES_DECIMAL ? out_sized(out, PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b))
                                           : out_write(out, PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b));
            Py_DECREF(b);
            return r;
        }
        if (f->kind == K_BYTES_DECIMAL) {
            if (!PyBytes_CheckExact(v)) {
                return unmodelled(self);
            }
            return out_sized(out, PyBytes_AS_STRING(v), PyBytes_GET_SIZE(v));
        }
        /* fall through - not a Decimal: bytes of the fixed's size */
    case K_FIXED:
        if (!PyBytes_CheckExact(v) || PyBytes_GET_SIZE(v) != f->size) {
            return unmodelled(self);
        }
        return out_write(out, PyBytes_AS_STRING(v), f->size);
    case K_ENUM: {
        if (!PyUnicode_CheckExact(v)) {
            return unmodelled(self);
        }
        PyObject *index = PyDict_GetItemWithError(f->extra, v);
        if (index == NULL) {
            return PyErr_Occurred() ? -1 : unmodelled(self);
        }
        Py_ssize_t n = PyLong_AsSsize_t(index);
        if (n == -1 && PyErr_Occurred()) {
            return -1;
        }
        return out_varint(out, (uint64_t)n << 1);
    }
    case K_DATE:
        r = write_int(self, out, v, INT32_MIN, INT32_MAX);
        if (r != 0) {
            return r < 0 ? -1 : 0;
        }
        if (!PyDate_CheckExact(v)) {
            return unmodelled(self);
        }
        return out_long(
            out, ordinal(PyDateTime_GET_YEAR(v), PyDateTime_GET_MONTH(v), PyDateTime_GET_DAY(v)) - self->days_shift
        );
    case K_TIME_MILLIS:
    case K_TIME_MICROS: {
        r = f->kind == K_TIME_MILLIS ? write_int(self, out, v, INT32_MIN, INT32_MAX)
                                     : write_int(self, out, v, INT64_MIN, INT64_MAX);
        if (r != 0) {
            return r < 0 ? -1 : 0;
        }
        if (!PyTime_CheckExact(v)) {
            return unmodelled(self);
        }
        /* a time's zone is ignored, as fastavro ignores it */
        int64_t us = ((int64_t)(PyDateTime_TIME_GET_HOUR(v) * 60 + PyDateTime_TIME_GET_MINUTE(v)) * 60
                      + PyDateTime_TIME_GET_SECOND(v))
                         * 1000000
                     + PyDateTime_TIME_GET_MICROSECOND(v);
        return out_long(out, f->kind == K_TIME_MILLIS ? us / 1000 : us);
    }
    case K_TIMESTAMP_MILLIS:
    case K_TIMESTAMP_MICROS:
    case K_LOCAL_TIMESTAMP_MILLIS:
    case K_LOCAL_TIMESTAMP_MICROS: {
        r = write_int(self, out, v, INT64_MIN, INT64_MAX);
        if (r != 0) {
            return r < 0 ? -1 : 0;
        }
        if (!PyDateTime_CheckExact(v)) {
            return unmodelled(self);
        }
        int64_t us;
        if (f->kind == K_LOCAL_TIMESTAMP_MILLIS || f->kind == K_LOCAL_TIMESTAMP_MICROS) {
            /* v.replace(tzinfo=epoch's) - epoch: the wall clocks' difference */
            us = wall_us(v) - self->epoch_wall_us;
        }
        else {
            /* a naive datetime fastavro reads in the local zone: fastavro's */
            if (PyDateTime_DATE_GET_TZINFO(v) == Py_None) {
                return unmodelled(self);
            }
            if (since_epoch_us(self, v, &us) < 0) {
                return -1;
            }
        }
        int millis = f->kind == K_TIMESTAMP_MILLIS || f->kind == K_LOCAL_TIMESTAMP_MILLIS;
        return out_long(out, millis ? floor_millis(us) : us);
    }
    default:
        PyErr_Format(PyExc_SystemError, "unknown field kind %d", f->kind);
        return -1;
    }
}

static PyObject *
writer_write(Writer *self, PyObject *record)
{
    /* a dict exactly: fastavro also takes other mappings, and a missing key means its default */
    if (!PyDict_CheckExact(record)) {
        unmodelled(self);
        return NULL;
    }
    Out out;
    out.data = out.local;
    out.len = 0;
    out.cap = (Py_ssize_t)sizeof(out.local);
    PyObject *result = NULL;
    if (out_write(&out, PyBytes_AS_STRING(self->prefix), PyBytes_GET_SIZE(self->prefix)) < 0) {
        goto done;
    }
    for (Py_ssize_t i = 0; i < Py_SIZE(self); i++) {
        const Field *f = &self->fields[i];
        PyObject *v = PyDict_GetItemWithError(record, f->name);
        if (v == NULL) {
            if (!PyErr_Occurred()) {
                PyErr_SetObject(PyExc_KeyError, f->name); /* record[name]: fastavro handles defaults */
            }
            goto done;
        }
        /* owned while written: a decimal encoder, str() or utcoffset() may change the record */
        Py_INCREF(v);
        int r;
        if (f->null_index >= 0 && v == Py_None) {
            r = out_write(&out, f->null_index ? "\2" : "\0", 1);
        }
        else if (f->null_index >= 0) {
            r = out_write(&out, f->null_index ? "\0" : "\2", 1);
            if (r == 0) {
                r = write_value(self, f, &out, v);
            }
        }
        else {
            r = write_value(self, f, &out, v);
        }
        Py_DECREF(v);
        if (r < 0) {
            goto done;
        }
    }
    result = PyBytes_FromStringAndSize(out.data, out.len);
done:
    if (out.data != out.local) {
        PyMem_Free(out.data);
    }
    return result;
}

/* writer(record) -> bytes */
static PyObject *
writer_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (PyVectorcall_NARGS(nargsf) != 1 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0)) {
        PyErr_SetString(PyExc_TypeError, "a writer takes one positional argument: the record");
        return NULL;
    }
    return writer_write((Writer *)callable, args[0]);
}

static void
writer_dealloc(Writer *self)
{
    for (Py_ssize_t i = 0; i < Py_SIZE(self); i++) {
        Py_XDECREF(self->fields[i].name);
        Py_XDECREF(self->fields[i].extra);
    }
    Py_XDECREF(self->prefix);
    Py_XDECREF(self->unmodelled);
    Py_XDECREF(self->uuid_type);
    Py_XDECREF(self->decimal_type);
    Py_XDECREF(self->epoch);
    Py_XDECREF(self->epoch_tzinfo);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject WriterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "cdc._avrowrite.Writer",
    .tp_doc = PyDoc_STR("A compiled writer of one flat Avro record schema: writer(record) -> bytes."),
    .tp_basicsize = offsetof(Writer, fields),
    .tp_itemsize = sizeof(Field),
    .tp_dealloc = (destructor)writer_dealloc,
    .tp_vectorcall_offset = offsetof(Writer, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL,
};

/* make_writer(fields, prefix, unmodelled, uuid_type, decimal_type, epoch, days_shift); fields: a
 * sequence of (name, kind, null_index, size, extra or None) tuples. */
static PyObject *
make_writer(PyObject *module, PyObject *args)
{
    PyObject *fields, *prefix, *unmodelled_type, *uuid_type, *decimal_type, *epoch;
    long long days_shift;
    if (!PyArg_ParseTuple(args, "OO!OO!O!O!L:make_writer", &fields, &PyBytes_Type, &prefix, &unmodelled_type,
                          &PyType_Type, &uuid_type, &PyType_Type, &decimal_type, PyDateTimeAPI->DateTimeType,
                          &epoch, &days_shift)) {
        return NULL;
    }
    if (!PyExceptionClass_Check(unmodelled_type)) {
        PyErr_SetString(PyExc_TypeError, "unmodelled must be an exception class");
        return NULL;
    }
    if (!PyDateTime_CheckExact(epoch) || PyDateTime_DATE_GET_TZINFO(epoch) == Py_None) {
        PyErr_SetString(PyExc_TypeError, "the epoch must be an aware datetime");
        return NULL;
    }
    PyObject *seq = PySequence_Fast(fields, "fields must be a sequence");
    if (seq == NULL) {
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n == 0) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "a record needs at least one field");
        return NULL;
    }
    Writer *self = PyObject_NewVar(Writer, &WriterType, n);
    if (self == NULL) {
        Py_DECREF(seq);
        return NULL;
    }
    self->vectorcall = writer_vectorcall;
    for (Py_ssize_t i = 0; i < n; i++) {
        self->fields[i].name = NULL;
        self->fields[i].extra = NULL;
    }
    self->prefix = Py_NewRef(prefix);
    self->unmodelled = Py_NewRef(unmodelled_type);
    self->uuid_type = Py_NewRef(uuid_type);
    self->decimal_type = Py_NewRef(decimal_type);
    self->epoch = Py_NewRef(epoch);
    self->epoch_tzinfo = Py_NewRef(PyDateTime_DATE_GET_TZINFO(epoch));
    self->epoch_wall_us = wall_us(epoch);
    self->days_shift = days_shift;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *name, *extra;
        int kind, null_index;
        Py_ssize_t size;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "UiinO:field", &name, &kind, &null_index, &size,
                              &extra)) {
            goto error;
        }
        if (kind < 0 || kind > K_LAST || null_index < -1 || null_index > 1 || size < 0) {
            PyErr_Format(PyExc_ValueError, "field %zd: kind %d, null index %d, size %zd", i, kind, null_index, size);
            goto error;
        }
        int wants_dict = kind == K_ENUM;
        int wants_callable = kind == K_BYTES_DECIMAL || kind == K_FIXED_DECIMAL;
        if ((wants_dict && !PyDict_CheckExact(extra)) || (wants_callable && !PyCallable_Check(extra))
            || (!wants_dict && !wants_callable && extra != Py_None)) {
            PyErr_Format(PyExc_TypeError, "field %zd: kind %d takes no such extra", i, kind);
            goto error;
        }
        Py_INCREF(name);
        PyUnicode_InternInPlace(&name);
        self->fields[i].name = name;
        self->fields[i].kind = kind;
        self->fields[i].null_index = null_index;
        self->fields[i].size = size;
        self->fields[i].extra = extra == Py_None ? NULL : Py_NewRef(extra);
    }
    Py_DECREF(seq);
    return (PyObject *)self;
error:
    Py_DECREF(seq);
    Py_DECREF(self);
    return NULL;
}

static PyMethodDef module_methods[] = {
    {"make_writer", make_writer, METH_VARARGS,
     PyDoc_STR("make_writer(fields, prefix, unmodelled, uuid_type, decimal_type, epoch, days_shift) -> Writer")},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "cdc._avrowrite",
    .m_doc = PyDoc_STR("C writers of flat Avro records (the twin of cdc.schemas.fastwrite)."),
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__avrowrite(void)
{
    PyDateTime_IMPORT;
    if (PyDateTimeAPI == NULL) {
        return NULL;
    }
    if (PyType_Ready(&WriterType) < 0) {
        return NULL;
    }
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL) {
        return NULL;
    }
    static const struct {
        const char *name;
        int value;
    } kinds[] = {
        {"NULL", K_NULL},
        {"BOOLEAN", K_BOOLEAN},
        {"INT", K_INT},
        {"LONG", K_LONG},
        {"FLOAT", K_FLOAT},
        {"DOUBLE", K_DOUBLE},
        {"STRING", K_STRING},
        {"UUID", K_UUID},
        {"BYTES", K_BYTES},
        {"BYTES_DECIMAL", K_BYTES_DECIMAL},
        {"FIXED", K_FIXED},
        {"FIXED_DECIMAL", K_FIXED_DECIMAL},
        {"ENUM", K_ENUM},
        {"DATE", K_DATE},
        {"TIME_MILLIS", K_TIME_MILLIS},
        {"TIME_MICROS", K_TIME_MICROS},
        {"TIMESTAMP_MILLIS", K_TIMESTAMP_MILLIS},
        {"TIMESTAMP_MICROS", K_TIMESTAMP_MICROS},
        {"LOCAL_TIMESTAMP_MILLIS", K_LOCAL_TIMESTAMP_MILLIS},
        {"LOCAL_TIMESTAMP_MICROS", K_LOCAL_TIMESTAMP_MICROS},
    };
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        if (PyModule_AddIntConstant(module, kinds[i].name, kinds[i].value) < 0) {
            Py_DECREF(module);
            return NULL;
        }
    }
    if (PyModule_AddObjectRef(module, "Writer", (PyObject *)&WriterType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
