/* The library's version, from the CG_VERSION_* lines of include/cgrad/common.h as they were
 * when it was compiled; a program compares them with the macros it was compiled with. */
#include "cgrad/common.h"

#define CG_STR_(x) #x
#define CG_STR(x) CG_STR_(x)

int cg_version(void) { return CG_VERSION; }

const char *cg_version_string(void) {
    return CG_STR(CG_VERSION_MAJOR) "." CG_STR(CG_VERSION_MINOR) "." CG_STR(CG_VERSION_PATCH);
}
