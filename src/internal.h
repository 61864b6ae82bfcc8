/*
 * Library-internal helpers shared by every module (never installed, never
 * included by users). Cross-file internal symbols use the dk__ prefix.
 */
#ifndef DRIVEKIT_INTERNAL_H
#define DRIVEKIT_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "drivekit/core.h"

/* Records "func(): message" as the calling thread's error and returns status.
 * The usual way to fail:
 *     return dk__error(DK_EINVALIDDATA, __func__, "%s: frame %d: bad pts", path, i);
 */
int dk__error(int status, const char *func, const char *fmt, ...) DK_PRINTF(3, 4);
int dk__verror(int status, const char *func, const char *fmt, va_list ap) DK_PRINTF(3, 0);

/* Re-raises the thread's current error from a parser's point of view: under
 * `func`, with the inner function's name dropped, and as DK_EINVALIDDATA
 * whatever the inner call said (a missing field, a wrong type, a number out of
 * range are all malformed input), except DK_ENOMEM. Returns the new status. */
int dk__reraise_invalid(int status, const char *func);
/* dk_json_load for a reader of JSON documents: the error is re-raised under
 * `func`, missing files and I/O errors (and DK_ENOMEM) keeping their status,
 * anything else (malformed JSON) DK_EINVALIDDATA. */
int dk__json_load_doc(const char *func, const char *path, struct dk_json **doc);
/* DK_EINVALIDDATA with "func(): name: path: message", path being the JSON
 * path of the offending value ("(root)" when NULL or empty): the error of a
 * reader of JSON documents (scenarios, actor tracks). */
int dk__json_invalid(const char *func, const char *name, const char *path, const char *fmt, ...)
    DK_PRINTF(4, 5);

/* Blocks held by the buffer cache (not counted as live by dk_alloc_live),
 * and freeing them all (dk_set_allocator does before switching). */
int64_t dk__buffer_cache_blocks(void);
void dk__buffer_cache_drop(void);

/* Copies the thread's current message into a handle's buffer (DK_ERRMSG_MAX
 * bytes) and returns status unchanged: `return dk__keep(st, h->errmsg);`. */
int dk__keep(int status, char *handle_errmsg);

/* Overflow-checked size arithmetic: return 0 on success, 1 on overflow. */
static inline int dk__mul_overflow(size_t a, size_t b, size_t *out)
{
    return __builtin_mul_overflow(a, b, out);
}
static inline int dk__add_overflow(size_t a, size_t b, size_t *out)
{
    return __builtin_add_overflow(a, b, out);
}

/* Path for messages: the last component is enough for the reader, but keep the
 * whole path so the message is unambiguous. Never NULL. */
static inline const char *dk__str(const char *s)
{
    return s ? s : "(null)";
}

/* 1 when two stat results name the same, unchanged file: same inode, size
 * and modification time (a rewrite, a replacement by rename or a touch all
 * differ). */
static inline int dk__same_file(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

#define DK__UNUSED(x) ((void)(x))

/* Programmer-error check: aborts with file and line. Never for bad input. */
#define DK__ASSERT(cond)                                                          \
    do {                                                                          \
        if (!(cond)) dk__assert_fail(#cond, __FILE__, __LINE__);                  \
    } while (0)
_Noreturn void dk__assert_fail(const char *expr, const char *file, int line);

#endif /* DRIVEKIT_INTERNAL_H */
