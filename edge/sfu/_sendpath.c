/* The fast egress's last step in C: SRTP-protect one packet and send it, in one call.

   Theory of operation. edge/sfu/egress.py protects each forwarded copy with libsrtp's
   srtp_protect on the very context aiortc's session uses (pylibsrtp's), then hands the
   datagram to the event loop's transport. Done from Python that is a copy into a cffi
   buffer, a cffi call, a copy out into a new bytes object and the transport's sendto with its
   address conversion: about a third of the copy's cost besides the kernel's (perf, 30 rooms;
   docs/benchmarks.md). A Sender does the same in C for one route: it keeps libsrtp's
   srtp_protect and srtp_protect_rtcp (their addresses, from pylibsrtp's own binding: the
   library is linked into it, not exported), the srtp_t context, a duplicate of the nominated
   pair's socket descriptor and the remote address as a sockaddr, and per packet copies the
   bytes into a static buffer (one thread per worker process), protects them in place and
   sendto()s them. The bytes on the wire are those aiortc would send.

   The duplicate descriptor: the route is checked before every send (egress.current: same
   session, same nominated pair, same DTLS state), but if aioice closed its socket in
   between, the descriptor's number could already name another socket; a dup keeps this
   socket open for as long as the Sender exists, so a number is never reused under it.

   Results of send() / send_rtcp(): n > 0, the protected datagram's length: sent (or dropped
   by the kernel with an error other than would-block: UDP, counted in counts()); -n, it
   was protected but the socket would block: pending() gives it, for the event loop's
   transport to queue; 0, libsrtp refused the packet: nothing sent and libsrtp's state as it
   was (egress.py then takes aiortc's path, which reports that error as it always did).

   An Unprotector is the fast ingress's counterpart (edge/sfu/ingress.py): libsrtp's
   srtp_unprotect and srtp_unprotect_rtcp on the inbound context aiortc's session uses, one
   call per datagram: copied into a static buffer of its own, unprotected in place, returned
   as a new bytes object, or None where libsrtp refuses it (a replay, a forgery, an unknown
   stream: its state as it was, the datagram dropped as aiortc drops it). From Python the
   same took a copy into a cffi buffer, a cffi call and a slice out. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

typedef int (*protect_fn)(void *ctx, void *packet, int *length);

#define BUFFER_SIZE 1500 /* pylibsrtp's own buffer: a longer packet fails there too */

static char buffer[BUFFER_SIZE];
static char inbound[BUFFER_SIZE]; /* the Unprotector's: never the Sender's pending datagram */
static Py_ssize_t pending_length = 0; /* a protected datagram the socket would not take */

typedef struct {
    PyObject_HEAD
    protect_fn protect;
    protect_fn protect_rtcp;
    void *ctx;
    int fd;
    Py_ssize_t rtp_limit;
    Py_ssize_t rtcp_limit;
    struct sockaddr_storage address;
    socklen_t address_length;
    unsigned long long sent;
    unsigned long long errors;
} Sender;

static int
Sender_init(Sender *self, PyObject *args, PyObject *kwds)
{
    static char *keywords[] = {"protect", "protect_rtcp", "ctx", "fd", "host", "port",
                               "rtp_limit", "rtcp_limit", NULL};
    unsigned long long protect, protect_rtcp, ctx;
    int fd, port;
    const char *host;
    Py_ssize_t rtp_limit, rtcp_limit;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "KKKisinn", keywords, &protect, &protect_rtcp,
                                     &ctx, &fd, &host, &port, &rtp_limit, &rtcp_limit))
        return -1;
    if (!protect || !protect_rtcp || !ctx) {
        PyErr_SetString(PyExc_ValueError, "Sender: a null libsrtp function or context");
        return -1;
    }
    if (rtp_limit <= 0 || rtp_limit > BUFFER_SIZE || rtcp_limit <= 0 || rtcp_limit > BUFFER_SIZE) {
        PyErr_Format(PyExc_ValueError, "Sender: packet limits must be 1..%d", BUFFER_SIZE);
        return -1;
    }
    if (port < 0 || port > 65535) {
        PyErr_Format(PyExc_ValueError, "Sender: port %d out of range", port);
        return -1;
    }
    memset(&self->address, 0, sizeof(self->address));
    struct sockaddr_in *v4 = (struct sockaddr_in *)&self->address;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&self->address;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        self->address_length = sizeof(*v4);
    } else if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        self->address_length = sizeof(*v6);
    } else {
        PyErr_Format(PyExc_ValueError, "Sender: '%s' is not a numeric IPv4 or IPv6 address", host);
        return -1;
    }
    int copy = dup(fd);
    if (copy < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    if (self->fd >= 0)
        close(self->fd);
    self->fd = copy;
    self->protect = (protect_fn)(uintptr_t)protect;
    self->protect_rtcp = (protect_fn)(uintptr_t)protect_rtcp;
    self->ctx = (void *)(uintptr_t)ctx;
    self->rtp_limit = rtp_limit;
    self->rtcp_limit = rtcp_limit;
    return 0;
}

static PyObject *
Sender_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    Sender *self = (Sender *)type->tp_alloc(type, 0);
    if (self != NULL)
        self->fd = -1;
    return (PyObject *)self;
}

static void
Sender_dealloc(Sender *self)
{
    if (self->fd >= 0)
        close(self->fd);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* head and tail (may be NULL): the packet is their concatenation (an RTP copy's own header
   and the publisher's payload, joined here rather than in a bytes object made for it) */
static PyObject *
send_with(Sender *self, PyObject *head, PyObject *tail, protect_fn protect, Py_ssize_t limit)
{
    char *bytes, *more = NULL;
    Py_ssize_t size, more_size = 0;
    if (PyBytes_AsStringAndSize(head, &bytes, &size) < 0)
        return NULL;
    if (tail != NULL && PyBytes_AsStringAndSize(tail, &more, &more_size) < 0)
        return NULL;
    if (self->fd < 0) {
        PyErr_SetString(PyExc_ValueError, "Sender: not initialised");
        return NULL;
    }
    if (size + more_size > limit) {
        PyErr_Format(PyExc_ValueError, "Sender: a packet of %zd bytes (at most %zd)",
                     size + more_size, limit);
        return NULL;
    }
    memcpy(buffer, bytes, (size_t)size);
    if (more_size)
        memcpy(buffer + size, more, (size_t)more_size);
    size += more_size;
    int length = (int)size;
    if (protect(self->ctx, buffer, &length) != 0 || length <= 0)
        return PyLong_FromLong(0);
    ssize_t sent = sendto(self->fd, buffer, (size_t)length, 0,
                          (struct sockaddr *)&self->address, self->address_length);
    if (sent < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS) {
            pending_length = length;
            return PyLong_FromLong(-length);
        }
        self->errors++;
    } else {
        self->sent++;
    }
    return PyLong_FromLong(length);
}

static PyObject *
Sender_send(Sender *self, PyObject *data)
{
    return send_with(self, data, NULL, self->protect, self->rtp_limit);
}

static PyObject *
Sender_send_parts(Sender *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "send_parts() takes a header and a payload (%zd given)",
                     nargs);
        return NULL;
    }
    return send_with(self, args[0], args[1], self->protect, self->rtp_limit);
}

static PyObject *
Sender_send_rtcp(Sender *self, PyObject *data)
{
    return send_with(self, data, NULL, self->protect_rtcp, self->rtcp_limit);
}

static PyObject *
Sender_pending(Sender *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *datagram = PyBytes_FromStringAndSize(buffer, pending_length);
    pending_length = 0;
    return datagram;
}

static PyObject *
Sender_counts(Sender *self, PyObject *Py_UNUSED(ignored))
{
    return Py_BuildValue("(KK)", self->sent, self->errors);
}

static PyMethodDef Sender_methods[] = {
    {"send", (PyCFunction)Sender_send, METH_O,
     "Protect an RTP packet and send it: its protected length n; -n if the socket would "
     "block (pending()); 0 if libsrtp refused it (nothing sent)."},
    {"send_parts", (PyCFunction)(void (*)(void))Sender_send_parts, METH_FASTCALL,
     "send() of the RTP packet header + payload, joined in the send buffer."},
    {"send_rtcp", (PyCFunction)Sender_send_rtcp, METH_O, "send() for an RTCP compound packet."},
    {"pending", (PyCFunction)Sender_pending, METH_NOARGS,
     "The protected datagram the last send() that returned -n left (once)."},
    {"counts", (PyCFunction)Sender_counts, METH_NOARGS,
     "(datagrams sent, datagrams the kernel refused) by this sender."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject SenderType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "edge.sfu._sendpath.Sender",
    .tp_doc = PyDoc_STR("SRTP-protect and send the packets of one route (see the module)."),
    .tp_basicsize = sizeof(Sender),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = Sender_new,
    .tp_init = (initproc)Sender_init,
    .tp_dealloc = (destructor)Sender_dealloc,
    .tp_methods = Sender_methods,
};

typedef struct {
    PyObject_HEAD
    protect_fn unprotect;
    protect_fn unprotect_rtcp;
    void *ctx;
} Unprotector;

static int
Unprotector_init(Unprotector *self, PyObject *args, PyObject *kwds)
{
    static char *keywords[] = {"unprotect", "unprotect_rtcp", "ctx", NULL};
    unsigned long long unprotect, unprotect_rtcp, ctx;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "KKK", keywords, &unprotect, &unprotect_rtcp,
                                     &ctx))
        return -1;
    if (!unprotect || !unprotect_rtcp || !ctx) {
        PyErr_SetString(PyExc_ValueError, "Unprotector: a null libsrtp function or context");
        return -1;
    }
    self->unprotect = (protect_fn)(uintptr_t)unprotect;
    self->unprotect_rtcp = (protect_fn)(uintptr_t)unprotect_rtcp;
    self->ctx = (void *)(uintptr_t)ctx;
    return 0;
}

static PyObject *
unprotect_with(Unprotector *self, PyObject *data, protect_fn unprotect)
{
    char *bytes;
    Py_ssize_t size;
    if (PyBytes_AsStringAndSize(data, &bytes, &size) < 0)
        return NULL;
    if (self->ctx == NULL) {
        PyErr_SetString(PyExc_ValueError, "Unprotector: not initialised");
        return NULL;
    }
    if (size > BUFFER_SIZE) {
        PyErr_Format(PyExc_ValueError, "Unprotector: a datagram of %zd bytes (at most %d)", size,
                     BUFFER_SIZE);
        return NULL;
    }
    memcpy(inbound, bytes, (size_t)size);
    int length = (int)size;
    if (unprotect(self->ctx, inbound, &length) != 0 || length < 0 || length > size)
        Py_RETURN_NONE;
    return PyBytes_FromStringAndSize(inbound, length);
}

static PyObject *
Unprotector_rtp(Unprotector *self, PyObject *data)
{
    return unprotect_with(self, data, self->unprotect);
}

static PyObject *
Unprotector_rtcp(Unprotector *self, PyObject *data)
{
    return unprotect_with(self, data, self->unprotect_rtcp);
}

static PyMethodDef Unprotector_methods[] = {
    {"rtp", (PyCFunction)Unprotector_rtp, METH_O,
     "Unprotect an SRTP datagram: the plain RTP packet, or None if libsrtp refused it."},
    {"rtcp", (PyCFunction)Unprotector_rtcp, METH_O, "rtp() for an SRTCP datagram."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject UnprotectorType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "edge.sfu._sendpath.Unprotector",
    .tp_doc = PyDoc_STR("SRTP-unprotect the datagrams of one inbound session (see the module)."),
    .tp_basicsize = sizeof(Unprotector),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Unprotector_init,
    .tp_methods = Unprotector_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "edge.sfu._sendpath",
    .m_doc = "SRTP protect and sendto in one call for the SFU's fast egress; SRTP unprotect in "
             "one call for its fast ingress.",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__sendpath(void)
{
    if (PyType_Ready(&SenderType) < 0 || PyType_Ready(&UnprotectorType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&SenderType);
    if (PyModule_AddObject(m, "Sender", (PyObject *)&SenderType) < 0) {
        Py_DECREF(&SenderType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&UnprotectorType);
    if (PyModule_AddObject(m, "Unprotector", (PyObject *)&UnprotectorType) < 0) {
        Py_DECREF(&UnprotectorType);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "BUFFER_SIZE", BUFFER_SIZE) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
