/* Instantiates a typed kernel template (a .inc file written in terms of T and FN(name))
 * for f32 and f64. Usage:
 *   #define CG_CPU_TEMPLATE "softmax_cpu.inc"
 *   #include "instantiate.h"
 * Deliberately no include guard: each kernel file includes it once for its own template. */
#ifndef CG_CPU_TEMPLATE
#error "define CG_CPU_TEMPLATE before including instantiate.h"
#endif

#define T float
#define FN(name) CG_CPU_CAT(name, f32)
#include CG_CPU_TEMPLATE
#undef T
#undef FN

#define T double
#define FN(name) CG_CPU_CAT(name, f64)
#include CG_CPU_TEMPLATE
#undef T
#undef FN

#undef CG_CPU_TEMPLATE
