/*
 * cdc._avroread: the C twin of cdc.sink.fastread's compiled readers for flat Avro records.
 *
 * A reader is built once per schema from a plan that cdc/sink/fastread.py derives from the
 * schema (the same schemas it compiles to Python: primitives, [null, X] unions of them, and the
 * decimal, timestamp-*, local-timestamp-*, date and uuid logical types). Calling it with
 * (data, pos) returns (the record as a dict, the position after it), exactly the values and
 * types of the pure-Python reader; the unit tests read the same bytes with both.
 *
 * Conversions whose exact semantics live in Python objects (the decimal's context rounding where
 * digits exceed the precision, the uuid's parsing) are the plan's callables, called with the base
 * value; dates are date.fromordinal as in Python. Timestamps are built from their fields (the
 * value of epoch + timedelta, OverflowError outside years 1-9999 as there), and a decimal that
 * fits in 64 bits and its precision is parsed from "<unscaled>E<-scale>" (no rounding: the
 * same digits and exponent). The tests compare both readers on every logical type's edges.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <datetime.h>
#include <stddef.h>
#include <stdint.h>

enum kind {
    K_BOOLEAN = 0,
    K_LONG = 1, /* int and long: both zig-zag varints */
    K_FLOAT = 2,
    K_DOUBLE = 3,
    K_BYTES = 4,
    K_STRING = 5,
    K_TIMESTAMP_MILLIS = 6,
    K_TIMESTAMP_MICROS = 7,
    K_LOCAL_TIMESTAMP_MILLIS = 8,
    K_LOCAL_TIMESTAMP_MICROS = 9,
    K_DATE = 10,
    K_DECIMAL = 11, /* bytes; the plan's precision and scale; convert for what the fast path leaves */
    K_LAST = K_DECIMAL,
};

typedef struct {
    PyObject *name;    /* the field's name: the dict key */
    int kind;          /* enum kind */
    int null_index;    /* -1: not a union; 0 or 1: the index of the null branch */
    PyObject *convert; /* NULL or a callable applied to the base value (decimal, uuid) */
    int precision;     /* K_DECIMAL */
    int scale;         /* K_DECIMAL */
} Field;

typedef struct {
    PyObject_VAR_HEAD
    vectorcallfunc vectorcall;
    PyObject *fromordinal; /* datetime.date.fromordinal */
    PyObject *decimal;     /* decimal.Decimal */
    long long days_shift;  /* date(1970, 1, 1).toordinal() */
    Field fields[1];
} Reader;

static const int64_t US_PER_DAY = 86400000000LL;

/* A zig-zag varint at *pos; IndexError at the end of the bytes (as data[pos] in Python),
 * ValueError for more than 64 bits. */
static int
read_long(const unsigned char *data, Py_ssize_t len, Py_ssize_t *pos, int64_t *out)
{
    Py_ssize_t i = *pos;
    if (i >= len) {
        PyErr_SetString(PyExc_IndexError, "index out of range");
        return -1;
    }
    unsigned int b = data[i++];
    if (b < 0x80) {
        *out = (int64_t)(b >> 1) ^ -(int64_t)(b & 1);
        *pos = i;
        return 0;
    }
    uint64_t n = b & 0x7F;
    int shift = 7;
    while (b & 0x80) {
        if (i >= len) {
            PyErr_SetString(PyExc_IndexError, "index out of range");
            return -1;
        }
        b = data[i++];
        if (shift > 63 || (shift == 63 && b > 1)) {
            PyErr_SetString(PyExc_ValueError, "a varint longer than 64 bits");
            return -1;
        }
        n |= (uint64_t)(b & 0x7F) << shift;
        shift += 7;
    }
    *out = (int64_t)(n >> 1) ^ -(int64_t)(n & 1);
    *pos = i;
    return 0;
}

/* A length-prefixed byte string: its start and size; EOFError when it is cut short. */
static int
read_sized(const unsigned char *data, Py_ssize_t len, Py_ssize_t *pos, Py_ssize_t *start, Py_ssize_t *size)
{
    int64_t n;
    if (read_long(data, len, pos, &n) < 0) {
        return -1;
    }
    if (n < 0 || n > (int64_t)(len - *pos)) {
        PyErr_Format(PyExc_EOFError, "expected %lld bytes", (long long)n);
        return -1;
    }
    *start = *pos;
    *size = (Py_ssize_t)n;
    *pos += (Py_ssize_t)n;
    return 0;
}

/* The proleptic Gregorian date of a day count since 1970-01-01 (exact for any int64 input
 * within +-2**40 days; callers check the year range). */
static void
civil_from_days(int64_t days, int64_t *year, int *month, int *day)
{
    days += 719468;
    int64_t era = (days >= 0 ? days : days - 146096) / 146097;
    int64_t doe = days - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *day = (int)(doy - (153 * mp + 2) / 5 + 1);
    *month = (int)(mp < 10 ? mp + 3 : mp - 9);
    *year = yoe + era * 400 + (*month <= 2);
}

/* The datetime of ``us`` microseconds after 1970-01-01 00:00 (UTC when aware): the value of
 * epoch + timedelta(microseconds=us), built directly; OverflowError outside years 1-9999, as
 * that addition raises. */
static PyObject *
timestamp(int64_t us, int aware)
{
    int64_t days = us / US_PER_DAY, rem = us % US_PER_DAY;
    if (rem < 0) {
        rem += US_PER_DAY;
        days -= 1;
    }
    int64_t year = 0;
    int month = 0, day = 0;
    if (days > -1000000000LL && days < 1000000000LL) {
        civil_from_days(days, &year, &month, &day);
    }
    if (year < 1 || year > 9999) {
        PyErr_SetString(PyExc_OverflowError, "date value out of range");
        return NULL;
    }
    int64_t seconds = rem / 1000000;
    return PyDateTimeAPI->DateTime_FromDateAndTime(
        (int)year, month, day, (int)(seconds / 3600), (int)(seconds / 60 % 60), (int)(seconds % 60),
        (int)(rem % 1000000), aware ? PyDateTime_TimeZone_UTC : Py_None, PyDateTimeAPI->DateTimeType);
}

/* A decimal whose unscaled value fits in 64 bits and in the precision (at most 18 digits) is
 * exactly Decimal("<unscaled>E<-scale>"): what the context's create_decimal and scaleb give
 * when nothing rounds. Anything else goes to the plan's Python conversion. */
static PyObject *
read_decimal(Reader *self, const Field *f, const unsigned char *raw, Py_ssize_t size)
{
    if (size <= 8 && f->precision <= 18) {
        int64_t n = size > 0 && (raw[0] & 0x80) ? -1 : 0;
        for (Py_ssize_t i = 0; i < size; i++) {
            n = (int64_t)((uint64_t)n << 8 | raw[i]);
        }
        uint64_t magnitude = n < 0 ? -(uint64_t)n : (uint64_t)n;
        uint64_t limit = 1;
        for (int i = 0; i < f->precision; i++) {
            limit *= 10;
        }
        if (magnitude < limit) {
            PyObject *text = PyUnicode_FromFormat("%lldE%d", (long long)n, -f->scale);
            if (text == NULL) {
                return NULL;
            }
            PyObject *value = PyObject_CallOneArg(self->decimal, text);
            Py_DECREF(text);
            return value;
        }
    }
    PyObject *bytes = PyBytes_FromStringAndSize((const char *)raw, size);
    if (bytes == NULL) {
        return NULL;
    }
    PyObject *value = PyObject_CallOneArg(f->convert, bytes);
    Py_DECREF(bytes);
    return value;
}

static PyObject *
read_value(Reader *self, const Field *f, const unsigned char *data, Py_ssize_t len, Py_ssize_t *pos)
{
    int64_t n;
    Py_ssize_t start, size;
    PyObject *value;
    switch (f->kind) {
    case K_BOOLEAN:
        if (*pos >= len) {
            PyErr_SetString(PyExc_IndexError, "index out of range");
            return NULL;
        }
        value = PyBool_FromLong(data[(*pos)++] != 0);
        break;
    case K_LONG:
        if (read_long(data, len, pos, &n) < 0) {
            return NULL;
        }
        value = PyLong_FromLongLong(n);
        break;
    case K_FLOAT:
    case K_DOUBLE: {
        Py_ssize_t width = f->kind == K_FLOAT ? 4 : 8;
        if (len - *pos < width) {
            PyErr_Format(PyExc_EOFError, "expected %zd bytes", width);
            return NULL;
        }
        double d = f->kind == K_FLOAT ? PyFloat_Unpack4((const char *)data + *pos, 1)
                                      : PyFloat_Unpack8((const char *)data + *pos, 1);
        if (d == -1.0 && PyErr_Occurred()) {
            return NULL;
        }
        *pos += width;
        value = PyFloat_FromDouble(d);
        break;
    }
    case K_BYTES:
        if (read_sized(data, len, pos, &start, &size) < 0) {
            return NULL;
        }
        value = PyBytes_FromStringAndSize((const char *)data + start, size);
        break;
    case K_STRING:
        if (read_sized(data, len, pos, &start, &size) < 0) {
            return NULL;
        }
        value = PyUnicode_DecodeUTF8((const char *)data + start, size, NULL);
        break;
    case K_TIMESTAMP_MILLIS:
    case K_LOCAL_TIMESTAMP_MILLIS:
    case K_TIMESTAMP_MICROS:
    case K_LOCAL_TIMESTAMP_MICROS: {
        if (read_long(data, len, pos, &n) < 0) {
            return NULL;
        }
        int millis = f->kind == K_TIMESTAMP_MILLIS || f->kind == K_LOCAL_TIMESTAMP_MILLIS;
        int local = f->kind == K_LOCAL_TIMESTAMP_MILLIS || f->kind == K_LOCAL_TIMESTAMP_MICROS;
        int64_t us = n;
        if (millis && __builtin_mul_overflow(n, (int64_t)1000, &us)) {
            PyErr_SetString(PyExc_OverflowError, "date value out of range");
            return NULL;
        }
        return timestamp(us, !local);
    }
    case K_DECIMAL:
        if (read_sized(data, len, pos, &start, &size) < 0) {
            return NULL;
        }
        return read_decimal(self, f, data + start, size);
    case K_DATE: {
        if (read_long(data, len, pos, &n) < 0) {
            return NULL;
        }
        PyObject *ordinal = PyLong_FromLongLong(n);
        if (ordinal == NULL) {
            return NULL;
        }
        PyObject *shift = PyLong_FromLongLong(self->days_shift);
        if (shift == NULL) {
            Py_DECREF(ordinal);
            return NULL;
        }
        PyObject *shifted = PyNumber_Add(ordinal, shift); /* a Python int: never overflows here */
        Py_DECREF(ordinal);
        Py_DECREF(shift);
        if (shifted == NULL) {
            return NULL;
        }
        value = PyObject_CallOneArg(self->fromordinal, shifted);
        Py_DECREF(shifted);
        return value;
    }
    default:
        PyErr_Format(PyExc_SystemError, "unknown field kind %d", f->kind);
        return NULL;
    }
    if (value == NULL || f->convert == NULL) {
        return value;
    }
    PyObject *converted = PyObject_CallOneArg(f->convert, value);
    Py_DECREF(value);
    return converted;
}

static PyObject *
reader_read(Reader *self, const unsigned char *data, Py_ssize_t len, Py_ssize_t pos)
{
    PyObject *record = PyDict_New();
    if (record == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < Py_SIZE(self); i++) {
        const Field *f = &self->fields[i];
        PyObject *value;
        if (f->null_index >= 0) {
            int64_t branch;
            if (read_long(data, len, &pos, &branch) < 0) {
                goto error;
            }
            if (branch == f->null_index) {
                value = Py_NewRef(Py_None);
            }
            else if (branch == 1 - f->null_index) {
                value = read_value(self, f, data, len, &pos);
            }
            else {
                PyErr_Format(PyExc_IndexError, "union branch %lld of 2", (long long)branch);
                goto error;
            }
        }
        else {
            value = read_value(self, f, data, len, &pos);
        }
        if (value == NULL) {
            goto error;
        }
        int failed = PyDict_SetItem(record, f->name, value);
        Py_DECREF(value);
        if (failed < 0) {
            goto error;
        }
    }
    PyObject *end = PyLong_FromSsize_t(pos);
    if (end == NULL) {
        goto error;
    }
    PyObject *result = PyTuple_Pack(2, record, end);
    Py_DECREF(record);
    Py_DECREF(end);
    return result;
error:
    Py_DECREF(record);
    return NULL;
}

/* reader(data, pos) -> (record, end) */
static PyObject *
reader_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Reader *self = (Reader *)callable;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs != 2 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0)) {
        PyErr_SetString(PyExc_TypeError, "a reader takes two positional arguments: (data, pos)");
        return NULL;
    }
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    if (pos == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (pos < 0) {
        PyErr_SetString(PyExc_ValueError, "a negative position");
        return NULL;
    }
    if (PyBytes_CheckExact(args[0])) {
        return reader_read(self, (const unsigned char *)PyBytes_AS_STRING(args[0]), PyBytes_GET_SIZE(args[0]), pos);
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    PyObject *result = reader_read(self, (const unsigned char *)view.buf, view.len, pos);
    PyBuffer_Release(&view);
    return result;
}

static void
reader_dealloc(Reader *self)
{
    for (Py_ssize_t i = 0; i < Py_SIZE(self); i++) {
        Py_XDECREF(self->fields[i].name);
        Py_XDECREF(self->fields[i].convert);
    }
    Py_XDECREF(self->fromordinal);
    Py_XDECREF(self->decimal);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject ReaderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "cdc._avroread.Reader",
    .tp_doc = PyDoc_STR("A compiled reader of one flat Avro record schema: reader(data, pos) -> (record, end)."),
    .tp_basicsize = offsetof(Reader, fields),
    .tp_itemsize = sizeof(Field),
    .tp_dealloc = (destructor)reader_dealloc,
    .tp_vectorcall_offset = offsetof(Reader, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL,
};

/* make_reader(fields, fromordinal, days_shift, decimal); fields: a sequence of
 * (name, kind, null_index, convert or None, precision, scale) tuples. */
static PyObject *
make_reader(PyObject *module, PyObject *args)
{
    PyObject *fields, *fromordinal, *decimal;
    long long days_shift;
    if (!PyArg_ParseTuple(args, "OOLO:make_reader", &fields, &fromordinal, &days_shift, &decimal)) {
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
    Reader *self = PyObject_NewVar(Reader, &ReaderType, n);
    if (self == NULL) {
        Py_DECREF(seq);
        return NULL;
    }
    self->vectorcall = reader_vectorcall;
    for (Py_ssize_t i = 0; i < n; i++) {
        self->fields[i].name = NULL;
        self->fields[i].convert = NULL;
    }
    self->fromordinal = Py_NewRef(fromordinal);
    self->decimal = Py_NewRef(decimal);
    self->days_shift = days_shift;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *name, *convert;
        int kind, null_index, precision, scale;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "UiiOii:field", &name, &kind, &null_index, &convert,
                              &precision, &scale)) {
            goto error;
        }
        if (kind < 0 || kind > K_LAST || null_index < -1 || null_index > 1
            || (kind == K_DECIMAL && (convert == Py_None || precision < 1))) {
            PyErr_Format(PyExc_ValueError, "field %zd: kind %d, null index %d", i, kind, null_index);
            goto error;
        }
        Py_INCREF(name);
        PyUnicode_InternInPlace(&name);
        self->fields[i].name = name;
        self->fields[i].kind = kind;
        self->fields[i].null_index = null_index;
        self->fields[i].convert = convert == Py_None ? NULL : Py_NewRef(convert);
        self->fields[i].precision = precision;
        self->fields[i].scale = scale;
    }
    Py_DECREF(seq);
    return (PyObject *)self;
error:
    Py_DECREF(seq);
    Py_DECREF(self);
    return NULL;
}

static PyMethodDef module_methods[] = {
    {"make_reader", make_reader, METH_VARARGS,
     PyDoc_STR("make_reader(fields, fromordinal, days_shift, decimal) -> Reader")},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "cdc._avroread",
    .m_doc = PyDoc_STR("C readers of flat Avro records (the twin of cdc.sink.fastread)."),
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__avroread(void)
{
    PyDateTime_IMPORT;
    if (PyDateTimeAPI == NULL) {
        return NULL;
    }
    if (PyType_Ready(&ReaderType) < 0) {
        return NULL;
    }
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL) {
        return NULL;
    }
    if (PyModule_AddIntConstant(module, "BOOLEAN", K_BOOLEAN) < 0
        || PyModule_AddIntConstant(module, "LONG", K_LONG) < 0
        || PyModule_AddIntConstant(module, "FLOAT", K_FLOAT) < 0
        || PyModule_AddIntConstant(module, "DOUBLE", K_DOUBLE) < 0
        || PyModule_AddIntConstant(module, "BYTES", K_BYTES) < 0
        || PyModule_AddIntConstant(module, "STRING", K_STRING) < 0
        || PyModule_AddIntConstant(module, "TIMESTAMP_MILLIS", K_TIMESTAMP_MILLIS) < 0
        || PyModule_AddIntConstant(module, "TIMESTAMP_MICROS", K_TIMESTAMP_MICROS) < 0
        || PyModule_AddIntConstant(module, "LOCAL_TIMESTAMP_MILLIS", K_LOCAL_TIMESTAMP_MILLIS) < 0
        || PyModule_AddIntConstant(module, "LOCAL_TIMESTAMP_MICROS", K_LOCAL_TIMESTAMP_MICROS) < 0
        || PyModule_AddIntConstant(module, "DATE", K_DATE) < 0
        || PyModule_AddIntConstant(module, "DECIMAL", K_DECIMAL) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    if (PyModule_AddObjectRef(module, "Reader", (PyObject *)&ReaderType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
