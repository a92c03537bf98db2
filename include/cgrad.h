/* cgrad: a deep-learning runtime in C. Umbrella header. */
#ifndef CGRAD_H
#define CGRAD_H

#include "cgrad/common.h"
#include "cgrad/tensor.h"
#include "cgrad/ops.h"
#include "cgrad/autograd.h"
#include "cgrad/io.h"
#include "cgrad/data.h"
#include "cgrad/nn.h"
#include "cgrad/optim.h"
#include "cgrad/train.h"
#include "cgrad/cuda.h"

#endif
