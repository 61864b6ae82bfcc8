/*
 * Status codes and error messages.
 *
 * Every failing call records "function(): what, where" in a thread-local
 * buffer, so handle-less functions can report context without a handle and
 * without locks (the TurboJPEG/SQLite pattern). Handles copy the message into
 * their own buffer with dk__keep() so it survives later calls on the thread.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "drivekit/drivekit.h"
#include "internal.h"

static _Thread_local char tls_errmsg[DK_ERRMSG_MAX];

int dk_version(void)
{
    return DK_VERSION_HEX;
}

const char *dk_version_str(void)
{
    return DK_VERSION_STRING;
}

const char *dk_status_str(int status)
{
    switch (status) {
    case DK_OK: return "DK_OK: success";
    case DK_EINVAL: return "DK_EINVAL: invalid argument";
    case DK_ENOMEM: return "DK_ENOMEM: out of memory";
    case DK_EIO: return "DK_EIO: input/output error";
    case DK_ENOENT: return "DK_ENOENT: not found";
    case DK_EINVALIDDATA: return "DK_EINVALIDDATA: invalid or corrupt data";
    case DK_EUNSUPPORTED: return "DK_EUNSUPPORTED: unsupported";
    case DK_ERANGE: return "DK_ERANGE: out of range";
    case DK_EOVERFLOW: return "DK_EOVERFLOW: size overflow";
    case DK_ESTATE: return "DK_ESTATE: invalid state";
    case DK_EAGAIN: return "DK_EAGAIN: try again";
    case DK_EOF: return "DK_EOF: end of stream";
    case DK_ECANCELED: return "DK_ECANCELED: cancelled";
    case DK_ESYS: return "DK_ESYS: system resource failure";
    case DK_EINTERNAL: return "DK_EINTERNAL: internal error";
    default: return "unknown status";
    }
}

const char *dk_errmsg(void)
{
    return tls_errmsg;
}

void dk_errmsg_clear(void)
{
    tls_errmsg[0] = '\0';
}

int dk__verror(int status, const char *func, const char *fmt, va_list ap)
{
    int n = snprintf(tls_errmsg, sizeof tls_errmsg, "%s(): ", func ? func : "drivekit");
    if (n < 0 || (size_t)n >= sizeof tls_errmsg) n = 0;
    vsnprintf(tls_errmsg + n, sizeof tls_errmsg - (size_t)n, fmt, ap);
    return status;
}

int dk__error(int status, const char *func, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    dk__verror(status, func, fmt, ap);
    va_end(ap);
    return status;
}

/* The calling thread's message re-raised as `status` under func, without the
 * inner function's name. */
static int reraise(int status, const char *func)
{
    char msg[DK_ERRMSG_MAX];
    snprintf(msg, sizeof msg, "%s", dk_errmsg());
    const char *m = strstr(msg, "(): ");
    m = m ? m + 4 : msg;
    return dk__error(status, func, "%s", m);
}

int dk__reraise_invalid(int status, const char *func)
{
    return reraise(status == DK_ENOMEM ? DK_ENOMEM : DK_EINVALIDDATA, func);
}

int dk__json_load_doc(const char *func, const char *path, dk_json **doc)
{
    int st = dk_json_load(path, doc);
    if (!st) return DK_OK;
    return st == DK_ENOENT || st == DK_EIO ? reraise(st, func) : dk__reraise_invalid(st, func);
}

int dk__keep(int status, char *handle_errmsg)
{
    if (handle_errmsg && status < 0) {
        size_t n = strlen(tls_errmsg);
        if (n >= DK_ERRMSG_MAX) n = DK_ERRMSG_MAX - 1;
        memcpy(handle_errmsg, tls_errmsg, n);
        handle_errmsg[n] = '\0';
    }
    return status;
}

_Noreturn void dk__assert_fail(const char *expr, const char *file, int line)
{
    dk_log(DK_LOG_ERROR, "internal assertion failed: %s (%s:%d)", expr, file, line);
    abort();
}

int dk__json_invalid(const char *func, const char *name, const char *path, const char *fmt, ...)
{
    char msg[DK_ERRMSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return dk__error(DK_EINVALIDDATA, func, "%s: %s: %s", name, path && path[0] ? path : "(root)",
                     msg);
}
