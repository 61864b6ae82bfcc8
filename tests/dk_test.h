/*
 * A tiny test harness: assertion macros that survive NDEBUG and print both
 * operands, and a runner that prints "N passed, N failed".
 *
 *     static void test_thing(void) { DK_CHECK_EQ_INT(f(2), 4); }
 *     int main(int argc, char **argv) {
 *         static const dk_test_case cases[] = { DK_TEST(test_thing) };
 *         return dk_test_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
 *     }
 *
 * A check failure marks the current test as failed and returns from it.
 * `argv[1]`, when given, runs only the tests whose name contains it.
 */
#ifndef DK_TEST_H
#define DK_TEST_H

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "drivekit/drivekit.h"

typedef struct dk_test_case {
    const char *name;
    void (*fn)(void);
} dk_test_case;

#define DK_TEST(fn) { #fn, fn }

/* One flag shared by every file of a test binary (weak: defined in each
 * translation unit that includes this header, merged by the linker). */
__attribute__((weak)) int dk_test_failed_;

#define DK_FAIL_(...)                                                                \
    do {                                                                             \
        fprintf(stderr, "  %s:%d: ", __FILE__, __LINE__);                            \
        fprintf(stderr, __VA_ARGS__);                                                \
        fputc('\n', stderr);                                                         \
        dk_test_failed_ = 1;                                                         \
        return;                                                                      \
    } while (0)

#define DK_CHECK(cond)                                                               \
    do {                                                                             \
        if (!(cond)) DK_FAIL_("check failed: %s", #cond);                            \
    } while (0)

#define DK_CHECK_EQ_INT(a, b)                                                        \
    do {                                                                             \
        long long va_ = (long long)(a), vb_ = (long long)(b);                        \
        if (va_ != vb_) DK_FAIL_("%s == %s: %lld != %lld", #a, #b, va_, vb_);        \
    } while (0)

#define DK_CHECK_EQ_U64(a, b)                                                        \
    do {                                                                             \
        unsigned long long va_ = (unsigned long long)(a), vb_ = (unsigned long long)(b); \
        if (va_ != vb_) DK_FAIL_("%s == %s: 0x%llx != 0x%llx", #a, #b, va_, vb_);    \
    } while (0)

#define DK_CHECK_NEAR(a, b, tol)                                                     \
    do {                                                                             \
        double va_ = (double)(a), vb_ = (double)(b);                                 \
        if (!(fabs(va_ - vb_) <= (tol)))                                             \
            DK_FAIL_("%s ~= %s: %.9g vs %.9g (tol %g)", #a, #b, va_, vb_, (double)(tol)); \
    } while (0)

#define DK_CHECK_STR(a, b)                                                           \
    do {                                                                             \
        const char *va_ = (a), *vb_ = (b);                                           \
        if (!va_ || !vb_ || strcmp(va_, vb_) != 0)                                   \
            DK_FAIL_("%s == %s: \"%s\" != \"%s\"", #a, #b, va_ ? va_ : "(null)",     \
                     vb_ ? vb_ : "(null)");                                          \
    } while (0)

#define DK_CHECK_CONTAINS(hay, needle)                                               \
    do {                                                                             \
        const char *vh_ = (hay), *vn_ = (needle);                                    \
        if (!vh_ || !strstr(vh_, vn_))                                               \
            DK_FAIL_("\"%s\" does not contain \"%s\"", vh_ ? vh_ : "(null)", vn_);   \
    } while (0)

/* Expects a status; prints the error message when it differs. */
#define DK_CHECK_STATUS(expr, want)                                                  \
    do {                                                                             \
        int st_ = (expr), want_ = (want);                                            \
        if (st_ != want_)                                                            \
            DK_FAIL_("%s: got %d (%s), want %d (%s); message: %s", #expr, st_,       \
                     dk_status_str(st_), want_, dk_status_str(want_), dk_errmsg());  \
    } while (0)

#define DK_CHECK_OK(expr) DK_CHECK_STATUS(expr, DK_OK)

/* A scratch directory for files a test writes: $DK_TEST_TMP or /tmp. */
static inline const char *dk_test_tmpdir(void)
{
    const char *d = getenv("DK_TEST_TMP");
    if (!d || !*d) d = "/tmp";
    mkdir(d, 0755);
    return d;
}

static inline int dk_test_main(int argc, char **argv, const dk_test_case *cases, size_t n)
{
    int passed = 0, failed = 0;
    for (size_t i = 0; i < n; i++) {
        if (argc > 1 && !strstr(cases[i].name, argv[1])) continue;
        dk_test_failed_ = 0;
        cases[i].fn();
        if (dk_test_failed_) {
            failed++;
            fprintf(stderr, "FAIL %s\n", cases[i].name);
        } else {
            passed++;
            printf("ok   %s\n", cases[i].name);
        }
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}

#endif /* DK_TEST_H */
