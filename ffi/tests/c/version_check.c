/* The header's version macros agree with the loaded library, and AC_API declarations compile
 * in strict C99. Prints "version ok" on success; exits non-zero naming the mismatch. */
#include <agentcompress.h>
#include <stdio.h>
#include <string.h>

#if !defined(AC_VERSION_MAJOR) || !defined(AC_VERSION_MINOR) || !defined(AC_VERSION_PATCH)
#error "agentcompress.h must define AC_VERSION_MAJOR, AC_VERSION_MINOR and AC_VERSION_PATCH"
#endif
#ifndef AC_API
#error "agentcompress.h must define AC_API"
#endif

int main(void) {
  char want[32];
  snprintf(want, sizeof want, "%d.%d.%d", AC_VERSION_MAJOR, AC_VERSION_MINOR, AC_VERSION_PATCH);
  if (strcmp(want, ac_version()) != 0) {
    printf("header says %s, library says %s\n", want, ac_version());
    return 1;
  }
  if (ac_version_number() != AC_VERSION) {
    printf("header AC_VERSION %d, library ac_version_number() %u\n", AC_VERSION,
           (unsigned)ac_version_number());
    return 1;
  }
  printf("version ok\n");
  return 0;
}
