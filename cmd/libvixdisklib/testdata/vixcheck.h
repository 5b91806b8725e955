/* vixcheck.h: CHECK for the test programs: a VixDiskLib call that fails
 * prints where, the call, its error number and the library's text, and
 * ends the program with status 1. */
#ifndef VIXCHECK_H
#define VIXCHECK_H

#include <stdio.h>
#include <stdlib.h>

#include "vixDiskLib.h"

#define CHECK(call)                                                        \
  do {                                                                     \
    VixError err_ = (call);                                                \
    if (VIX_FAILED(err_)) {                                                \
      char *msg_ = VixDiskLib_GetErrorText(err_, NULL);                    \
      fprintf(stderr, "%s:%d: %s: error %llu: %s\n", __FILE__, __LINE__,   \
              #call, (unsigned long long)err_, msg_);                      \
      VixDiskLib_FreeErrorText(msg_);                                      \
      exit(1);                                                             \
    }                                                                      \
  } while (0)

#endif
